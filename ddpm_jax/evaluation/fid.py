"""FID and KID from Inception features (numpy, float64).

  FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)                      (Heusel et al. 2017)
  Tr (Σ₁Σ₂)^½ = Σ √λ_i(Σ₁^½ Σ₂ Σ₁^½), a symmetric PSD eigenproblem, so no complex sqrtm
  KID = unbiased MMD² with k(x, y) = (xᵀy/d + 1)³, averaged over random subsets (Bińkowski
        et al. 2018), reported with its standard deviation over the subsets
"""

from __future__ import annotations

import numpy as np


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """(μ, Σ) of features [N, d] in float64 (Σ with the N − 1 normalization)."""
  f = np.asarray(features, np.float64)
  return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(a):
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½ for PSD covariances."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  root = _sqrtm_psd(s1)
  m = root @ s2 @ root
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid_from_features(f1, f2) -> float:
  return frechet_distance(*statistics(f1), *statistics(f2))


def kernel_inception_distance(f1, f2, *, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
  """(mean, std) over subsets of the unbiased MMD² with the cubic polynomial kernel."""
  x, y = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  n = min(len(x), len(y), subset_size)
  d = x.shape[1]
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    a = x[rng.choice(len(x), n, replace=False)]
    b = y[rng.choice(len(y), n, replace=False)]
    kxx, kyy, kxy = [(u @ v.T / d + 1)**3 for u, v in ((a, a), (b, b), (a, b))]
    mmd = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
           - 2 * kxy.mean())
    values.append(mmd)
  return float(np.mean(values)), float(np.std(values))
