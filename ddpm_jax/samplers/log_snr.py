"""The log-SNR λ(t) = log α(t) − log σ(t) of an SDE (sde.py) and what the exponential-integrator
samplers (DPM-Solver++, UniPC, EDM's Heun) build on it: λ's inverse, their step grids, and
the data prediction x̂_0(x, t) = (x + σ² s(x, t)) / α of a score model s (optionally clipped
to the data range).

Grids and coefficients are computed on the host in float64 once per sampler; the samplers'
loops only combine arrays with them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.broadcast import per_example

SPACINGS = ("time_uniform", "logsnr", "karras")
KARRAS_RHO = 7.0  # EDM's σ spacing exponent


def log_snr(sde, t) -> np.ndarray:
  """λ(t) = log α(t) − log σ(t), as float64 numpy (in the precision sde.marginal_coef gives)."""
  return marginals(sde, t)[2]


def time_of_log_snr(sde, lam, t_min: float, t_max: float) -> np.ndarray:
  """t ∈ [t_min, t_max] with λ(t) = lam, by bisection (λ decreases in t for every SDE here)."""
  lam = np.asarray(lam, np.float64)
  lo, hi = np.full(lam.shape, t_min), np.full(lam.shape, t_max)
  for _ in range(64):
    mid = 0.5 * (lo + hi)
    above = log_snr(sde, mid) > lam  # still too early: the answer is later
    lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
  return 0.5 * (lo + hi)


def time_grid(sde, num_steps: int, spacing: str = "logsnr", eps: float = 1e-3) -> np.ndarray:
  """num_steps + 1 decreasing times from sde.T to eps: uniform in t, uniform in λ, or
  Karras et al.'s σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ in σ = e^{−λ}."""
  if spacing not in SPACINGS:
    raise ValueError(f"Unknown spacing {spacing!r}; use one of {SPACINGS}.")
  if num_steps < 1:
    raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
  t_max, t_min = float(sde.T), float(eps)
  if spacing == "time_uniform":
    return np.linspace(t_max, t_min, num_steps + 1)
  lam_start, lam_end = log_snr(sde, np.array([t_max, t_min]))
  if spacing == "logsnr":
    lams = np.linspace(lam_start, lam_end, num_steps + 1)
  else:
    ramp = np.linspace(0.0, 1.0, num_steps + 1)
    s_max, s_min = np.exp(-lam_start) ** (1 / KARRAS_RHO), np.exp(-lam_end) ** (1 / KARRAS_RHO)
    lams = -KARRAS_RHO * np.log(s_max + ramp * (s_min - s_max))
  times = time_of_log_snr(sde, lams, t_min, t_max)
  times[0], times[-1] = t_max, t_min
  return times


def marginals(sde, times):
  """(α, σ, λ) at `times` as float64 numpy."""
  alpha, sigma = _marginal_coef(sde, jnp.asarray(times))
  alpha, sigma = np.asarray(alpha, np.float64), np.asarray(sigma, np.float64)
  return alpha, sigma, np.log(alpha) - np.log(sigma)


@functools.partial(jax.jit, static_argnums=0)
def _marginal_coef(sde, t):
  """sde.marginal_coef as one compiled program per shape (the host-side grids call it often;
  op by op, each call would compile and dispatch every operation)."""
  return sde.marginal_coef(t)


def data_prediction(sde, score_fn, x, t, clip: bool = False):
  """x̂_0(x, t) = (x + σ(t)² s(x, t)) / α(t) for the examples of x at the scalar time t,
  with `clip` clipped to the data range [−1, 1] (DPM-Solver++'s static thresholding; at
  order 1 the same map as DDIM's clip_x0, which recomputes ε̂ from the clipped x̂_0)."""
  return _data_prediction(sde, score_fn, x, jnp.full((x.shape[0],), t, x.dtype), clip)[0]


def clipped_score(sde, score_fn):
  """The score whose data prediction is the clipped one, s_c(x, t) = (α clip(x̂_0) − x) / σ²
  (t per example): what the samplers that integrate the score (the PF-ODE) use for
  clip_x0, so that they solve the ODE that DPM-Solver++ with clipping solves."""
  def score(x, t):
    x0, alpha, sigma = _data_prediction(sde, score_fn, x, t, True)
    return (alpha * x0 - x) / sigma**2
  return score


def _data_prediction(sde, score_fn, x, t, clip: bool):
  """(x̂_0, α, σ) for the examples of x at their times t [b], α and σ shaped like x."""
  alpha, sigma = (per_example(v, x) for v in sde.marginal_coef(t))
  x0 = (x + sigma**2 * score_fn(x, t)) / alpha
  return (jnp.clip(x0, -1.0, 1.0) if clip else x0), alpha, sigma
