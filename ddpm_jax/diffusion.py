"""Discrete-time DDPM math: forward process, posterior, prediction conversions, p(x_{t-1}|x_t).

Every function is pure and takes the Schedule plus integer timesteps t (shape [B]) into it;
per-timestep coefficients are broadcast over the trailing data dimensions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ddpm_jax.broadcast import per_example
from ddpm_jax.schedules import Schedule

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


# ---------------------------------------------------------------- parameterizations

def x0_from_eps(s: Schedule, x_t, t, eps):
  """x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
  return extract(s.sqrt_recip_alpha_bars, t, x_t) * x_t - extract(s.sqrt_recipm1_alpha_bars, t, x_t) * eps


def eps_from_x0(s: Schedule, x_t, t, x0):
  """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t)."""
  return ((extract(s.sqrt_recip_alpha_bars, t, x_t) * x_t - x0)
          / extract(s.sqrt_recipm1_alpha_bars, t, x_t))


def v_from_x0_eps(s: Schedule, x0, t, eps):
  """v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022)."""
  return extract(s.sqrt_alpha_bars, t, x0) * eps - extract(s.sqrt_one_minus_alpha_bars, t, x0) * x0


def x0_from_v(s: Schedule, x_t, t, v):
  """x_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v."""
  return extract(s.sqrt_alpha_bars, t, x_t) * x_t - extract(s.sqrt_one_minus_alpha_bars, t, x_t) * v


def eps_from_v(s: Schedule, x_t, t, v):
  """ε = √(1 − ᾱ_t) x_t + √ᾱ_t v."""
  return extract(s.sqrt_one_minus_alpha_bars, t, x_t) * x_t + extract(s.sqrt_alpha_bars, t, x_t) * v


def target(s: Schedule, mean_type: str, x0, t, eps):
  """What a network of the given mean type regresses: ε, x_0 or v."""
  if mean_type == "eps":
    return eps
  if mean_type == "x0":
    return x0
  if mean_type == "v":
    return v_from_x0_eps(s, x0, t, eps)
  raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {MEAN_TYPES}.")


def predict_x0_eps(s: Schedule, mean_type: str, x_t, t, output, clip_x0: bool = False):
  """(x̂_0, ε̂) from a network output of the given mean type, x̂_0 optionally clipped to [−1, 1].

  When x̂_0 is clipped, ε̂ is recomputed from it so that both describe the same x_t.
  """
  if mean_type == "eps":
    eps = output
    x0 = x0_from_eps(s, x_t, t, eps)
  elif mean_type == "x0":
    x0 = output
    eps = eps_from_x0(s, x_t, t, x0)
  elif mean_type == "v":
    x0 = x0_from_v(s, x_t, t, output)
    eps = eps_from_v(s, x_t, t, output)
  else:
    raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {MEAN_TYPES}.")
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(s, x_t, t, x0)
  return x0, eps


# ---------------------------------------------------------------- reverse process

class PMeanVariance(NamedTuple):
  mean: jnp.ndarray
  variance: jnp.ndarray
  log_variance: jnp.ndarray
  x0: jnp.ndarray
  eps: jnp.ndarray


def split_output(output, var_type: str):
  """A learned-variance network emits 2C channels (last axis): (mean part, variance part)."""
  if var_type not in VAR_TYPES:
    raise ValueError(f"Unknown var_type {var_type!r}; use one of {VAR_TYPES}.")
  if learns_variance(var_type):
    return jnp.split(output, 2, axis=-1)
  return output, None


def p_mean_variance(s: Schedule, output, x_t, t, *, mean_type: str = "eps",
                    var_type: str = "fixed_small", clip_x0: bool = False) -> PMeanVariance:
  """p_θ(x_{t−1} | x_t) = N(μ̃_t(x̂_0, x_t), Σ) from a network output.

  Σ by var_type: fixed_small β̃_t; fixed_large β_t, with β̃_1 at t = 0 (DDPM/improved-DDPM
  convention, so the decoder keeps a finite variance); learned: output is log Σ;
  learned_range: output v ∈ [−1, 1] and log Σ = ((v+1)/2) log β_t + (1 − (v+1)/2) log β̃_t.
  """
  mean_out, var_out = split_output(output, var_type)
  if var_type == "fixed_small":
    variance = extract(s.posterior_variance, t, x_t)
    log_variance = extract(s.posterior_log_variance_clipped, t, x_t)
  elif var_type == "fixed_large":
    large = jnp.concatenate([s.posterior_variance[1:2], s.betas[1:]])
    variance = extract(large, t, x_t)
    log_variance = jnp.log(variance)
  elif var_type == "learned":
    log_variance = var_out
    variance = jnp.exp(log_variance)
  else:  # learned_range
    frac = (var_out + 1) / 2
    log_variance = (frac * extract(jnp.log(s.betas), t, x_t)
                    + (1 - frac) * extract(s.posterior_log_variance_clipped, t, x_t))
    variance = jnp.exp(log_variance)
  variance = jnp.broadcast_to(variance, x_t.shape)
  log_variance = jnp.broadcast_to(log_variance, x_t.shape)
  x0, eps = predict_x0_eps(s, mean_type, x_t, t, mean_out, clip_x0)
  mean, _, _ = q_posterior(s, x0, x_t, t)
  return PMeanVariance(mean, variance, log_variance, x0, eps)


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


def vlb_term_bpd(s: Schedule, p: PMeanVariance, x0, x_t, t):
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

