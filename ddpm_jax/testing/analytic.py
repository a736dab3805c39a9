"""Closed-form models for data whose noised marginals are known exactly.

For x_0 ~ Σ_k w_k N(μ_k, diag s_k²) the marginal of x_t = √ᾱ x_0 + √(1−ᾱ) ε is
Σ_k w_k N(√ᾱ μ_k, diag(ᾱ s_k² + 1 − ᾱ)), and the optimal ε-prediction is

  E[ε | x_t] = Σ_k r_k(x_t) √(1−ᾱ) (x_t − √ᾱ μ_k) / (ᾱ s_k² + 1 − ᾱ),

with r_k the posterior component weights; under a continuous SDE with x_t | x_0 ~
N(α x_0, σ² I) the score is Σ_k r_k · −(x_t − α μ_k)/(α² s_k² + σ²) (= −ε/σ). A single
Gaussian is K = 1; a dataset itself is the mixture with s_k = 0. These are the ground-truth
models of the tests: the exact ε at a chain step and the exact score at a time, and
`mixture_network` / `mixture_denoiser`, the exact network of each objective (core/denoiser.py),
fed and predicting what a trained one would, so that every sampler and the denoiser's
conversions run on it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import denoiser, paths
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.core.chain import extract
from ddpm_jax.core.schedules import Schedule


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


def mixture_network(process, means, stds, weights=None, *, objective: str = "ddpm",
                    prediction: str = "eps", sigma_data: float = 0.5,
                    time_scale: float = 1000.0):
  """net(x, noise_input) -> the exact output of an `objective` network predicting `prediction`
  (eps, x0, v, score; "edm" for objective edm; velocity or x0 for objective flow, fed
  time_scale · t) on `process`, for x_0 ~ Σ_k w_k N(μ_k, diag s_k²): it reads the time or
  noise level from its input as core/denoiser.py feeds it."""
  means, stds, log_w = _mixture_arrays(means, stds, weights)
  probe = _probe(process, objective, prediction, time_scale)
  return jax.tree_util.Partial(functools.partial(
      _network, process=process, noise_input_kind=probe.noise_input, prediction=prediction,
      sigma_data=sigma_data, time_scale=probe.time_scale), means, stds, log_w)


def _probe(process, objective, prediction, time_scale):
  """The Denoiser of an `objective` network around no network (what it is fed)."""
  if objective == "flow":
    return denoiser.make(None, process, objective, prediction=prediction, time_scale=time_scale)
  return denoiser.make(None, process, objective, mean_type=prediction)


def mixture_classifier(process, means, stds, weights=None, *, objective: str = "ddpm",
                       prediction: str = "eps", sigma_data: float = 0.5):
  """classifier(x, noise_input) -> logits [B, K] of the exact p(y = k | x_t) for
  x_0 ~ Σ_k w_k N(μ_k, diag s_k²) with y the component: the noised marginal is the mixture of
  N(α μ_k, diag(α² s_k² + σ²)), so p(y = k | x_t) is the posterior responsibility of component
  k. It is fed what an `objective` network predicting `prediction` is (core/denoiser.py
  network_input), so it guides that network's Denoiser."""
  means, stds, log_w = _mixture_arrays(means, stds, weights)
  noise_input = _probe(process, objective, prediction, 1000.0).noise_input
  return jax.tree_util.Partial(functools.partial(
      _classifier, process=process, noise_input_kind=noise_input,
      edm=objective == "edm", sigma_data=sigma_data), means, stds, log_w)


def mixture_denoiser(process, means, stds, weights=None, *, objective: str = "ddpm",
                     prediction: str = "eps", sigma_data: float = 0.5,
                     time_scale: float = 1000.0, **options):
  """The Denoiser of `mixture_network` (options: var_type, clip_x0)."""
  if objective == "edm":
    prediction = "edm"
  net = mixture_network(process, means, stds, weights, objective=objective, prediction=prediction,
                        sigma_data=sigma_data, time_scale=time_scale)
  if objective == "flow":
    return denoiser.make(net, process, objective, prediction=prediction, time_scale=time_scale,
                         **options)
  return denoiser.make(net, process, objective, mean_type=prediction, sigma_data=sigma_data,
                       **options)


def gaussian_flow_map(process, mean, std, x_T, t_end: float, t_from: float | None = None):
  """The probability-flow ODE's exact map t_from (default sde.T) → t_end of x_0 ~ N(mean,
  diag std²) (float64, numpy): z = (x_t − α_t μ)/√(α_t² s² + σ_t²) is constant along every
  trajectory."""
  t_from = process.T if t_from is None else t_from
  (a_T, s_T), (a_e, s_e) = [[np.asarray(v, np.float64) for v in process.marginal_coef(
      jnp.asarray(t))] for t in (t_from, t_end)]
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  z = (np.asarray(x_T, np.float64) - a_T * mean) / np.sqrt(a_T**2 * std**2 + s_T**2)
  return a_e * mean + np.sqrt(a_e**2 * std**2 + s_e**2) * z


