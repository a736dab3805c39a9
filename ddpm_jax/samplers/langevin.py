"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Alg. 1), one lax.scan per level.

For the levels σ_1 > … > σ_L of an NCSN network's VE SDE and α_i = ε σ_i² / σ_L², T steps per
level:
  x ← x + (α_i / 2) s(x, σ_i) + √α_i z,
then optionally the denoising step x ← x + σ_L² s(x, σ_L) (Jolicoeur-Martineau et al. 2021).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common


def levels(sde):
  """σ_1 > … > σ_L: the N geometric levels of a VE SDE, largest first."""
  if not hasattr(sde, "discrete_sigmas"):
    raise ValueError(f"Annealed Langevin dynamics runs over the noise levels of a VE SDE, not "
                     f"a {type(sde).__name__}.")
  return sde.discrete_sigmas()[::-1]


def ald_loop(sde, shape: Sequence[int], *, step_lr: float = 2e-5, n_steps_each: int = 100,
             denoise: bool = True, t_start: float | None = None):
  """The per-device annealed Langevin loop (samplers/common.py) over the levels of `sde` for
  examples of `shape`, from N(0, σ_1² I) unless x is given; the model's score at each σ.
  With a t_start ∈ (0, 1], over the levels from σ(t_start·T) (the level round((1 − t_start)(L − 1))
  of the L) down, x the data to edit (SDEdit)."""
  all_levels = np.asarray(levels(sde), np.float32)
  shape, sig = tuple(shape), jnp.asarray(all_levels[first_level(sde, t_start):])

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, 1.0, sig[0], sig[0])

    def level(x, i):
      sigma = jnp.full(x.shape[:1], sig[i])
      alpha = step_lr * (sig[i] / sig[-1])**2

      def step(x, j):
        z = common.step_noise(keys, i * n_steps_each + j, shape)
        return x + 0.5 * alpha * model.score_at_sigma(x, sigma) + jnp.sqrt(alpha) * z, None

      x, _ = jax.lax.scan(step, x, jnp.arange(n_steps_each))
      return x, None

    x, _ = jax.lax.scan(level, x, jnp.arange(sig.shape[0]))
    if denoise:
      x = x + sig[-1]**2 * model.score_at_sigma(x, jnp.full(x.shape[:1], sig[-1]))
    return x, {}
  return loop


def first_level(sde, t_start: float) -> int:
  """The index of the largest level a run from t_start·T starts at (0 for t_start = 1)."""
  return int(round((1 - common.check_t_start(t_start)) * (sde.N - 1)))


def nfe(sde, *, n_steps_each: int, denoise: bool, t_start: float | None = None, **_) -> int:
  """Network evaluations per sample: every level's steps and the final denoising step."""
  return (sde.N - first_level(sde, t_start)) * n_steps_each + denoise
