"""Gaussian probability paths of flow matching: x_t = α(t) x_0 + σ(t) ε on t ∈ [0, 1], from the
data (α = 1, σ = 0) to pure noise (α = 0, σ = 1).

  linear:  α = 1 − t,          σ = t            (rectified flow, conditional OT: Liu et al. 2023,
                                                 Lipman et al. 2023)
  cosine:  α = cos(πt/2),      σ = sin(πt/2)    (TrigFlow's path, Lu & Song 2024)

The conditional velocity is v = α' x_0 + σ' ε (linear: ε − x_0), and the marginal one,
v(x, t) = α' x̂_0 + σ' ε̂, is the probability-flow ODE's drift (core/denoiser.py velocity).
As processes they are read like the SDEs of core/sde.py (marginal_coef, prior_std, T), so
the ODE samplers and the likelihood run on them; since α(T) = 0 (λ = −∞ there), samplers
stepping in λ start at `lambda_start` = 1 − 10⁻³ (where diffusers' flow schedulers start
too), while the ODE, the likelihood and the flow samplers start at T = 1 from the exact prior
N(0, I). (The predictor–corrector sampler, which steps the process's SDE, does not run on
them: its drift (α'/α) x is infinite at T.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

PATH_NAMES = ("linear", "cosine")


def marginal_rates(process, t):
  """(α'(t), σ'(t)) of any process here (its marginal_coef differentiated forward)."""
  t = jnp.asarray(t, jnp.result_type(t, jnp.float32))
  return jax.jvp(process.marginal_coef, (t,), (jnp.ones_like(t),))[1]


class _Path:
  T = 1.0
  lambda_start = 1.0 - 1e-3

  def prior_std(self) -> float:
    return 1.0


@dataclasses.dataclass(frozen=True)
class LinearPath(_Path):
  def marginal_coef(self, t):
    return 1 - t, t


@dataclasses.dataclass(frozen=True)
class CosinePath(_Path):
  def marginal_coef(self, t):
    """cos(πt/2) written as sin(π(1 − t)/2), which is 0 exactly at t = 1 in float32."""
    return jnp.sin(0.5 * jnp.pi * (1 - t)), jnp.sin(0.5 * jnp.pi * t)


for _cls in (LinearPath, CosinePath):
  jax.tree_util.register_static(_cls)


def make_path(path: str):
  if path == "linear":
    return LinearPath()
  if path == "cosine":
    return CosinePath()
  raise ValueError(f"Unknown flow path {path!r}; use one of {PATH_NAMES}.")


def is_path(process) -> bool:
  return isinstance(process, _Path)
