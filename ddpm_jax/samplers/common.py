"""What the samplers share: per-example noise streams, recorded steps, and running a
per-device sampling loop data-parallel.

A *loop* is a pure function loop(model, keys, x, extra) -> (x, info) for one device's slice
of the batch: model the Denoiser (core/denoiser.py; any per-example condition already bound),
keys [b] the examples' keys (None for deterministic maps), x [b, ...] a given start (x_T, or
data to encode) or None, extra any other per-example pytree (inpainting data and masks) or
None; info a dict of per-example arrays (the ODE's counted evaluations "nfe", recorded
steps). Each sampler module builds its loop from its process and options once (the builders
of samplers/table.py); `compile_loop` makes it one data-parallel program, and
config/sampler.py does that once per run with the network inside.

Randomness is drawn per example from its own key, so a batch gives the same samples on one
device or split over many.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ddpm_jax.core.broadcast import per_example
from ddpm_jax.infra import parallel


def initial_noise(keys, shape: Sequence[int]):
  """x_T ~ N(0, I) per example, from the first half of each example's key."""
  return jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[0], tuple(shape)))(keys)


def step_noise(keys, step, shape: Sequence[int]):
  """z ~ N(0, I) per example for sampler step `step`, from the second half of its key."""
  return jax.vmap(lambda k: jax.random.normal(
      jax.random.fold_in(jax.random.split(k)[1], step), tuple(shape)))(keys)


def data_noise(keys, step, shape: Sequence[int]):
  """z ~ N(0, I) per example for noising known data at step `step` (inpainting,
  colorization): a stream of its own, the third key of split(k, 3)."""
  return jax.vmap(lambda k: jax.random.normal(
      jax.random.fold_in(jax.random.split(k, 3)[2], step), tuple(shape)))(keys)


def check_t_start(t_start: float | None) -> float:
  """The fraction of the process's time T where sampling starts: 1 (from the prior) for
  None, else t_start ∈ (0, 1] (SDEdit)."""
  if t_start is None:
    return 1.0
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f"t_start must be in (0, 1] (the fraction of the process's time T at "
                     f"which editing starts; 1: from T), got {t_start}.")
  return float(t_start)


def first_state(keys, shape: Sequence[int], x, t_start: float | None, alpha, sigma,
                prior_std):
  """The loop's first state: x where given (x_T), else prior_std · z; with a t_start (SDEdit:
  the loop starts at t_0 = t_start·T, t_start ∈ (0, 1]), x is the data to edit, noised to the
  first time of the loop's grid: α(t_0) x + σ(t_0) z."""
  if t_start is None:
    return prior_std * initial_noise(keys, shape) if x is None else x
  if x is None:
    raise ValueError("Sampling from a t_start edits images: pass them as x (SDEdit).")
  return alpha * x + sigma * initial_noise(keys, shape).astype(x.dtype)


def known_start(process, keys, data, mask):
  """x_T for inpainting: the prior's draw σ_T z where unknown, the noise-free α(T) data where
  known, so that no sampler conditions the rest on the noise of the known part's draw (a
  deterministic one would carry it to the end: with it, 18% of the two-mode test's samples
  took the other mode)."""
  alpha_T = process.marginal_coef(jnp.full((data.shape[0],), process.T))[0]
  noise = process.prior_std() * initial_noise(keys, data.shape[1:])
  return (1 - mask) * noise + mask * per_example(alpha_T, data).astype(data.dtype) * data


def scan_recorded(step: Callable, x, steps, record_steps: Sequence[int]):
  """(x, info): x ← step(x, s)[0] for each s along the leading axis of `steps` (one lax.scan),
  where step(x, s) -> (x_next, x̂_0, t). With record_steps (K timesteps) info holds
  "records": {"x", "x0"} [B, K, ...], the state entering step t and its x̂_0, for each
  listed t."""
  buf = jnp.zeros((x.shape[0], len(record_steps)) + x.shape[1:], x.dtype)
  slots = jnp.asarray(record_steps, jnp.int32)

  def body(carry, s):
    x, records = carry
    x_next, x0, t = step(x, s)
    if record_steps:
      hit = (slots == t).reshape((1, -1) + (1,) * (x.ndim - 1))
      records = {"x": jnp.where(hit, x[:, None], records["x"]),
                 "x0": jnp.where(hit, x0[:, None], records["x0"])}
    return (x_next, records), None

  (x, records), _ = jax.lax.scan(body, (x, {"x": buf, "x0": buf}), steps)
  return x, ({"records": records} if record_steps else {})


def compile_loop(loop: Callable, make_model: Callable, mesh=None) -> Callable:
  """One compiled, data-parallel program of `loop`:
  run(model_args, key, batch_size, *, x_init=None, cond=None, known=None, extra=None) ->
  (x, info), where make_model(model_args) gives the Denoiser inside the program (model_args
  are its arrays, e.g. network parameters) and `key` (None for a deterministic loop) is split
  into one key per example. `cond` (e.g. labels [B]) and `known` (inpainting's (data, mask),
  both [B, ...]) are split with the batch and bound to the Denoiser; the result's known part
  is set to the data."""
  def device(model_args, batched):
    keys, x, cond, known, extra = batched
    model = make_model(model_args)
    if cond is not None or known is not None:
      model = model.bind(cond, known)
    if known is not None and x is None:
      x = known_start(model.process, keys, *known)
    x, info = loop(model, keys, x, extra)
    if known is not None:  # the known part is the data exactly
      data, mask = known
      x = mask * data + (1 - mask) * x
    return x, info

  program = parallel.data_parallel(device, mesh)

  def run(model_args, key, batch_size: int, *, x_init=None, cond=None, known=None,
          extra=None):
    keys = None if key is None else jax.random.split(key, batch_size)
    if known is not None:
      data, mask = known
      known = (data, jnp.broadcast_to(jnp.asarray(mask, data.dtype), data.shape))
    return program(model_args, (keys, x_init, cond, known, extra))
  return run


def run(loop: Callable, model: Callable, key, batch_size: int, *, mesh=None, x_init=None,
        cond=None, known=None, extra=None):
  """Runs `loop` once with a Denoiser: its arrays (those bound in a `jax.tree_util.Partial`
  network, the guidance weight) are arguments of the program, the rest static. This compiles
  for the call; to sample repeatedly, compile once with `compile_loop`."""
  arrays, rebuild = parallel.partition_arrays(model)
  return compile_loop(loop, rebuild, mesh)(arrays, key, batch_size, x_init=x_init, cond=cond,
                                           known=known, extra=extra)
