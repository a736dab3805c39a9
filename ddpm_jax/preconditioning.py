"""EDM's preconditioned denoiser and its loss (Karras et al. 2022, arXiv:2206.00364, Table 1).

A network F_θ is wrapped as the denoiser of x = x_0 + σ n,

  D(x; σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ)),
  c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),
  c_noise = ¼ ln σ,

so that for data of standard deviation σ_d the network's input and its target
(x_0 − c_skip x) / c_out both have unit variance at every σ. It is trained with

  L = E_{σ, x_0, n} λ(σ) ‖D(x_0 + σ n; σ) − x_0‖²,  λ = (σ² + σ_d²) / (σ σ_d)²,  ln σ ~ N(P_mean, P_std²),

where λ c_out² = 1: the loss on F is unweighted. The denoiser is the data prediction of the
VE SDE with σ(t) between EDM's σ_min and σ_max (builders.build_sde), whose score is
s(x, t) = (D(x; σ(t)) − x) / σ(t)², so every score sampler here samples it.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from ddpm_jax.broadcast import per_example


def coefficients(sigma, sigma_data: float):
  """(c_skip, c_out, c_in, c_noise) at noise levels σ [B]."""
  total = sigma**2 + sigma_data**2
  return (sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1 / jnp.sqrt(total),
          0.25 * jnp.log(sigma))


def loss_weight(sigma, sigma_data: float):
  """λ(σ) = (σ² + σ_d²) / (σ σ_d)² = 1 / c_out²."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2


def denoise(net: Callable, x, sigma, *cond, sigma_data: float):
  """D(x; σ) of the network net(x, c_noise[, cond]) for examples x with noise levels σ [B]."""
  c_skip, c_out, c_in, c_noise = coefficients(sigma, sigma_data)
  out = net(per_example(c_in, x) * x, c_noise, *cond).astype(x.dtype)
  return per_example(c_skip, x) * x + per_example(c_out, x) * out


def edm_loss(net: Callable, x0, keys, *, sigma_data: float = 0.5, p_mean: float = -1.2,
             p_std: float = 1.2):
  """The EDM loss on a batch x0 (mean over pixels and examples), example i's σ and n from
  keys[i]; metrics hold "per_example_loss" and "t" (here ln σ)."""
  sigma_keys, noise_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  log_sigma = p_mean + p_std * jax.vmap(lambda k: jax.random.normal(k, ()))(sigma_keys)
  sigma = jnp.exp(log_sigma)
  noise = jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype))(noise_keys)
  denoised = denoise(net, x0 + per_example(sigma, x0) * noise, sigma, sigma_data=sigma_data)
  per = loss_weight(sigma, sigma_data) * jnp.mean(
      (denoised.astype(jnp.float32) - x0)**2, axis=tuple(range(1, x0.ndim)))
  loss = jnp.mean(per)
  return loss, {"loss": loss, "per_example_loss": per, "t": log_sigma}


def score_fn(net: Callable, sde, sigma_data: float) -> jax.tree_util.Partial:
  """score(x, t[, cond]) = (D(x; σ(t)) − x) / σ(t)² on a VE SDE; the network is a child of
  the returned Partial, so its bound arrays stay arguments of a compiled sampler."""
  return jax.tree_util.Partial(functools.partial(_score, sde=sde, sigma_data=sigma_data), net)


def _score(net, x, t, *cond, sde, sigma_data):
  sigma = sde.marginal_coef(t)[1]
  s = per_example(sigma, x)
  return (denoise(net, x, sigma, *cond, sigma_data=sigma_data) - x) / s**2
