"""Noise schedules: β arrays (numpy, float64) and the Schedule pytree of derived terms.

Conventions follow the DDPM code: timesteps are integers t = 0..T-1, β_t is the
variance added by step t, ᾱ_t = ∏_{s≤t} (1 − β_s), and x_t ~ N(√ᾱ_t x_0, (1 − ᾱ_t) I).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import struct

BETA_SCHEDULES = ("linear", "quadratic", "cosine", "sigmoid", "constant")


def beta_schedule(name: str, num_timesteps: int, *, beta_start: float = 1e-4,
                  beta_end: float = 0.02, cosine_s: float = 0.008,
                  max_beta: float = 0.999) -> np.ndarray:
  """Returns β_0..β_{T-1} in float64.

  linear:    β_t = linspace(β_start, β_end)                       (DDPM)
  quadratic: β_t = linspace(√β_start, √β_end)²                    (DDPM repo)
  cosine:    ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta)
             (improved DDPM)
  sigmoid:   β_t = σ(linspace(−6, 6)) (β_end − β_start) + β_start
  constant:  β_t = β_end
  """
  _check_num_timesteps(num_timesteps)
  t = num_timesteps
  if name == "linear":
    betas = np.linspace(beta_start, beta_end, t, dtype=np.float64)
  elif name == "quadratic":
    betas = np.linspace(beta_start**0.5, beta_end**0.5, t, dtype=np.float64)**2
  elif name == "cosine":
    steps = np.arange(t + 1, dtype=np.float64) / t
    alpha_bar = np.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2)**2
    betas = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
  elif name == "sigmoid":
    x = np.linspace(-6, 6, t, dtype=np.float64)
    betas = 1 / (1 + np.exp(-x)) * (beta_end - beta_start) + beta_start
  elif name == "constant":
    betas = np.full(t, beta_end, dtype=np.float64)
  else:
    raise ValueError(f"Unknown beta schedule {name!r}; use one of {BETA_SCHEDULES}.")
  return betas


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> np.ndarray:
  """NCSN noise levels σ_1 > … > σ_L, geometric: σ_i = σ_max (σ_min/σ_max)^{(i−1)/(L−1)}."""
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"Need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                     f"sigma_max={sigma_max}; swap or fix them.")
  _check_num_timesteps(num_levels)
  return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_levels))


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Shifts and scales √ᾱ so that √ᾱ_{T-1} = 0 while √ᾱ_0 is kept (Lin et al. 2023, Alg. 1).

  The last β becomes 1; use v- or x0-prediction with it, since ε cannot be recovered at SNR 0.
  """
  sqrt_ab = np.sqrt(alpha_bars_of(betas))
  first, last = sqrt_ab[0], sqrt_ab[-1]
  sqrt_ab = (sqrt_ab - last) * first / (first - last)
  alpha_bar = sqrt_ab**2
  alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
  return 1 - alphas


@struct.dataclass
class Schedule:
  """Every per-timestep coefficient of the discrete diffusion, each defined once.

  All fields are arrays of length T indexed by t = 0..T-1.
  """
  betas: jnp.ndarray
  alpha_bars: jnp.ndarray                 # ᾱ_t = ∏_{s≤t} (1 − β_s)
  sqrt_alpha_bars: jnp.ndarray            # √ᾱ_t: the α of x_t = α x_0 + σ ε
  sqrt_one_minus_alpha_bars: jnp.ndarray  # √(1 − ᾱ_t): its σ
  log_one_minus_alpha_bars: jnp.ndarray   # log(1 − ᾱ_t)
  posterior_variance: jnp.ndarray         # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
  posterior_log_variance_clipped: jnp.ndarray  # log β̃_t with β̃_0 replaced by β̃_1
  posterior_mean_coef1: jnp.ndarray       # coefficient of x_0: √ᾱ_{t−1} β_t / (1 − ᾱ_t)
  posterior_mean_coef2: jnp.ndarray       # coefficient of x_t: √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)

  @property
  def num_timesteps(self) -> int:
    return self.betas.shape[0]


def alpha_bars_of(betas) -> np.ndarray:
  """ᾱ_t = ∏_{s≤t} (1 − β_s), float64."""
  return np.cumprod(1 - np.asarray(betas, np.float64))


def make_schedule(betas, dtype=jnp.float32) -> Schedule:
  """Builds the Schedule from β_0..β_{T-1}; derived terms are computed in float64."""
  betas = validate_betas(betas)
  alphas = 1 - betas
  alpha_bars = alpha_bars_of(betas)
  alpha_bars_prev = np.append(1.0, alpha_bars[:-1])
  with np.errstate(divide="ignore"):
    posterior_variance = betas * (1 - alpha_bars_prev) / (1 - alpha_bars)
    log_var = np.log(np.append(posterior_variance[1], posterior_variance[1:])
                     if len(betas) > 1 else np.maximum(posterior_variance, 1e-20))
    terms = dict(
        betas=betas,
        alpha_bars=alpha_bars,
        sqrt_alpha_bars=np.sqrt(alpha_bars),
        sqrt_one_minus_alpha_bars=np.sqrt(1 - alpha_bars),
        log_one_minus_alpha_bars=np.log(1 - alpha_bars),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=log_var,
        posterior_mean_coef1=np.sqrt(alpha_bars_prev) * betas / (1 - alpha_bars),
        posterior_mean_coef2=np.sqrt(alphas) * (1 - alpha_bars_prev) / (1 - alpha_bars),
    )
  return Schedule(**{k: jnp.asarray(v, dtype=dtype) for k, v in terms.items()})


def validate_betas(betas) -> np.ndarray:
  """Checks a user β array: 1-D, finite, T ≥ 1, 0 < β < 1 (β = 1 allowed only last)."""
  betas = np.asarray(betas, dtype=np.float64)
  if betas.ndim != 1:
    raise ValueError(f"betas must be a 1-D array of length T, got shape {betas.shape}.")
  _check_num_timesteps(betas.shape[0])
  inner, last = betas[:-1], betas[-1]
  if not (np.all(np.isfinite(betas)) and np.all((inner > 0) & (inner < 1))
          and 0 < last <= 1):
    bad = betas[~((betas > 0) & (betas < 1))]
    raise ValueError(f"Every beta must lie in (0, 1) (only the last may be 1, for zero "
                     f"terminal SNR); got values such as {bad[:3].tolist()}.")
  return betas


def _check_num_timesteps(num_timesteps) -> None:
  if int(num_timesteps) != num_timesteps or num_timesteps < 1:
    raise ValueError(f"The number of timesteps must be an integer >= 1, got {num_timesteps}.")
