"""Post-hoc EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of
diffusion models", §3): power-function EMA profiles tracked during training, and the least-
squares reconstruction of an EMA of any length from snapshots of them.

A power-function EMA of exponent γ averages the parameter trajectory θ(τ) up to step t with
the profile p_{t,γ}(τ) = (γ + 1) τ^γ / t^{γ+1} on [0, t]. Its length is σ_rel, the profile's
standard deviation relative to t:

    σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3)).

The discrete update at step t (the step count after the update, t ≥ 1) is

    θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t,   β_t = (1 − 1/t)^{γ+1},

whose weight on θ_τ is exactly ∫_{τ−1}^{τ} p_{t,γ} = (τ^{γ+1} − (τ−1)^{γ+1}) / t^{γ+1}: the
continuous profile applied to the piecewise-constant trajectory that training is. So a
combination Σ x_i θ̂_i of snapshots (t_i, γ_i) is exactly the EMA of profile Σ x_i p_i, and
an EMA (t_*, γ_*) is reconstructed by the weights x that minimise ‖Σ x_i p_i − p_*‖²:
A x = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_*⟩ (closed forms, `profile_inner`), then x / Σ x
(the paper's normalisation: the weights of an average).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_REL_MAX = float(np.sqrt(1 / 12))  # γ = 0, a uniform average of the whole run


def gamma_to_sigma_rel(gamma):
  """σ_rel = √((γ + 1) / ((γ + 2)² (γ + 3)))."""
  gamma = np.float64(gamma)
  return np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel) -> np.ndarray:
  """The exponent γ ≥ 0 of an EMA of length σ_rel in (0, 1/√12]: the largest real root of
  γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0 (σ_rel² (γ+2)²(γ+3) = γ + 1 expanded)."""
  s = np.asarray(sigma_rel, np.float64)
  if np.any(s <= 0) or np.any(s > SIGMA_REL_MAX + 1e-12):
    raise ValueError(f"sigma_rel {s.tolist()} must be in (0, {SIGMA_REL_MAX:.4f}] (1/√12: a "
                     f"uniform average), e.g. 0.05 or 0.10.")
  roots = [np.roots([1.0, 7.0, 16.0 - v**-2, 12.0 - v**-2]) for v in s.ravel()]
  gamma = [max(0.0, r[np.abs(r.imag) < 1e-9].real.max()) for r in roots]
  return np.asarray(gamma, np.float64).reshape(s.shape)


def update(ema, params, step, gamma: float):
  """One power-function EMA update after the optimizer step that made the step count `step`
  (≥ 1): θ̂ ← θ̂ + w (θ − θ̂) with w = 1 − β = −expm1((γ + 1) log1p(−1/t)), in this form
  because 1 − (1 − 1/t)^{γ+1} in float32 loses digits as t grows (2.9e-3 of w at t = 800,000
  for σ_rel 0.10; this form: 5e-8)."""
  t = jnp.asarray(step, jnp.float32)
  w = -jnp.expm1((gamma + 1.0) * jnp.log1p(-1.0 / t))
  return jax.tree.map(lambda e, p: e + w.astype(e.dtype) * (p - e), ema, params)


def discrete_weights(step: int, gamma: float) -> np.ndarray:
  """The weights of θ_1 … θ_t in the EMA after `step` = t updates (float64):
  (τ^{γ+1} − (τ − 1)^{γ+1}) / t^{γ+1}."""
  tau = np.arange(1, step + 1, dtype=np.float64)
  return ((tau / step) ** (gamma + 1) - ((tau - 1) / step) ** (gamma + 1))


def profile_inner(t_a, gamma_a, t_b, gamma_b):
  """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = ∫₀^{min} p_a p_b dτ
  = (γ_a+1)(γ_b+1) / ((γ_a+γ_b+1) t_max) · (t_min / t_max)^{γ of the longer profile}."""
  t_a, gamma_a, t_b, gamma_b = (np.asarray(v, np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
  longer_gamma = np.where(t_a < t_b, gamma_b, gamma_a)
  t_min, t_max = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
  return ((gamma_a + 1) * (gamma_b + 1) / ((gamma_a + gamma_b + 1) * t_max)
          * (t_min / t_max) ** longer_gamma)


def _normal_equations(steps, gammas, target_step, target_gamma):
  """(A, b): the snapshots' profile inner products and each one's with the target's."""
  steps, gammas = np.asarray(steps, np.float64), np.asarray(gammas, np.float64)
  gram = profile_inner(steps[:, None], gammas[:, None], steps[None, :], gammas[None, :])
  return gram, profile_inner(steps, gammas, np.float64(target_step), np.float64(target_gamma))


def coefficients(steps, gammas, target_step: int, target_gamma: float) -> np.ndarray:
  """The weights x_i of the snapshots (steps[i], gammas[i]) whose sum Σ x_i θ̂_i is the EMA of
  exponent `target_gamma` at `target_step`, by least squares over the profiles (normalised to
  sum to 1); a snapshot identical to the target gets weight 1."""
  gram, b = _normal_equations(steps, gammas, target_step, target_gamma)
  x = np.linalg.lstsq(gram, b, rcond=None)[0]
  return x / x.sum()


def profile_error(steps, gammas, x, target_step: int, target_gamma: float) -> float:
  """‖Σ x_i p_i − p_*‖ / ‖p_*‖: how far the reconstruction's profile is from the target's."""
  gram, b = _normal_equations(steps, gammas, target_step, target_gamma)
  x = np.asarray(x, np.float64)
  target = profile_inner(target_step, target_gamma, target_step, target_gamma)
  return float(np.sqrt(max(x @ gram @ x - 2 * x @ b + target, 0.0) / target))
