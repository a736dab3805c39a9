"""DDPM ancestral sampling: x_{t−1} = μ_θ(x_t, t) + σ_t z for t = T−1..0, one lax.scan, on a
DDPM network's discrete chain (its DiscreteVPSDE)."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from ddpm_jax.core import chain
from ddpm_jax.core.schedules import Schedule
from ddpm_jax.samplers import common


def ancestral_step(model, schedule: Schedule, x, t, noise):
  """One reverse step x_t → x_{t−1} ~ p_θ(x_{t−1} | x_t) of the Denoiser `model` (its
  variance type, clipping); no noise at t = 0. Returns (x_{t−1}, x̂_0)."""
  tt = chain.timesteps_like(x, t)
  pred = model.predict_step(x, tt)
  p = chain.p_mean_variance(schedule, pred.x0, pred.var_out, x, tt, model.var_type)
  x_prev = p.mean + jnp.where(t > 0, 1.0, 0.0) * jnp.exp(0.5 * p.log_variance) * noise
  return x_prev, pred.x0


def ddpm_loop(sde, shape: Sequence[int], *, record_steps: Sequence[int] = (),
              t_start: float | None = None):
  """The per-device ancestral loop (samplers/common.py) over all N steps of the chain of
  `sde` (a DiscreteVPSDE) for examples of `shape`, from x_T ~ N(0, I) unless x is given;
  with a t_start ∈ (0, 1] from step round(t_start (N − 1)), x the data to edit (SDEdit)."""
  schedule = chain_schedule(sde)
  shape, record_steps = tuple(shape), tuple(int(t) for t in record_steps)
  first = start_step(schedule.num_timesteps, t_start)
  ab = float(schedule.alpha_bars[first])

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, ab**0.5, (1 - ab)**0.5, 1.0)

    def step(x, t):
      x_prev, x0 = ancestral_step(model, schedule, x, t, common.step_noise(keys, t, shape))
      return x_prev, x0, t

    steps = jnp.arange(first, -1, -1)
    return common.scan_recorded(step, x, steps, record_steps)
  return loop


def chain_schedule(sde) -> Schedule:
  """The Schedule of a discrete chain; a one-line error for a continuous-time process."""
  if not hasattr(sde, "schedule"):
    raise ValueError(f"{type(sde).__name__} has no discrete chain: DDPM and DDIM step a DDPM "
                     f"network's chain (training.objective 'ddpm'); use an SDE sampler.")
  return sde.schedule()


def start_step(num_timesteps: int, t_start: float) -> int:
  """The chain step a sampler started at t_start·T begins from: round(t_start (N − 1))."""
  return int(round(common.check_t_start(t_start) * (num_timesteps - 1)))


def nfe(sde, *, t_start: float | None = None, **_) -> int:
  """Network evaluations per sample: one per step of the chain (from the start step)."""
  return start_step(sde.N, t_start) + 1
