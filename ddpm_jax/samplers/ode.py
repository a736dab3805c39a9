"""Probability-flow ODE sampling with diffrax: dx/dt = v(x, t) = f(x, t) − ½ g(t)² s(x, t) (the
Denoiser's velocity α' x̂_0 + σ' ε̂) from T to ε.

Each example is its own ODE (the solve is vmapped), so adaptive step sizes, the number of
function evaluations and the samples do not depend on the batch or the device split.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ddpm_jax.samplers import common, grids

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
             t_start: float | None = None):
  """The per-device probability-flow loop (samplers/common.py) for examples of `shape`, from
  x_T ~ N(0, σ_T² I) unless x is given, to eps, then (`denoise`) x̂_0(x, eps); each example is
  solved alone, with its own condition. A clipping Denoiser (clip_x0) gives the score of the
  clipped x̂_0, s_c = (α clip(x̂_0) − x)/σ²: the ODE that DPM-Solver++ with clipping steps.
  info["nfe"] [b] counts the field's evaluations. With a t_start ∈ (0, 1] it is solved from
  t_start·T, x the data to edit (SDEdit)."""
  make_solver(solver)
  grids.check_log_snr(sde, eps)
  shape, rtol, atol, num_steps, eps = tuple(shape), float(rtol), float(atol), int(num_steps), float(eps)

  t_first = float(common.check_t_start(t_start) * sde.T)
  alpha, sigma = grids.coefficients_at(sde, t_first)

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha, sigma, sde.prior_std())

    def one(x1, cond, known):
      model_one = model.replace(**jax.tree.map(lambda c: c[None], {"cond": cond, "known": known}))

      def field(t, y):
        return model_one.velocity(y[None], jnp.full((1,), t, y.dtype))[0]
      x0, nfe = solve(field, x1, t_first, eps, solver=solver, rtol=rtol, atol=atol,
                      num_steps=num_steps)
      if denoise:
        x0 = model_one.x0(x0[None], jnp.full((1,), eps, x0.dtype))[0]
      return x0, nfe + denoise

    samples, nfe = jax.vmap(one)(x, model.cond, model.known)
    return samples, {"nfe": nfe}
  return loop
