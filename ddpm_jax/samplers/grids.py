"""The log-SNR λ(t) = log α(t) − log σ(t) of an SDE (core/sde.py) and what the
exponential-integrator samplers (DPM-Solver++, UniPC, EDM's Heun) build on it: λ's inverse and
their step grids; and the check every SDE sampler makes that λ is finite where it runs.

Grids and coefficients are computed on the host in float64 once per sampler; the samplers'
loops only combine arrays with them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

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


def start(sde) -> float:
  """Where a sampler stepping in λ starts: T, or on a flow path, where α(T) = 0 and λ = −∞,
  its lambda_start (core/paths.py)."""
  return float(getattr(sde, "lambda_start", sde.T))


def shifted_times(t_max: float, eps: float, num_steps: int, shift: float = 1.0) -> np.ndarray:
  """num_steps + 1 times from t_max to eps: u uniform from 1 to 0 mapped by SD3's shift
  s u / (1 + (s − 1) u) (Esser et al. 2024; s > 1 spends more steps near the noise) onto
  [eps, t_max], so both ends stay where they are (SD3's grid for t_max = 1, eps = 0)."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
  if not eps < t_max:
    raise ValueError(f"The grid starts at t = {t_max:g}, not after its end eps = {eps:g}: "
                     f"start later or lower eps (sampling.eps).")
  if shift <= 0:
    raise ValueError(f"The time shift must be positive (1: none), got {shift}.")
  u = np.linspace(1.0, 0.0, num_steps + 1)
  times = eps + (t_max - eps) * shift * u / (1 + (shift - 1) * u)
  times[0], times[-1] = t_max, eps
  return times


def time_grid(sde, num_steps: int, spacing: str = "logsnr", eps: float = 1e-3,
              t_max: float | None = None) -> np.ndarray:
  """num_steps + 1 decreasing times from t_max (default `start`) to eps: uniform in t, uniform
  in λ, or Karras et al.'s σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ in
  σ = e^{−λ}."""
  if spacing not in SPACINGS:
    raise ValueError(f"Unknown spacing {spacing!r}; use one of {SPACINGS}.")
  if num_steps < 1:
    raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
  t_max, t_min = float(start(sde) if t_max is None else t_max), float(eps)
  if not t_min < t_max:
    raise ValueError(f"The grid starts at t = {t_max:g}, not after its end eps = {t_min:g}: "
                     f"start later or lower eps (sampling.eps).")
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


def coefficients_at(sde, t: float) -> tuple[float, float]:
  """(α(t), σ(t)) at one time, as floats (where a sampler's loop starts)."""
  alpha, sigma, _ = marginals(sde, np.array([float(t)]))
  return float(alpha[0]), float(sigma[0])


def marginals(sde, times):
  """(α, σ, λ) at `times` as float64 numpy."""
  alpha, sigma = _marginal_coef(sde, jnp.asarray(times))
  alpha, sigma = np.asarray(alpha, np.float64), np.asarray(sigma, np.float64)
  with np.errstate(divide="ignore"):  # α = 0 or σ = 0: λ = ∓∞, which check_log_snr reports
    return alpha, sigma, np.log(alpha) - np.log(sigma)


@functools.partial(jax.jit, static_argnums=0)
def _marginal_coef(sde, t):
  """sde.marginal_coef as one compiled program per shape (the host-side grids call it often;
  op by op, each call would compile and dispatch every operation)."""
  return sde.marginal_coef(t)


def check_log_snr(sde, eps: float) -> None:
  """A sampler that runs from `start` to eps on the SDE needs a finite λ at both ends:
  σ(eps) > 0 (no division by σ = 0) and α > 0 at the start (a prior to start from)."""
  alpha, sigma, lam = marginals(sde, np.array([start(sde), float(eps)]))
  if not np.isfinite(lam[1]):
    raise ValueError(f"eps={eps:g} gives σ(eps) = {sigma[1]:.3g} on this SDE, an infinite "
                     f"log-SNR (the score divides by σ); use eps > 0, e.g. 1e-3 "
                     f"(sampling.eps).")
  if not np.isfinite(lam[0]):
    raise ValueError(f"The process ends at α(T) = {alpha[0]:.3g} (e.g. a zero-terminal-SNR "
                     f"schedule, diffusion.zero_terminal_snr): samplers of the SDE start from "
                     f"its prior at a finite log-SNR; use sampling.method 'ddpm' or 'ddim'.")
