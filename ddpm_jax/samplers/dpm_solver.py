"""DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095): exponential-integrator solvers of the
probability-flow ODE in the log-SNR λ = log(α/σ), with the data prediction
x̂_0(x, t) = (x + σ² s(x, t)) / α of a score model s on an SDE (sde.py).

From grid time u to t, with h = λ_t − λ_u, the ODE's solution is exactly

  x_t = (σ_t/σ_u) x_u + σ_t ∫_{λ_u}^{λ_t} e^λ x̂_0(λ) dλ,

and the solvers replace x̂_0 by a polynomial in λ through recent evaluations
(φ_1 = e^{−h} − 1, φ_2 = φ_1/h + 1, φ_3 = φ_2/h − ½; m_k = x̂_0 at the k-th latest grid time,
r_k the ratio of the previous λ-steps to h):

  order 1 (DDIM):  x_t = (σ_t/σ_u) x_u − α_t φ_1 m_0
  2M:              x_t = (σ_t/σ_u) x_u − α_t φ_1 (m_0 + (m_0 − m_1)/(2 r_0))
  3M:              x_t = (σ_t/σ_u) x_u − α_t φ_1 m_0 + α_t φ_2 D_1 − 2 α_t φ_3 D_2
                   (D_1 ≈ h x̂_0', D_2 ≈ h² x̂_0''/2 from m_0, m_1, m_2 as in DPM-Solver's code,
                   whose multistep update has α_t φ_3 D_2: half the Taylor term, and measured
                   second order against exact Gaussian data; tests/test_fast_samplers.py)
  2S (singlestep): u' = t(λ_u + h/2), x_{u'} by order 1, x_t = (σ_t/σ_u) x_u − α_t φ_1 x̂_0(x_{u'}, u')

Every update is linear in x_u and the m_k with coefficients that depend only on the grid, so
they are computed once on the host in float64 and the loop is one lax.scan of
x ← a x + Σ_k b_k m_k: one network evaluation per step (two for 2S). Without history, 2M
starts with an order-1 step and 3M with a 2S step and a 2M step (a first-order start would cap
3M's global order at 2: measured on exact Gaussian data), so 3M costs N + 1 evaluations. With
`lower_order_final` and fewer than 15 steps the multistep methods end at orders 2 and 1,
which keeps few-step sampling stable.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common, log_snr

VARIANTS = ("multistep", "singlestep")


def multistep_coefficients(sde, times, order: int, lower_order_final: bool = True):
  """(a [N], b [N, 3]): step i of the grid is x_i = a_i x_{i−1} + Σ_k b_ik m_k, m_k the data
  prediction at times[i−1−k]."""
  if order not in (1, 2, 3):
    raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}.")
  alpha, sigma, lam = log_snr.marginals(sde, times)
  n = len(times) - 1
  a, b = np.zeros(n), np.zeros((n, 3))
  for i in range(1, n + 1):
    p = min(order, i)
    if lower_order_final and n < 15:
      p = min(p, n - i + 1)
    h = lam[i] - lam[i - 1]
    phi1 = np.expm1(-h)
    a[i - 1] = sigma[i] / sigma[i - 1]
    m0 = np.array([1.0, 0.0, 0.0])
    if p == 1:
      c = -alpha[i] * phi1 * m0
    elif p == 2:
      r0 = (lam[i - 1] - lam[i - 2]) / h
      d1 = np.array([1.0, -1.0, 0.0]) / r0
      c = -alpha[i] * phi1 * (m0 + 0.5 * d1)
    else:
      r0, r1 = (lam[i - 1] - lam[i - 2]) / h, (lam[i - 2] - lam[i - 3]) / h
      d1_0, d1_1 = np.array([1.0, -1.0, 0.0]) / r0, np.array([0.0, 1.0, -1.0]) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      d2 = (d1_0 - d1_1) / (r0 + r1)
      phi2 = phi1 / h + 1.0
      phi3 = phi2 / h - 0.5
      c = -alpha[i] * phi1 * m0 + alpha[i] * phi2 * d1 - 2 * alpha[i] * phi3 * d2
    b[i - 1] = c
  return a, b


def singlestep_coefficients(sde, times):
  """(midpoint times [N], a_mid, b_mid, a, b [N]) of DPM-Solver++(2S): x_{u'} = a_mid x +
  b_mid m_0, then x_i = a x + b x̂_0(x_{u'}, u') with λ(u') halfway between the grid times."""
  alpha, sigma, lam = log_snr.marginals(sde, times)
  mid = log_snr.time_of_log_snr(sde, 0.5 * (lam[:-1] + lam[1:]), float(times[-1]), float(times[0]))
  alpha_m, sigma_m, lam_m = log_snr.marginals(sde, mid)
  a_mid = sigma_m / sigma[:-1]
  b_mid = -alpha_m * np.expm1(-(lam_m - lam[:-1]))
  a = sigma[1:] / sigma[:-1]
  b = -alpha[1:] * np.expm1(-(lam[1:] - lam[:-1]))
  return mid, a_mid, b_mid, a, b


def nfe(num_steps: int, order: int, variant: str, denoise: bool = True) -> int:
  """Network evaluations per sample."""
  if variant == "singlestep":
    return 2 * num_steps + denoise
  return num_steps + (order == 3) + denoise


def dpm_solver_loop(sde, shape: Sequence[int], *, num_steps: int = 20, order: int = 2,
                    variant: str = "multistep", spacing: str = "logsnr", eps: float = 1e-3,
                    lower_order_final: bool = True, denoise: bool = True,
                    clip_x0: bool = False):
  """The per-device DPM-Solver++ loop (samplers/common.py) from x_T ~ N(0, σ_T² I) (unless x
  is given) at sde.T to eps, then (`denoise`) x̂_0(x, eps); the model is the score s(x, t).
  `variant` "multistep" is DPM-Solver++(1/2/3M) of `order`; "singlestep" is
  DPM-Solver++(2S). `clip_x0` clips every data prediction to [−1, 1] (static thresholding:
  no longer the ODE's solution, but better images from pixel-space models)."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown DPM-Solver++ variant {variant!r}; use one of {VARIANTS}.")
  shape = tuple(shape)
  times = log_snr.time_grid(sde, num_steps, spacing, eps)
  start = variant == "multistep" and order == 3 and num_steps > 1  # the first step by 2S
  if variant == "singlestep" or start:
    single = tuple(jnp.asarray(v) for v in (times[:-1],) + singlestep_coefficients(sde, times))
  if variant == "multistep":
    a, b = multistep_coefficients(sde, times, order, lower_order_final)
    steps = (jnp.asarray(times[:-1]), jnp.asarray(a), jnp.asarray(b))
    if start:
      first = tuple(v[0] for v in single)
      steps = tuple(v[1:] for v in steps)

  def loop(score_fn, keys, x, _):
    if x is None:
      x = sde.prior_std() * common.initial_noise(keys, shape)
    x0 = lambda y, t: log_snr.data_prediction(sde, score_fn, y, t.astype(y.dtype),  # noqa: E731
                                              clip_x0)
    c = lambda v: v.astype(x.dtype)  # noqa: E731

    def single_step(y, s, m0=None):
      t, t_mid, a_mid, b_mid, a_i, b_i = s
      m0 = x0(y, t) if m0 is None else m0
      return c(a_i) * y + c(b_i) * x0(c(a_mid) * y + c(b_mid) * m0, t_mid)

    if variant == "singlestep":
      x, _ = jax.lax.scan(lambda y, s: (single_step(y, s), None), x, single)
      return x0(x, jnp.asarray(times[-1])) if denoise else x

    def step(carry, s):
      y, m1, m2 = carry
      t, a_i, b_i = s
      m0 = x0(y, t)
      b_i = c(b_i)
      return (c(a_i) * y + b_i[0] * m0 + b_i[1] * m1 + b_i[2] * m2, m0, m1), None
    history = jnp.zeros_like(x)
    if start:
      history = x0(x, first[0])
      x = single_step(x, first, history)
    (x, _, _), _ = jax.lax.scan(step, (x, history, jnp.zeros_like(x)), steps)
    return x0(x, jnp.asarray(times[-1])) if denoise else x
  return loop
