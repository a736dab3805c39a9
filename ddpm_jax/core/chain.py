"""The discrete DDPM chain: forward process, posterior, p(x_{t−1} | x_t) and the VLB terms.

Every function is pure and takes the Schedule plus integer timesteps t (shape [B]) into it;
per-timestep coefficients are broadcast over the trailing data dimensions. Network outputs
become predictions (x̂_0, ε̂) in core/denoiser.py, the one place for those conversions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ddpm_jax.core.broadcast import per_example
from ddpm_jax.core.schedules import Schedule

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")


def check_types(mean_type: str, var_type: str) -> None:
  """Rejects an unknown prediction or variance type before anything is traced."""
  if mean_type not in MEAN_TYPES:
    raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {MEAN_TYPES}.")
  if var_type not in VAR_TYPES:
    raise ValueError(f"Unknown var_type {var_type!r}; use one of {VAR_TYPES}.")


def learns_variance(var_type: str) -> bool:
  """Whether the network also outputs the variance (2C channels: mean part, variance part)."""
  return var_type in ("learned", "learned_range")


def extract(coef: jnp.ndarray, t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """coef[t] reshaped to broadcast against x of shape [B, ...]."""
  return per_example(coef[t], x).astype(x.dtype)


# ---------------------------------------------------------------- forward process

def q_mean_variance(s: Schedule, x0, t):
  """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I): returns (mean, variance, log variance)."""
  return (extract(s.sqrt_alpha_bars, t, x0) * x0,
          extract(1 - s.alpha_bars, t, x0),
          extract(s.log_one_minus_alpha_bars, t, x0))


def q_sample(s: Schedule, x0, t, noise):
  """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
  return extract(s.sqrt_alpha_bars, t, x0) * x0 + extract(s.sqrt_one_minus_alpha_bars, t, x0) * noise


def q_posterior(s: Schedule, x0, x_t, t):
  """q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I): returns (mean, variance, clipped log variance).

  μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t.
  """
  mean = extract(s.posterior_mean_coef1, t, x_t) * x0 + extract(s.posterior_mean_coef2, t, x_t) * x_t
  return (mean, extract(s.posterior_variance, t, x_t),
          extract(s.posterior_log_variance_clipped, t, x_t))


def target(s: Schedule, mean_type: str, x0, t, eps):
  """What a network of the given mean type regresses: ε, x_0 or v = √ᾱ_t ε − √(1 − ᾱ_t) x_0
  (Salimans & Ho 2022)."""
  if mean_type == "eps":
    return eps
  if mean_type == "x0":
    return x0
  if mean_type == "v":
    return extract(s.sqrt_alpha_bars, t, x0) * eps - extract(s.sqrt_one_minus_alpha_bars, t, x0) * x0
  raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {MEAN_TYPES}.")


# ---------------------------------------------------------------- reverse process

class Reverse(NamedTuple):
  """p_θ(x_{t−1} | x_t) = N(mean, e^{log_variance})."""
  mean: jnp.ndarray
  log_variance: jnp.ndarray


def split_output(output, var_type: str):
  """A learned-variance network emits 2C channels (last axis): (mean part, variance part)."""
  if var_type not in VAR_TYPES:
    raise ValueError(f"Unknown var_type {var_type!r}; use one of {VAR_TYPES}.")
  if learns_variance(var_type):
    return tuple(jnp.split(output, 2, axis=-1))
  return output, None


def p_mean_variance(s: Schedule, x0, var_out, x_t, t, var_type: str = "fixed_small") -> Reverse:
  """p_θ(x_{t−1} | x_t) = N(μ̃_t(x̂_0, x_t), Σ) for the prediction x̂_0 (core/denoiser.py).

  Σ by var_type: fixed_small β̃_t; fixed_large β_t, with β̃_1 at t = 0 (DDPM/improved-DDPM
  convention, so the decoder keeps a finite variance); learned: var_out is log Σ;
  learned_range: var_out v ∈ [−1, 1] and log Σ = ((v+1)/2) log β_t + (1 − (v+1)/2) log β̃_t.
  """
  if var_type == "fixed_small":
    log_variance = extract(s.posterior_log_variance_clipped, t, x_t)
  elif var_type == "fixed_large":
    large = jnp.concatenate([s.posterior_variance[1:2], s.betas[1:]])
    log_variance = jnp.log(extract(large, t, x_t))
  elif var_type == "learned":
    log_variance = var_out
  elif var_type == "learned_range":
    frac = (var_out + 1) / 2
    log_variance = (frac * extract(jnp.log(s.betas), t, x_t)
                    + (1 - frac) * extract(s.posterior_log_variance_clipped, t, x_t))
  else:
    raise ValueError(f"Unknown var_type {var_type!r}; use one of {VAR_TYPES}.")
  mean, _, _ = q_posterior(s, x0, x_t, t)
  return Reverse(mean, jnp.broadcast_to(log_variance, x_t.shape))


# ---------------------------------------------------------------- likelihood terms

def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(μ₁, e^{l₁}) ‖ N(μ₂, e^{l₂})) elementwise, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2)**2 * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x):
  """Φ(x) by the tanh approximation used by the DDPM code (max error ≈ 3e-4)."""
  return 0.5 * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
  """log P(x) for x on the 256-level grid of [−1, 1] under N(means, e^{2 log_scales}).

  Bin edges are x ± 1/255; the outermost bins extend to ±∞ (DDPM decoder L_0).
  """
  centered = x - means
  inv_stdv = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_probs = jnp.where(
      x < -0.999, log_cdf_plus,
      jnp.where(x > 0.999, log_one_minus_cdf_min, jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))))
  return log_probs


def mean_flat(x):
  """Mean over every axis but the first."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def prior_bpd(s: Schedule, x0):
  """KL(q(x_T | x_0) ‖ N(0, I)) in bits/dim, per example."""
  t = jnp.full(x0.shape[:1], s.num_timesteps - 1, dtype=jnp.int32)
  mean, _, log_var = q_mean_variance(s, x0, t)
  return mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / np.log(2.0)


def vlb_term_bpd(s: Schedule, p: Reverse, x0, x_t, t):
  """L_{t} of the VLB in bits/dim per example: KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)) for
  t > 0 and the decoder −log p(x_0 | x_1) (discretized Gaussian) for t = 0."""
  true_mean, _, true_log_var = q_posterior(s, x0, x_t, t)
  kl = mean_flat(normal_kl(true_mean, true_log_var, p.mean, p.log_variance)) / np.log(2.0)
  decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(
      x0, p.mean, 0.5 * p.log_variance)) / np.log(2.0)
  return jnp.where(t == 0, decoder_nll, kl)


def timesteps_like(x, t) -> jnp.ndarray:
  """A [B] int32 vector of timestep t for a batch x."""
  return jnp.full(x.shape[:1], t, dtype=jnp.int32)

