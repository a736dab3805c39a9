"""DDPM ancestral sampling: x_{t−1} = μ_θ(x_t, t) + σ_t z for t = T−1..0, one lax.scan."""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp

from ddpm_jax import diffusion
from ddpm_jax.samplers import common
from ddpm_jax.schedules import Schedule


def ancestral_step(model: Callable, schedule: Schedule, x, t, noise, *, mean_type: str,
                   var_type: str, clip_x0: bool):
  """One reverse step x_t → x_{t−1} ~ p_θ(x_{t−1} | x_t); no noise at t = 0.

  Returns (x_{t−1}, x̂_0).
  """
  tt = diffusion.timesteps_like(x, t)
  p = diffusion.p_mean_variance(schedule, model(x, tt), x, tt, mean_type=mean_type,
                                var_type=var_type, clip_x0=clip_x0)
  x_prev = p.mean + jnp.where(t > 0, 1.0, 0.0) * jnp.exp(0.5 * p.log_variance) * noise
  return x_prev, p.x0


def ddpm_loop(schedule: Schedule, shape: Sequence[int], *, mean_type: str = "eps",
              var_type: str = "fixed_large", clip_x0: bool = True,
              record_steps: Sequence[int] = ()):
  """The per-device ancestral loop (samplers/common.py) over all T steps for examples of
  `shape`, from x_T ~ N(0, I) unless x is given."""
  diffusion.check_types(mean_type, var_type)
  shape, record_steps = tuple(shape), tuple(int(t) for t in record_steps)

  def loop(model, keys, x, _):
    if x is None:
      x = common.initial_noise(keys, shape)

    def step(x, t):
      x_prev, x0 = ancestral_step(model, schedule, x, t, common.step_noise(keys, t, shape),
                                  mean_type=mean_type, var_type=var_type, clip_x0=clip_x0)
      return x_prev, x0, t

    steps = jnp.arange(schedule.num_timesteps - 1, -1, -1)
    return common.scan_recorded(step, x, steps, record_steps)
  return loop


def ddpm_sample(model: Callable, schedule: Schedule, key, shape: Sequence[int], *,
                mean_type: str = "eps", var_type: str = "fixed_large", clip_x0: bool = True,
                record_steps: Sequence[int] = (), x_T=None, cond=None, mesh=None):
  """Ancestral sampling over all T steps from x_T ~ N(0, I) (or the given x_T).

  shape is the batch shape [B, ...]. With record_steps, also returns {"x": x_t, "x0": x̂_0}
  at those timesteps, each [B, K, ...]. `cond` (e.g. labels [B]) is passed as model(x, t, cond).
  With a mesh, the batch is split over its devices.
  """
  loop = ddpm_loop(schedule, shape[1:], mean_type=mean_type, var_type=var_type,
                   clip_x0=clip_x0, record_steps=record_steps)
  return common.run(loop, model, key, shape[0], mesh=mesh, x_init=x_T, cond=cond)
