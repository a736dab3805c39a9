"""EDM's sampler (Karras et al. 2022, arXiv:2206.00364, Algorithm 2): Heun's method on the
probability-flow ODE in their variables, with optional stochastic churn, for a score model on
any SDE here (sde.py) through the change of variables

  x̃ = x / α(t),  σ̃ = σ(t) / α(t) = e^{−λ(t)},  D(x̃; σ̃) = x̂_0(α x̃, t(σ̃))

(x̂_0 the data prediction of samplers/grids.py), in which the PF-ODE is
dx̃/dσ̃ = (x̃ − D(x̃; σ̃)) / σ̃. Step i from σ̃_i to σ̃_{i+1}:

  churn:  σ̂ = σ̃_i (1 + γ_i),  x̂ = x̃_i + √(σ̂² − σ̃_i²) S_noise z,
          γ_i = min(S_churn / N, √2 − 1) where S_tmin ≤ σ̃_i ≤ S_tmax, else 0
  Heun:   d = (x̂ − D(x̂; σ̂)) / σ̂,  x' = x̂ + (σ̃_{i+1} − σ̂) d,
          x̃_{i+1} = x̂ + (σ̃_{i+1} − σ̂) (d + (x' − D(x'; σ̃_{i+1})) / σ̃_{i+1}) / 2.

σ̂ is capped at σ̃(T), where the model is last defined. The grid is grids.time_grid's (EDM's
own is "karras"); every step is a Heun step, since the grid ends at eps > 0 rather than σ = 0,
so N steps cost 2N network evaluations, 2N + 1 with the final denoising x̂_0(x, eps) (which
takes the place of EDM's last step to σ = 0). With S_churn = 0 the map is deterministic and
second order. All times, σ̃ and γ are computed on the host once; the loop is one lax.scan.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common, grids

SPACING = "karras"  # its default grid (EDM's own)


def schedule(sde, times, churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf):
  """(σ̃ [N+1], σ̂ [N], t̂ [N]): the grid's σ̃ = e^{−λ}, each step's churned σ̂ and its time."""
  if churn < 0:
    raise ValueError(f"EDM churn must be >= 0, got {churn}.")
  _, _, lam = grids.marginals(sde, times)
  sigma = np.exp(-lam)
  n = len(times) - 1
  gamma = np.where((sigma[:-1] >= s_tmin) & (sigma[:-1] <= s_tmax),
                   min(churn / n, math.sqrt(2.0) - 1.0), 0.0)
  sigma_hat = np.minimum(sigma[:-1] * (1.0 + gamma), sigma[0])
  t_hat = np.where(sigma_hat > sigma[:-1],
                   grids.time_of_log_snr(sde, -np.log(sigma_hat), float(times[-1]),
                                           float(times[0])),
                   times[:-1])
  return sigma, sigma_hat, t_hat


def edm_loop(sde, shape: Sequence[int], *, num_steps: int = 18, spacing: str = SPACING,
             eps: float = 1e-3, churn: float = 0.0, s_tmin: float = 0.0,
             s_tmax: float = math.inf, s_noise: float = 1.0, denoise: bool = True,
             t_start: float | None = None):
  """The per-device EDM Heun loop (samplers/common.py) from x_T ~ N(0, σ_T² I) (unless x is
  given) at sde.T (grids.start: on a flow path, where λ is finite) to eps, then (`denoise`) x̂_0(x, eps), with D the model's data prediction
  (clipped where the Denoiser clips). Churn draws per-example noise (keys needed when
  churn > 0). With a t_start ∈ (0, 1] (SDEdit) the grid runs from t_start·T,
  x the images to edit."""
  grids.check_log_snr(sde, eps)
  shape = tuple(shape)
  times = grids.time_grid(sde, num_steps, spacing, eps,
                         common.check_t_start(t_start) * grids.start(sde))
  alpha_0, sigma_0 = grids.coefficients_at(sde, times[0])
  sigma, sigma_hat, t_hat = schedule(sde, times, churn, s_tmin, s_tmax)
  alpha = grids.marginals(sde, times)[0]
  alpha_hat = grids.marginals(sde, t_hat)[0]
  noise_scale = s_noise * np.sqrt(sigma_hat**2 - sigma[:-1]**2)
  steps = tuple(jnp.asarray(v) for v in (
      np.arange(num_steps), noise_scale, sigma_hat, t_hat, alpha_hat, sigma[1:], times[1:],
      alpha[1:]))
  stochastic = bool(np.any(sigma_hat > sigma[:-1]))

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha_0, sigma_0, sde.prior_std())
    c = lambda v: v.astype(x.dtype)  # noqa: E731

    def denoiser(y, t, a):  # D(ỹ; σ̃) = x̂_0(α ỹ, t) at the time t of σ̃, where α = α(t)
      return model.x0(c(a) * y, jnp.full(y.shape[:1], t, y.dtype))

    def step(y, s):
      i, scale, s_hat, t_h, a_h, s_next, t_next, a_next = s
      if stochastic:
        y = y + c(scale) * common.step_noise(keys, i, shape)
      d = (y - denoiser(y, t_h, a_h)) / c(s_hat)
      y_euler = y + c(s_next - s_hat) * d
      d_next = (y_euler - denoiser(y_euler, t_next, a_next)) / c(s_next)
      return y + c(s_next - s_hat) * 0.5 * (d + d_next), None

    y, _ = jax.lax.scan(step, x / c(alpha[0]), steps)
    return (denoiser(y, times[-1], alpha[-1]) if denoise else c(alpha[-1]) * y), {}
  return loop


def nfe(sde, *, num_steps: int, denoise: bool, **_) -> int:
  """Network evaluations per sample: two per Heun step, and the final denoising one."""
  return 2 * num_steps + denoise