def _levels(x, noise_input, process, noise_input_kind, edm: bool, sigma_data: float,
            time_scale: float = 1.0):
  """(x, α, σ): the state and its marginal coefficients from what a network of the noise
  input is fed (EDM's network: c_in x at c_noise = ¼ ln σ; a flow network: time_scale · t)."""
  if noise_input_kind == "t":
    alpha, sigma = process.marginal_coef(noise_input / time_scale)
  elif noise_input_kind == "index":
    if jnp.issubdtype(noise_input.dtype, jnp.integer):  # a chain step: its own α_i, σ_i
      alpha, sigma = process.step_coef(noise_input)
    else:
      alpha, sigma = process.marginal_coef(noise_input * process.T / (process.N - 1))
  else:  # log σ, or EDM's c_noise = ¼ ln σ, at α = 1
    sigma = jnp.exp(noise_input * (4.0 if noise_input_kind == "edm" else 1.0))
    alpha = jnp.ones_like(sigma)
  if edm:
    x = x / per_example(denoiser.edm_coefficients(sigma, sigma_data)[2], x)  # fed c_in x
  return x, alpha, sigma


def _classifier(means, stds, log_w, x, noise_input, *, process, noise_input_kind, edm,
                sigma_data):
  x, alpha, sigma = _levels(x, noise_input, process, noise_input_kind, edm, sigma_data)
  xs = x[:, None]
  a, s = per_example(alpha, xs).astype(x.dtype), per_example(sigma, xs).astype(x.dtype)
  return _log_likelihoods(means, stds, log_w, x, a, s)


def _network(means, stds, log_w, x, noise_input, *, process, noise_input_kind, prediction,
             sigma_data, time_scale=1.0):
  """The exact output for input x at the level the noise input names (module docstring):
  x̂_0 is the posterior mean Σ_k r_k (μ_k + α s_k² (x − α μ_k)/(α² s_k² + σ²)), finite at
  α = 0 where a flow path starts."""
  x, alpha, sigma = _levels(x, noise_input, process, noise_input_kind, prediction == "edm",
                            sigma_data, time_scale)
  if prediction == "edm":
    c_skip, c_out, _, _ = (per_example(c, x) for c in
                           denoiser.edm_coefficients(sigma, sigma_data))
  xs = x[:, None]
  a, s = per_example(alpha, xs).astype(x.dtype), per_example(sigma, xs).astype(x.dtype)
  score, x0 = _mixture_posterior(means, stds, log_w, x, a, s)
  a, s = a[:, 0], s[:, 0]
  eps = -s * score
  outputs = {"eps": lambda: eps, "x0": lambda: x0, "score": lambda: score,
             "v": lambda: a * eps - s * x0,
             "velocity": lambda: _velocity(process, noise_input / time_scale, x0, eps),
             "edm": lambda: (x0 - c_skip * x) / c_out}
  return outputs[prediction]()


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


def _log_likelihoods(means, stds, log_w, x, a, s):
  """log w_k + log N(x; a μ_k, diag(a² s_k² + s²)) up to a constant shared by k: [B, K]."""
  var = a**2 * stds[None]**2 + s**2                         # [B, K, ...]
  diff = x[:, None] - a * means[None]
  axes = tuple(range(2, x.ndim + 1))
  return -0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=axes) + log_w


def _mixture_score(means, stds, log_w, x, a, s):
  """Σ_k r_k(x) · −(x − a μ_k) / (a² s_k² + s²), with a, s of shape [B, 1, 1...]."""
  return _mixture_posterior(means, stds, log_w, x, a, s)[0]


def _mixture_posterior(means, stds, log_w, x, a, s):
  """(score, E[x_0 | x]): Σ_k r_k(x) · −(x − a μ_k) / v_k and Σ_k r_k (μ_k + a s_k² (x − a μ_k)
  / v_k) with v_k = a² s_k² + s², a and s of shape [B, 1, 1...]."""
  var = a**2 * stds[None]**2 + s**2                         # [B, K, ...]
  diff = x[:, None] - a * means[None]
  resp = per_example(jax.nn.softmax(_log_likelihoods(means, stds, log_w, x, a, s), axis=1),
                     diff)  # [B, K, 1...]
  return (-jnp.sum(resp * diff / var, axis=1),
          jnp.sum(resp * (means[None] + a * stds[None]**2 * diff / var), axis=1))


def _velocity(process, t, x0, eps):
  """α' x̂_0 + σ' ε̂ at times t [B]."""
  d_alpha, d_sigma = (per_example(r, x0) for r in paths.marginal_rates(process, t))
  return d_alpha * x0 + d_sigma * eps
