"""Denoising score matching (Vincent 2011; Song & Ermon 2019; Song et al. 2021).

Each takes a score callable score_fn(x, t or σ) (a Denoiser's score or score_at_sigma,
core/denoiser.py) and per-example keys; returns (loss, metrics).
  continuous: E_t E_z λ(t) ‖s(x_t, t) + z/σ(t)‖² with x_t = α(t) x_0 + σ(t) z, t ~ U(ε, T);
              λ = σ² (default) or the likelihood weighting λ = g² (Song et al. 2021b), whose
              importance-sampled form draws t ∝ g²/σ² (VP, VE) and weighs by Z σ²
  ncsn:       E_i E_z ½ ‖σ_i s(x̃, σ_i) + z‖², x̃ = x_0 + σ_i z, i uniform over the levels
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import sde as sde_lib
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.objectives import noise

REDUCTIONS = ("mean", "sum")


def _reduce(v, how: str):
  axes = tuple(range(1, v.ndim))
  if how == "mean":
    return jnp.mean(v, axis=axes)
  if how == "sum":
    return jnp.sum(v, axis=axes)
  raise ValueError(f"Unknown reduction {how!r}; use one of {REDUCTIONS}.")


def importance_t(sde, u, train_eps: float):
  """Inverse CDF of p(t) ∝ g(t)²/σ(t)² on [ε, T] (ε = train_eps) at u ∈ [0, 1), and its
  normalizer Z.

  VP: g²/σ² = d/dt log(e^{B(t)} − 1) with B(t) = β_min t + ½ (β_max − β_min) t²;
  VE: g²/σ² = 2 log(σ_max/σ_min) is constant, so t is uniform.
  """
  if isinstance(sde, sde_lib.VESDE):
    rate = 2 * np.log(sde.sigma_max / sde.sigma_min)
    return train_eps + u * (sde.T - train_eps), rate * (sde.T - train_eps)
  if type(sde) is not sde_lib.VPSDE:
    raise ValueError("Importance sampling of t is implemented for the VP and VE SDEs; set "
                     "importance_sampling=False for sub-VP.")
  d = sde.beta_max - sde.beta_min
  lo, hi = (np.log(np.expm1(sde.integrated_beta(t))) for t in (train_eps, sde.T))
  b = jnp.log1p(jnp.exp(lo + u * (hi - lo)))
  t = (-sde.beta_min + jnp.sqrt(sde.beta_min**2 + 2 * d * b)) / d
  return t, hi - lo


def dsm_loss(score_fn: Callable, sde, x0, keys, *, train_eps: float = 1e-5,
             likelihood_weighting: bool = False, importance_sampling: bool = False,
             reduce: str = "mean"):
  """Continuous-time DSM on a batch x0 with example i's t ∈ [train_eps, T] and z from
  keys[i]."""
  t_keys, z_keys = noise.split(keys)
  u = noise.uniform(t_keys)
  if importance_sampling:
    if not likelihood_weighting:
      raise ValueError("importance_sampling draws t for the likelihood weighting; set "
                       "likelihood_weighting=True too.")
    t, z_norm = importance_t(sde, u, train_eps)
  else:
    t = train_eps + u * (sde.T - train_eps)
  z = noise.normal(z_keys, x0.shape[1:], x0.dtype)
  mean, std = sde_lib.marginal_prob(sde, x0, t)
  s = per_example(std, x0)
  score = score_fn(mean + s * z, t).astype(jnp.float32)
  if importance_sampling:
    per = z_norm * _reduce((score * s + z)**2, reduce)
  elif likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x0), t)[1]**2
    per = _reduce((score + z / s)**2, reduce) * g2
  else:
    per = _reduce((score * s + z)**2, reduce)
  loss = jnp.mean(per)
  return loss, {"loss": loss, "per_example_loss": per, "t": t}


def ncsn_loss(score_fn: Callable, sigmas, x0, keys, *, reduce: str = "sum"):
  """NCSN's DSM over the levels `sigmas` (λ(σ) = σ²): ½ ‖σ s(x̃, σ) + z‖², mean over the batch."""
  sigmas = jnp.asarray(sigmas, jnp.float32)
  i_keys, z_keys = noise.split(keys)
  i = jax.vmap(lambda k: jax.random.randint(k, (), 0, sigmas.shape[0]))(i_keys)
  z = noise.normal(z_keys, x0.shape[1:], x0.dtype)
  sigma = sigmas[i]
  s = per_example(sigma, x0)
  score = score_fn(x0 + s * z, sigma).astype(jnp.float32)
  per = 0.5 * _reduce((score * s + z)**2, reduce)
  loss = jnp.mean(per)
  return loss, {"loss": loss, "per_example_loss": per, "t": i}
