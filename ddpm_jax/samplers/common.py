"""Pieces shared by the samplers: per-example randomness and recording chosen steps.

Randomness is drawn per example from its own key, so a batch gives the same samples on
one device or split over many.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ddpm_jax import parallel


def initial_noise(keys, shape: Sequence[int]):
  """x_T ~ N(0, I) per example, from the first half of each example's key."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[0], tuple(shape)))(keys)


def step_noise(keys, step, shape: Sequence[int]):
  """z ~ N(0, I) per example for sampler step `step`, from the second half of its key."""
  return jax.vmap(lambda k: jax.random.normal(
      jax.random.fold_in(jax.random.split(k)[1], step), tuple(shape)))(keys)


def empty_records(x, record_steps: Sequence[int]):
  """Buffers [B, K, ...] for the states and x̂_0 predictions at K chosen timesteps."""
  buf = jnp.zeros((x.shape[0], len(record_steps)) + x.shape[1:], x.dtype)
  return {"x": buf, "x0": buf}


def record(records, record_steps: Sequence[int], t, x, x0):
  """Stores x and x0 in the slots whose timestep equals t (a no-op for other t)."""
  if not record_steps:
    return records
  hit = (jnp.asarray(record_steps) == t).reshape((1, -1) + (1,) * (x.ndim - 1))
  return {"x": jnp.where(hit, x[:, None], records["x"]),
          "x0": jnp.where(hit, x0[:, None], records["x0"])}


def run(device_fn: Callable, model: Callable, schedule, key, batch_size: int, *,
        mesh=None, x_init=None, cond=None, extra=None):
  """Runs device_fn((model, schedule), (keys, x_init, cond, extra)) data-parallel over `mesh`.

  `cond` (e.g. class labels [B]) is split with the batch and passed to the model as its
  third argument; `extra` is any other per-example pytree (e.g. inpainting data and masks).
  `device_fn` is a functools.partial of a module-level sampler loop with hashable options,
  so repeated calls with equal options reuse one compiled program.
  """
  keys = jax.random.split(key, batch_size)
  return parallel.run_batched(device_fn, (parallel.as_pytree_callable(model), schedule),
                              (keys, x_init, cond, extra), mesh)


def unpack(replicated, batched):
  """(model(x, t), schedule, keys, x_init, extra) inside a device function, with any
  per-example condition bound to the model."""
  model, schedule = replicated
  keys, x_init, cond, extra = batched
  if cond is not None:
    model = functools.partial(_with_cond, model, cond)
  return model, schedule, keys, x_init, extra


def _with_cond(model, cond, x, t):
  return model(x, t, cond)


def sampler_output(x, records, record_steps):
  return (x, records) if record_steps else x

