"""EDM's loss (Karras et al. 2022, arXiv:2206.00364, Table 1): the preconditioned denoiser
D(x; σ) = c_skip x + c_out F_θ(c_in x, c_noise) (core/denoiser.py, objective "edm") trained with

  L = E_{σ, x_0, n} λ(σ) ‖D(x_0 + σ n; σ) − x_0‖²,  λ = (σ² + σ_d²) / (σ σ_d)²,
  ln σ ~ N(P_mean, P_std²),

where λ c_out² = 1: the loss on F is unweighted, and for data of standard deviation σ_d the
network's input and its target (x_0 − c_skip x) / c_out have unit variance at every σ.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ddpm_jax.core.broadcast import per_example
from ddpm_jax.objectives import noise


def loss_weight(sigma, sigma_data: float):
  """λ(σ) = (σ² + σ_d²) / (σ σ_d)² = 1 / c_out²."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2


def edm_loss(denoise: Callable, x0, keys, *, sigma_data: float = 0.5, p_mean: float = -1.2,
             p_std: float = 1.2):
  """The EDM loss on a batch x0 (mean over pixels and examples) of denoise(x, σ) = D(x; σ)
  (a Denoiser's predict_at_sigma(x, σ).x0), example i's σ and n from keys[i]; metrics hold
  "per_example_loss" and "t" (here ln σ)."""
  sigma_keys, noise_keys = noise.split(keys)
  log_sigma = p_mean + p_std * jax.vmap(lambda k: jax.random.normal(k, ()))(sigma_keys)
  sigma = jnp.exp(log_sigma)
  n = noise.normal(noise_keys, x0.shape[1:], x0.dtype)
  denoised = denoise(x0 + per_example(sigma, x0) * n, sigma)
  per = loss_weight(sigma, sigma_data) * jnp.mean(
      (denoised.astype(jnp.float32) - x0)**2, axis=tuple(range(1, x0.ndim)))
  loss = jnp.mean(per)
  return loss, {"loss": loss, "per_example_loss": per, "t": log_sigma}
