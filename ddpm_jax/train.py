"""The training loop: data-parallel steps, progress, checkpoints, sample grids, safe stops.

Stopping is always resumable: checkpoints are written atomically every
`training.checkpoint_every` steps, at the end, and when SIGTERM or SIGINT arrives (after
which `Interrupted` is raised: the command line exits 128 + the signal's number, 143 or 130,
so a scheduler can tell a preempted run from a finished one); a non-finite loss stops the
run without saving, so the last good checkpoint is what remains. Running the same command
on the same workdir resumes from the newest readable checkpoint; a newer unreadable one is
moved to WORKDIR/unreadable_checkpoints/ and its step written afresh, and metrics.jsonl
forgets the rows of the steps that are redone.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time

import jax
import numpy as np

from ddpm_jax import builders, checkpoint, data, files, images, parallel, runs, sampler_builder
from ddpm_jax.metrics_writer import MetricsWriter, log, progress_line


MAX_STEPS_AHEAD = 2  # dispatched steps the loop may run ahead of the device


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


class Interrupted(Exception):
  """SIGTERM or SIGINT stopped training after the state was saved."""

  def __init__(self, signum: signal.Signals, step: int):
    super().__init__(f"Received {signum.name}: saved step {step}; run the same command to "
                     f"resume.")
    self.exit_code = 128 + signum  # what a shell reports for a process the signal killed


class _StopSignals:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, _):
    self.received = signal.Signals(signum)

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def train_and_evaluate(config, workdir: str):
  """Trains per `config`, resuming from `workdir` if it holds a checkpoint; returns the
  final TrainState (replicated on the mesh)."""
  run = runs.start_run(config, workdir, batch_field="training.batch_size")
  t, mesh, k = config.training, run.mesh, config.training.steps_per_dispatch
  manager = checkpoint.make_manager(run.checkpoint_dir, t.keep_checkpoints)
  state = builders.init_state(config, run.model, run.shape)
  restored = checkpoint.restore_latest(manager, state, set_aside=True)
  if restored is not None:
    state = restored
    log(f"Resuming from step {int(state.step)} in {run.workdir}")
  if parallel.is_main_process():
    with files.atomic_open(os.path.join(run.workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  log(f"{n_params / 1e6:.2f}M parameters; {mesh.size} device(s); global batch {t.batch_size}")

  start = int(state.step)
  state = parallel.replicate(state, mesh)
  p_step = builders.make_step(config, run.model, mesh)
  sample_fn = sampler_builder.make_sampler(config, run.model, run.shape, mesh)
  host_batches = data.iterate_batches(
      run.source, start, num_workers=config.data.num_workers, steps_per_item=k,
      global_batch=t.batch_size, image_size=config.data.image_size, seed=config.seed,
      random_flip=config.data.random_flip, process_index=jax.process_index(),
      process_count=jax.process_count())
  batches = parallel.prefetch_to_device(host_batches, mesh, steps_per_dispatch=k)
  writer = MetricsWriter(run.workdir, resumed_at=start)
  in_flight = collections.deque()  # metrics of the dispatched steps, newest last
  step, last_step, last_time, waited = start, start, time.time(), 0.0
  with _StopSignals() as stop, contextlib.closing(host_batches):
    while step < t.num_train_steps and stop.received is None:
      before = time.perf_counter()
      batch = next(batches)
      waited += time.perf_counter() - before
      with jax.transfer_guard("disallow"):  # the step moves nothing between host and device
        state, metrics = p_step(state, batch)
      in_flight.append(metrics)
      if len(in_flight) > MAX_STEPS_AHEAD:  # wait (no transfer) so dispatch stays near the device
        jax.block_until_ready(in_flight.popleft())
      step += k
      if step == start + k:  # compilation: rates and the ETA are measured from here on
        jax.block_until_ready(metrics)
        log(f"Step {step} compiled and ran in {time.time() - last_time:.1f}s")
        last_step, last_time, waited = step, time.time(), 0.0
      done = step == t.num_train_steps
      if step % t.log_every == 0 or done or stop.received or step % t.checkpoint_every == 0:
        m = {key: float(v) for key, v in jax.device_get(metrics).items()}
        if not all(np.isfinite(v) for v in m.values()):
          last_good = manager.latest_step()
          kept = ("there is no checkpoint yet" if last_good is None else
                  f"the last good checkpoint is step {last_good}")
          raise NonFiniteLossError(
              f"Non-finite loss or gradient at step {step} ({m}); stopped without saving, "
              f"{kept}. Lower optim.learning_rate or check the data.")
        if (step % t.log_every == 0 or done) and step > last_step:
          now = time.time()
          rate = (step - last_step) * t.batch_size / max(now - last_time, 1e-9)
          wait = waited / max(now - last_time, 1e-9)
          eta = (t.num_train_steps - step) * t.batch_size / max(rate, 1e-9)
          writer.scalars(step, {**m, "images_per_sec": rate, "data_wait_fraction": wait})
          log(progress_line(step, t.num_train_steps, m, rate, eta, wait))
          last_step, last_time, waited = step, now, 0.0
        elif step % t.log_every == 0 or done:  # the first step: no rate measured yet
          writer.scalars(step, m)
          log(progress_line(step, t.num_train_steps, m))
      if step % t.checkpoint_every == 0 or done or stop.received:
        checkpoint.save(manager, state)
      if done or (t.sample_every and step % t.sample_every == 0):
        params = state.ema_params if config.sampling.use_ema else state.params
        write_samples(sample_fn, params, config.sampling, run, step, writer)
  manager.wait_until_finished()
  writer.close()
  if stop.received:
    interrupted = Interrupted(stop.received, step)
    log(str(interrupted))
    raise interrupted
  return state


def write_samples(sample_fn, params, sampling, run, step, writer) -> str:
  """A grid of sampling.num_samples (at most 64, rounded up to the devices) samples with
  sampling.seed."""
  num = -(-min(sampling.num_samples, 64) // run.mesh.size) * run.mesh.size
  x, nfe = sample_fn(params, jax.random.key(sampling.seed), num)
  grid = images.make_grid(parallel.to_host(x), scale=max(1, 64 // run.shape[0]))
  path = os.path.join(run.workdir, "samples", f"step_{step:08d}.png")
  if parallel.is_main_process():
    images.save_png(path, grid)
  writer.image(step, "samples", grid)
  log(f"Samples at step {step} ({nfe:.0f} network evaluations each) -> {path}")
  return path
