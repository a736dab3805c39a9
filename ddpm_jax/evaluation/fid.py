"""FID and KID from Inception features (numpy, float64).

  FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)                      (Heusel et al. 2017)
  Tr (Σ₁Σ₂)^½ = Σ √λ_i(Σ₁^½ Σ₂ Σ₁^½), a symmetric PSD eigenproblem, so no complex sqrtm
  KID = unbiased MMD² with k(x, y) = (xᵀy/d + 1)³, averaged over random subsets (Bińkowski
        et al. 2018), reported with its standard deviation over the subsets
  IS  = exp E_x KL(p(y|x) ‖ p(y)), p(y) the split's mean of p(y|x) = softmax(logits), as
        mean ± std over equal splits (Salimans et al. 2016; 10 splits)
  precision = P_fake[∃ real r: ‖f − r‖ ≤ ρ_k(r)], recall = P_real[∃ fake f: ‖r − f‖ ≤ ρ_k(f)]
        with ρ_k the distance to the k-th nearest neighbour in the point's own set
        (k-NN manifolds, Kynkäänniemi et al. 2019; k = 3)
"""

from __future__ import annotations

import numpy as np

from ddpm_jax.infra import files


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
  w = np.linalg.eigvalsh((m + m.T) / 2)
  # Eigenvalues below the rounding floor (d·ε·λ_max) are zeros of a rank-deficient Σ₁Σ₂
  # (N < d features); their √noise would otherwise add up to a spurious Tr (Σ₁Σ₂)^½.
  w = np.where(w > len(w) * np.finfo(np.float64).eps * max(w.max(), 0.0), w, 0.0)
  tr_sqrt = np.sum(np.sqrt(w))
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` equal parts of exp E KL(p(y|x) ‖ p(y)) (float64)."""
  z = np.asarray(logits, np.float64)
  if len(z) < splits:
    raise ValueError(f"The Inception Score of {len(z)} samples in {splits} splits: use at "
                     f"least as many samples as fid.is_splits.")
  log_p = z - z.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  scores = []
  for part in np.array_split(log_p, splits):
    log_marginal = np.log(np.exp(part).mean(0))
    scores.append(np.exp(np.mean(np.sum(np.exp(part) * (part - log_marginal), 1))))
  return float(np.mean(scores)), float(np.std(scores))


def save_statistics(path: str, mu, sigma) -> str:
  """(μ, Σ) as the FID tools publish them: an .npz with float64 `mu` [d] and `sigma` [d, d]
  (pytorch-fid, TTUR, EDM's fid.py)."""
  return files.save_npz(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))


def load_reference(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """(μ, Σ, features or None) of a published reference: an .npz with `mu` and `sigma`
  (pytorch-fid, TTUR, EDM's cifar10-32x32.npz) or with the `pool_3` features themselves
  (score_sde's cifar10_stats.npz). Read with allow_pickle=False."""
  try:
    arrays = files.load_npz(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"No reference statistics {path!r}; check fid.reference_stats.") from None
  except ValueError as e:
    raise ValueError(f"fid.reference_stats: {e}; it takes an .npz with mu and sigma or "
                     f"pool_3.") from None
  if "mu" in arrays and "sigma" in arrays:
    mu, sigma = np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64)
    features = None
  elif "pool_3" in arrays:
    features = np.asarray(arrays["pool_3"], np.float64).reshape(len(arrays["pool_3"]), -1)
    mu, sigma = statistics(features)
  else:
    raise ValueError(f"{path} holds {sorted(arrays)}: fid.reference_stats takes an .npz with "
                     f"mu and sigma (pytorch-fid, EDM) or pool_3 features (score_sde).")
  if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
    raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not the statistics "
                     f"of one feature vector (d,) and (d, d).")
  return mu, sigma, features


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


def _sq_dists(a, b):
  """‖a_i − b_j‖² [len(a), len(b)] via ‖a‖² + ‖b‖² − 2 a·b, clipped at 0."""
  d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
  return np.maximum(d2, 0.0)


def _kth_neighbour_sq_radii(x, k: int, chunk: int):
  out = np.empty(len(x))
  for i in range(0, len(x), chunk):  # column 0 of the sorted row is the point itself
    out[i:i + chunk] = np.partition(_sq_dists(x[i:i + chunk], x), k, axis=1)[:, k]
  return out


def _fraction_inside(queries, centres, sq_radii, chunk: int) -> float:
  inside = [(_sq_dists(queries[i:i + chunk], centres) <= sq_radii[None, :]).any(1)
            for i in range(0, len(queries), chunk)]
  return float(np.concatenate(inside).mean())


def precision_recall(real, fake, *, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
  """(precision, recall) of fake features against real ones by k-NN manifolds (float64)."""
  r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if min(len(r), len(f)) <= k:
    raise ValueError(f"precision/recall needs more than k={k} features per set.")
  return (_fraction_inside(f, r, _kth_neighbour_sq_radii(r, k, chunk), chunk),
          _fraction_inside(r, f, _kth_neighbour_sq_radii(f, k, chunk), chunk))
