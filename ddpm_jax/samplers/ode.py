"""Probability-flow ODE sampling with diffrax: dx/dt = f(x, t) − ½ g(t)² s(x, t) from T to ε.

Each example is its own ODE (the solve is vmapped), so adaptive step sizes, the number of
function evaluations and the samples do not depend on the batch or the device split.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ddpm_jax import sde as sde_lib
from ddpm_jax.samplers import common, log_snr

SOLVERS = ("tsit5", "dopri5", "heun", "euler")
_EVALS_PER_STEP = {"tsit5": 6, "dopri5": 6, "heun": 2, "euler": 1}  # FSAL for the RK45 pair


def make_solver(name: str):
  if name not in SOLVERS:
    raise ValueError(f"Unknown ODE solver {name!r}; use one of {SOLVERS}.")
  import diffrax  # here, not at the top: importing it is 0.5 s of every command's start
  return {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "heun": diffrax.Heun,
          "euler": diffrax.Euler}[name]()


def solve(vector_field: Callable, y0, t0: float, t1: float, *, solver: str, rtol: float,
          atol: float, num_steps: int, max_steps: int = 16_384):
  """Integrates dy/dt = vector_field(t, y) for one example from t0 to t1: adaptive (PID,
  rtol/atol) for tsit5/dopri5, `num_steps` fixed steps for euler/heun.
  Returns (y(t1), function evaluations)."""
  import diffrax
  adaptive = solver in ("tsit5", "dopri5")
  controller = (diffrax.PIDController(rtol=rtol, atol=atol) if adaptive
                else diffrax.ConstantStepSize())
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(lambda t, y, args: vector_field(t, y)), make_solver(solver), t0, t1,
      dt0=None if adaptive else (t1 - t0) / num_steps, y0=y0, stepsize_controller=controller,
      max_steps=max_steps if adaptive else num_steps, saveat=diffrax.SaveAt(t1=True))
  nfe = sol.stats["num_steps"] * _EVALS_PER_STEP[solver] + (1 if adaptive else 0)
  return jax.tree.map(lambda v: v[0], sol.ys), nfe


def ode_loop(sde, shape: Sequence[int], *, solver: str = "tsit5", rtol: float = 1e-5,
             atol: float = 1e-5, num_steps: int = 100, eps: float = 1e-3, denoise: bool = True,
             clip_x0: bool = False):
  """The per-device probability-flow loop (samplers/common.py) for examples of `shape`, from
  x_T ~ N(0, σ_T² I) unless x is given, to eps, then (`denoise`) x̂_0(x, eps); the model is
  score(x, t), with each example's own condition where the model is a common.Conditioned.
  `clip_x0` integrates the score of the clipped x̂_0 (log_snr.clipped_score) and clips the
  final x̂_0. Returns (samples, nfe [b])."""
  make_solver(solver)
  shape, rtol, atol, num_steps, eps = tuple(shape), float(rtol), float(atol), int(num_steps), float(eps)

  def loop(score_fn, keys, x, _):
    if x is None:
      x = sde.prior_std() * common.initial_noise(keys, shape)

    def one(x1, cond):
      score_one = common.per_example_model(score_fn, cond)
      integrated = log_snr.clipped_score(sde, score_one) if clip_x0 else score_one

      def field(t, y):
        drift, _ = sde_lib.reverse_sde(sde, integrated, y[None], jnp.full((1,), t),
                                       probability_flow=True)
        return drift[0]
      x0, nfe = solve(field, x1, sde.T, eps, solver=solver, rtol=rtol, atol=atol,
                      num_steps=num_steps)
      if denoise:
        x0 = log_snr.data_prediction(sde, score_one, x0[None], jnp.asarray(eps, x0.dtype),
                                     clip_x0)[0]
      return x0, nfe + denoise

    conds = score_fn.cond if isinstance(score_fn, common.Conditioned) else None
    return jax.vmap(one)(x, conds)
  return loop


def ode_sample(score_fn: Callable, sde, key, shape: Sequence[int], *, solver: str = "tsit5",
               rtol: float = 1e-5, atol: float = 1e-5, num_steps: int = 100, eps: float = 1e-3,
               denoise: bool = True, clip_x0: bool = False, x_T=None, mesh=None):
  """Samples by integrating the probability-flow ODE from x_T ~ N(0, σ_T² I) (or x_T) at T
  to ε, then (`denoise`) x̂_0(x, ε); `clip_x0` as in ode_loop. Returns (samples, nfe [B]),
  the function evaluations per example."""
  loop = ode_loop(sde, shape[1:], solver=solver, rtol=rtol, atol=atol, num_steps=num_steps,
                  eps=eps, denoise=denoise, clip_x0=clip_x0)
  return common.run(loop, score_fn, key, shape[0], mesh=mesh, x_init=x_T)
