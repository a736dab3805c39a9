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
  3M:              x_t = (σ_t/σ_u) x_u − α_t φ_1 m_0 + α_t φ_2 D_1 − c α_t φ_3 D_2
                   (D_1 ≈ h x̂_0', D_2 ≈ h² x̂_0''/2 from m_0, m_1, m_2 as in DPM-Solver's
                   code). third_order "published" (the default): c = 1, the update of
                   DPM-Solver's code and diffusers, half the Taylor term — second order
                   against exact Gaussian data, but 4–5× smaller errors at 20 NFE on Karras
                   grids and the better demo FID at 10 and 20 NFE; "taylor": c = 2, the
                   Taylor term, third order (2.6–13× smaller errors on λ-uniform grids from
                   20 NFE on). benchmarks/RESULTS.md has the measurements.
  2S (singlestep): u' = t(λ_u + h/2), x_{u'} by order 1, x_t = (σ_t/σ_u) x_u − α_t φ_1 x̂_0(x_{u'}, u')

Every update is linear in x_u and the m_k with coefficients that depend only on the grid, so
they are computed once on the host in float64 and the loop is one lax.scan of
x ← a x + Σ_k b_k m_k: one network evaluation per step (two for 2S). Without history, 2M
starts with an order-1 step; 3M with `start` "lower_order" (the default) takes orders 1, 2,
then 3 (as DPM-Solver's code: N evaluations; the first-order step's error caps the global
order at 2 only asymptotically: the Taylor form measured 3.7 from 20 to 160 steps), with
"singlestep" a 2S step then a 2M step (N + 1 evaluations, global order 3, and at equal
evaluations 1.2–1.7× the error of "lower_order"). With
`lower_order_final` and fewer than 15 steps the multistep methods end at orders 2 and 1,
which keeps few-step sampling stable.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common, grids

VARIANTS = ("multistep", "singlestep")
ORDERS = (1, 2, 3)
THIRD_ORDER = ("taylor", "published")  # 3M's D_2 term: ×2 (Taylor) or ×1 (DPM-Solver's code)
STARTS = ("lower_order", "singlestep")  # 3M's first steps: orders 1, 2 or a 2S step
SPACING = "logsnr"  # its default grid (samplers/grids.py)


def multistep_coefficients(sde, times, order: int, lower_order_final: bool = True,
                           third_order: str = "taylor"):
  """(a [N], b [N, 3]): step i of the grid is x_i = a_i x_{i−1} + Σ_k b_ik m_k, m_k the data
  prediction at times[i−1−k]."""
  if order not in ORDERS:
    raise ValueError(f"DPM-Solver++ order must be one of {ORDERS}, got {order}.")
  if third_order not in THIRD_ORDER:
    raise ValueError(f"Unknown DPM-Solver++ third_order {third_order!r}; use one of "
                     f"{THIRD_ORDER}.")
  d2_factor = 2.0 if third_order == "taylor" else 1.0
  alpha, sigma, lam = grids.marginals(sde, times)
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
      c = -alpha[i] * phi1 * m0 + alpha[i] * phi2 * d1 - d2_factor * alpha[i] * phi3 * d2
    b[i - 1] = c
  return a, b


def singlestep_coefficients(sde, times):
  """(midpoint times [N], a_mid, b_mid, a, b [N]) of DPM-Solver++(2S): x_{u'} = a_mid x +
  b_mid m_0, then x_i = a x + b x̂_0(x_{u'}, u') with λ(u') halfway between the grid times."""
  alpha, sigma, lam = grids.marginals(sde, times)
  mid = grids.time_of_log_snr(sde, 0.5 * (lam[:-1] + lam[1:]), float(times[-1]), float(times[0]))
  alpha_m, sigma_m, lam_m = grids.marginals(sde, mid)
  a_mid = sigma_m / sigma[:-1]
  b_mid = -alpha_m * np.expm1(-(lam_m - lam[:-1]))
  a = sigma[1:] / sigma[:-1]
  b = -alpha[1:] * np.expm1(-(lam[1:] - lam[:-1]))
  return mid, a_mid, b_mid, a, b


def nfe(sde, *, num_steps: int, order: int, variant: str, start: str, denoise: bool,
        **_) -> int:
  """Network evaluations per sample: N steps (3M with a 2S start: N + 1; 2S: 2N) and the
  final denoising one."""
  if variant == "singlestep":
    return 2 * num_steps + denoise
  return num_steps + _starts_singlestep(variant, order, start, num_steps) + denoise


def _starts_singlestep(variant, order, start, num_steps) -> bool:
  return variant == "multistep" and order == 3 and start == "singlestep" and num_steps > 1


def dpm_solver_loop(sde, shape: Sequence[int], *, num_steps: int = 20, order: int = 2,
                    variant: str = "multistep", spacing: str = SPACING, eps: float = 1e-3,
                    lower_order_final: bool = True, third_order: str = "published",
                    start: str = "lower_order", denoise: bool = True,
                    t_start: float | None = None):
  """The per-device DPM-Solver++ loop (samplers/common.py) from x_T ~ N(0, σ_T² I) (unless x
  is given) at sde.T (grids.start: on a flow path, where λ is finite) to eps, then (`denoise`) x̂_0(x, eps), on the model's data predictions
  (clipped where the Denoiser clips: static thresholding, no longer the ODE's solution but
  better images from pixel-space models). `variant` "multistep" is DPM-Solver++(1/2/3M) of
  `order` (3M's form: `third_order`, `start`); "singlestep" is DPM-Solver++(2S). With a
  t_start ∈ (0, 1] (SDEdit) the grid runs from t_start·T, x the images to edit."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown DPM-Solver++ variant {variant!r}; use one of {VARIANTS}.")
  if start not in STARTS:
    raise ValueError(f"Unknown DPM-Solver++ start {start!r}; use one of {STARTS}.")
  grids.check_log_snr(sde, eps)
  shape = tuple(shape)
  times = grids.time_grid(sde, num_steps, spacing, eps,
                         common.check_t_start(t_start) * grids.start(sde))
  alpha_0, sigma_0 = grids.coefficients_at(sde, times[0])
  first_2s = _starts_singlestep(variant, order, start, num_steps)  # the first step by 2S
  if variant == "singlestep" or first_2s:
    single = tuple(jnp.asarray(v) for v in (times[:-1],) + singlestep_coefficients(sde, times))
  if variant == "multistep":
    a, b = multistep_coefficients(sde, times, order, lower_order_final, third_order)
    steps = (jnp.asarray(times[:-1]), jnp.asarray(a), jnp.asarray(b))
    if first_2s:
      first = tuple(v[0] for v in single)
      steps = tuple(v[1:] for v in steps)

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha_0, sigma_0, sde.prior_std())
    x0 = lambda y, t: model.x0(y, jnp.full(y.shape[:1], t, y.dtype))  # noqa: E731
    c = lambda v: v.astype(x.dtype)  # noqa: E731

    def single_step(y, s, m0=None):
      t, t_mid, a_mid, b_mid, a_i, b_i = s
      m0 = x0(y, t) if m0 is None else m0
      return c(a_i) * y + c(b_i) * x0(c(a_mid) * y + c(b_mid) * m0, t_mid)

    if variant == "singlestep":
      x, _ = jax.lax.scan(lambda y, s: (single_step(y, s), None), x, single)
      return (x0(x, jnp.asarray(times[-1])) if denoise else x), {}

    def step(carry, s):
      y, m1, m2 = carry
      t, a_i, b_i = s
      m0 = x0(y, t)
      b_i = c(b_i)
      return (c(a_i) * y + b_i[0] * m0 + b_i[1] * m1 + b_i[2] * m2, m0, m1), None
    history = jnp.zeros_like(x)
    if first_2s:
      history = x0(x, first[0])
      x = single_step(x, first, history)
    (x, _, _), _ = jax.lax.scan(step, (x, history, jnp.zeros_like(x)), steps)
    return (x0(x, jnp.asarray(times[-1])) if denoise else x), {}
  return loop
