"""UniPC (Zhao et al. 2023, arXiv:2302.04867): a multistep predictor (UniP-p) and a corrector
(UniC) for the probability-flow ODE in the log-SNR λ, on data predictions x̂_0 of a score
model (samplers/grids.py).

From grid time s to t, h = λ_t − λ_s, with m_0 = x̂_0 at s and m_k at earlier grid times
(r_k = (λ_k − λ_s)/h, D_k = (m_k − m_0)/r_k):

  UniP-p:  x_t = (σ_t/σ_s) x_s − α_t φ_1 m_0 − α_t B(h) Σ_{k<p} ρ_k D_k
  UniC-p:  x_t^c = (σ_t/σ_s) x_s − α_t φ_1 m_0 − α_t B(h) (Σ_{k<p} ρ_k D_k + ρ_p (m_t − m_0))

with φ_1 = e^{−h} − 1 and B(h) = −h ("bh1") or e^{−h} − 1 ("bh2"). The ρ solve the order
conditions Σ_k ρ_k r_k^{j−1} = j! φ_{j+1}(−h)/B(h), j = 1…p (the predictor drops the last
row and column; ρ = ½ for p = 2 predictors and p = 1 correctors, as the paper's code). m_t is
the evaluation at the predicted x_t that the next predictor step uses anyway, so the
corrector costs no evaluation: N steps are N network evaluations, and UniPC-p converges at
order p + 1 (UniP-p alone at p). Like DPM-Solver++ the updates are linear in x and the m_k,
so the coefficients are computed once on the host in float64 and the loop is one lax.scan.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common, grids

VARIANTS = ("bh1", "bh2")
ORDERS = (1, 2, 3)
SPACING = "logsnr"  # its default grid (samplers/grids.py)
HISTORY = 4  # m_i, m_{i−1}, m_{i−2}, m_{i−3}: what an order-3 corrector reads


def _update(alpha, sigma, lam, s, t, older, corrector: bool, variant: str):
  """(a, {grid index: coefficient}) of x_t = a x_s + Σ_j c_j m_j for the UniP (or UniC)
  step from grid index s to t that also reads the data predictions at `older` indices."""
  h = lam[t] - lam[s]
  hh = -h
  phi1 = np.expm1(hh)
  big_b = hh if variant == "bh1" else phi1
  rks = np.array([(lam[j] - lam[s]) / h for j in older] + [1.0])
  p = len(rks)
  rows, rhs, phi_k, factorial = [], [], phi1 / hh - 1, 1
  for k in range(1, p + 1):
    rows.append(rks ** (k - 1))
    rhs.append(phi_k * factorial / big_b)
    factorial *= k + 1
    phi_k = phi_k / hh - 1 / factorial
  big_r, rhs = np.array(rows), np.array(rhs)
  if corrector:
    rhos = np.array([0.5]) if p == 1 else np.linalg.solve(big_r, rhs)
  else:
    rhos = np.array([0.5]) if p == 2 else np.linalg.solve(big_r[:-1, :-1], rhs[:-1])
  coef = {s: -alpha[t] * phi1}
  for rho, j, r in zip(rhos, older + ([t] if corrector else []), rks):
    coef[j] = coef.get(j, 0.0) - alpha[t] * big_b * rho / r
    coef[s] += alpha[t] * big_b * rho / r
  return sigma[t] / sigma[s], coef


def coefficients(sde, times, order: int, variant: str = "bh2", corrector: bool = True,
                 lower_order_final: bool = True):
  """Per grid step i = 0…N−1 (at times[i]): the correction of x_i from x_{i−1}, as
  (c_x, c_prev, c_m [4]) in x_i ← c_x x_i + c_prev x_{i−1} + Σ_k c_m[k] m_{i−k}, and the
  prediction of x_{i+1} as (a, b [3]) in x_{i+1} = a x_i + Σ_k b[k] m_{i−k}."""
  if order not in ORDERS:
    raise ValueError(f"UniPC order must be one of {ORDERS}, got {order}.")
  if variant not in VARIANTS:
    raise ValueError(f"Unknown UniPC variant {variant!r}; use one of {VARIANTS}.")
  alpha, sigma, lam = grids.marginals(sde, times)
  n = len(times) - 1
  c_x, c_prev, c_m = np.ones(n), np.zeros(n), np.zeros((n, HISTORY))
  a, b = np.zeros(n), np.zeros((n, HISTORY - 1))
  last_order = 0
  for i in range(n):
    if corrector and i > 0:  # UniC of the order of the predictor that made x_i
      ratio, coef = _update(alpha, sigma, lam, i - 1, i,
                            [i - 1 - k for k in range(1, last_order)], True, variant)
      c_x[i], c_prev[i] = 0.0, ratio
      for j, value in coef.items():
        c_m[i, i - j] = value
    p = min(order, i + 1)
    if lower_order_final and n < 15:
      p = min(p, n - i)
    ratio, coef = _update(alpha, sigma, lam, i, i + 1, [i - k for k in range(1, p)], False,
                          variant)
    a[i] = ratio
    for j, value in coef.items():
      b[i, i - j] = value
    last_order = p
  return (c_x, c_prev, c_m), (a, b)


def unipc_loop(sde, shape: Sequence[int], *, num_steps: int = 10, order: int = 2,
               variant: str = "bh2", spacing: str = SPACING, eps: float = 1e-3,
               corrector: bool = True, lower_order_final: bool = True, denoise: bool = True,
               t_start: float | None = None):
  """The per-device UniPC loop (samplers/common.py) from x_T ~ N(0, σ_T² I) (unless x is
  given) at sde.T (grids.start: on a flow path, where λ is finite) to eps, then (`denoise`) x̂_0(x, eps), on the model's data predictions
  (clipped where the Denoiser clips). One evaluation per step. With a t_start ∈ (0, 1]
  (SDEdit) the grid runs from t_start·T, x the images to edit."""
  grids.check_log_snr(sde, eps)
  shape = tuple(shape)
  times = grids.time_grid(sde, num_steps, spacing, eps,
                         common.check_t_start(t_start) * grids.start(sde))
  alpha_0, sigma_0 = grids.coefficients_at(sde, times[0])
  (c_x, c_prev, c_m), (a, b) = coefficients(sde, times, order, variant, corrector,
                                            lower_order_final)
  steps = tuple(jnp.asarray(v) for v in (times[:-1], c_x, c_prev, c_m, a, b))

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha_0, sigma_0, sde.prior_std())
    c = lambda v: v.astype(x.dtype)  # noqa: E731
    x0 = lambda y, t: model.x0(y, jnp.full(y.shape[:1], t, y.dtype))  # noqa: E731

    def step(carry, s):
      x_prev, y, m1, m2, m3 = carry
      t, cx, cp, cm, a_i, b_i = s
      m0 = x0(y, t)
      cm, b_i = c(cm), c(b_i)
      y = c(cx) * y + c(cp) * x_prev + cm[0] * m0 + cm[1] * m1 + cm[2] * m2 + cm[3] * m3
      y_next = c(a_i) * y + b_i[0] * m0 + b_i[1] * m1 + b_i[2] * m2
      return (y, y_next, m0, m1, m2), None

    zeros = jnp.zeros_like(x)
    (_, x, _, _, _), _ = jax.lax.scan(step, (zeros, x, zeros, zeros, zeros), steps)
    return (x0(x, times[-1]) if denoise else x), {}
  return loop


def nfe(sde, *, num_steps: int, denoise: bool, **_) -> int:
  """Network evaluations per sample: one per step (the corrector reuses the next step's), and
  the final denoising one."""
  return num_steps + denoise

