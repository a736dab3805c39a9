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

from ddpm_jax.samplers import common


def levels(sde):
  """σ_1 > … > σ_L: the N geometric levels of a VE SDE, largest first."""
  if not hasattr(sde, "discrete_sigmas"):
    raise ValueError(f"Annealed Langevin dynamics runs over the noise levels of a VE SDE, not "
                     f"a {type(sde).__name__}.")
  return sde.discrete_sigmas()[::-1]


def ald_loop(sde, shape: Sequence[int], *, step_lr: float = 2e-5, n_steps_each: int = 100,
             denoise: bool = True):
  """The per-device annealed Langevin loop (samplers/common.py) over the levels of `sde` for
  examples of `shape`, from N(0, σ_1² I) unless x is given; the model's score at each σ."""
  shape, sig = tuple(shape), jnp.asarray(levels(sde), jnp.float32)

  def loop(model, keys, x, _):
    if x is None:
      x = sig[0] * common.initial_noise(keys, shape)

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


def nfe(sde, *, n_steps_each: int, denoise: bool, **_) -> int:
  """Network evaluations per sample: every level's steps and the final denoising step."""
  return sde.N * n_steps_each + denoise
