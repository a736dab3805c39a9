"""Closed-form denoisers for data whose noised marginals are known exactly.

For x_0 ~ Σ_k w_k N(μ_k, diag s_k²) the marginal of x_t = √ᾱ x_0 + √(1−ᾱ) ε is
Σ_k w_k N(√ᾱ μ_k, diag(ᾱ s_k² + 1 − ᾱ)), and the optimal ε-prediction is

  E[ε | x_t] = Σ_k r_k(x_t) √(1−ᾱ) (x_t − √ᾱ μ_k) / (ᾱ s_k² + 1 − ᾱ),

with r_k the posterior component weights; under a continuous SDE with x_t | x_0 ~
N(α x_0, σ² I) the score is Σ_k r_k · −(x_t − α μ_k)/(α² s_k² + σ²) (= −ε/σ). A single
Gaussian is K = 1; a dataset itself is the mixture with s_k = 0. These are the ground-truth
models of the tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddpm_jax.broadcast import per_example
from ddpm_jax.diffusion import extract
from ddpm_jax.schedules import Schedule


def mixture_eps_model(schedule: Schedule, means, stds, weights=None):
  """model(x_t, t) -> E[ε | x_t] for x_0 ~ Σ_k w_k N(means[k], diag stds[k]²).

  means: [K, ...] (the data shape); stds: broadcastable to means; weights: [K] (default
  uniform). Returns a `jax.tree_util.Partial`, so it can be passed through jit.
  """
  means, stds, log_w = _mixture_arrays(means, stds, weights)
  return jax.tree_util.Partial(_mixture_eps, schedule, means, stds, log_w)


def gaussian_eps_model(schedule: Schedule, mean, std):
  """model(x_t, t) -> E[ε | x_t] for x_0 ~ N(mean, diag std²)."""
  mean = jnp.asarray(mean, jnp.float32)
  return mixture_eps_model(schedule, mean[None], jnp.broadcast_to(jnp.asarray(std, jnp.float32), mean.shape)[None])


def mixture_score_model(sde, means, stds, weights=None):
  """score(x_t, t) -> ∇ log p_t(x_t) for x_0 ~ Σ_k w_k N(means[k], diag stds[k]²) under a
  continuous SDE with x_t | x_0 ~ N(α(t) x_0, σ(t)² I) (sde.marginal_coef)."""
  means, stds, log_w = _mixture_arrays(means, stds, weights)
  return jax.tree_util.Partial(_sde_score, sde, means, stds, log_w)


def _mixture_arrays(means, stds, weights):
  means = jnp.asarray(means, jnp.float32)
  stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), means.shape)
  k = means.shape[0]
  w = jnp.full((k,), 1.0 / k) if weights is None else jnp.asarray(weights, jnp.float32)
  return means, stds, jnp.log(w)


def _sde_score(sde, means, stds, log_w, x, t):
  alpha, sigma = sde.marginal_coef(t)
  xs = x[:, None]  # [B, 1, ...]: the mixture axis
  return _mixture_score(means, stds, log_w, x, per_example(alpha, xs), per_example(sigma, xs))


def _mixture_eps(schedule, means, stds, log_w, x, t):
  ab = extract(schedule.alpha_bars, t, x)[:, None]          # [B, 1, 1...]
  s = jnp.sqrt(1 - ab)
  return -s[:, 0] * _mixture_score(means, stds, log_w, x, jnp.sqrt(ab), s)


def _mixture_score(means, stds, log_w, x, a, s):
  """Σ_k r_k(x) · −(x − a μ_k) / (a² s_k² + s²), with a, s of shape [B, 1, 1...]."""
  xs = x[:, None]                                           # [B, 1, ...]
  var = a**2 * stds[None]**2 + s**2                         # [B, K, ...]
  diff = xs - a * means[None]
  axes = tuple(range(2, x.ndim + 1))
  log_like = -0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=axes) + log_w  # [B, K]
  resp = per_example(jax.nn.softmax(log_like, axis=1), diff)  # [B, K, 1...]
  return -jnp.sum(resp * diff / var, axis=1)
