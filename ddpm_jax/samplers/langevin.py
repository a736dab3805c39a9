"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Alg. 1), one lax.scan per level.

For σ_1 > … > σ_L and α_i = ε σ_i² / σ_L², T steps per level:
  x ← x + (α_i / 2) s(x, σ_i) + √α_i z,
then optionally the denoising step x ← x + σ_L² s(x, σ_L) (Jolicoeur-Martineau et al. 2021).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.samplers import common


def ald_loop(sigmas: Sequence[float], shape: Sequence[int], *, step_lr: float = 2e-5,
             n_steps_each: int = 100, denoise: bool = True):
  """The per-device annealed Langevin loop (samplers/common.py) over decreasing `sigmas` for
  examples of `shape`, from N(0, σ_1² I) unless x is given; the model is score(x, σ)."""
  sig = np.asarray(sigmas, np.float64)
  if np.any(sig[1:] >= sig[:-1]):
    raise ValueError("sigmas must be strictly decreasing (σ_1 > … > σ_L); reverse them.")
  shape, sig = tuple(shape), jnp.asarray(sig, jnp.float32)

  def loop(score_fn, keys, x, _):
    if x is None:
      x = sig[0] * common.initial_noise(keys, shape)

    def level(x, i):
      sigma = jnp.full(x.shape[:1], sig[i])
      alpha = step_lr * (sig[i] / sig[-1])**2

      def step(x, j):
        z = common.step_noise(keys, i * n_steps_each + j, shape)
        return x + 0.5 * alpha * score_fn(x, sigma) + jnp.sqrt(alpha) * z, None

      x, _ = jax.lax.scan(step, x, jnp.arange(n_steps_each))
      return x, None

    x, _ = jax.lax.scan(level, x, jnp.arange(sig.shape[0]))
    if denoise:
      x = x + sig[-1]**2 * score_fn(x, jnp.full(x.shape[:1], sig[-1]))
    return x
  return loop


def annealed_langevin_sample(score_fn: Callable, sigmas: Sequence[float], key,
                             shape: Sequence[int], *, step_lr: float = 2e-5,
                             n_steps_each: int = 100, denoise: bool = True, x_init=None,
                             cond=None, mesh=None):
  """Samples from score_fn(x, σ[, cond]) over decreasing `sigmas` (e.g.
  schedules.geometric_sigmas), starting from N(0, σ_1² I) unless x_init is given."""
  loop = ald_loop(sigmas, shape[1:], step_lr=step_lr, n_steps_each=n_steps_each,
                  denoise=denoise)
  return common.run(loop, score_fn, key, shape[0], mesh=mesh, x_init=x_init, cond=cond)
