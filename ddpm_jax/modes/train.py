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
from typing import NamedTuple

import jax
import numpy as np
from etils import epath

from ddpm_jax.config import build
from ddpm_jax.data import batches
from ddpm_jax.infra import files, images, parallel
from ddpm_jax.infra.metrics_writer import MetricsWriter, log, progress_line
from ddpm_jax.modes import runs
from ddpm_jax.objectives import rows
from ddpm_jax.training import checkpoint, snapshots

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


class Cadence(NamedTuple):
  """Which of the periodic actions a step is due for (training.* every-N settings)."""
  total: int
  log_every: int
  checkpoint_every: int
  sample_every: int
  snapshot_every: int = 0  # post-hoc EMA snapshots (0: none)

  def due(self, step: int, stopping: bool) -> dict[str, bool]:
    """log: a progress row; save: a checkpoint (at the end and on a stop too); samples: a
    grid; snapshot: post-hoc EMA's (every snapshot_every steps and at the end, never on a
    stop, so the snapshots' steps do not depend on interruptions); check: read the metrics
    (before a row or a save, which needs a finite loss)."""
    done = step == self.total
    log_row = step % self.log_every == 0 or done
    save = step % self.checkpoint_every == 0 or done or stopping
    samples = done or bool(self.sample_every and step % self.sample_every == 0)
    snapshot = bool(self.snapshot_every) and (step % self.snapshot_every == 0 or done)
    return {"log": log_row, "save": save, "samples": samples, "snapshot": snapshot,
            "check": log_row or save or snapshot}


class Rates:
  """Images per second, the fraction of time spent waiting for data, and the ETA, measured
  from the end of the first step (which compiles) on."""

  def __init__(self, step: int, batch_size: int, total: int):
    self.step, self.time, self.waited = step, time.time(), 0.0
    self.batch_size, self.total, self.measuring = batch_size, total, False

  @contextlib.contextmanager
  def waiting(self):
    before = time.perf_counter()
    yield
    self.waited += time.perf_counter() - before

  def start(self, step: int) -> float:
    """Starts measuring after the first step; returns the seconds it took."""
    took = time.time() - self.time
    self.step, self.time, self.waited, self.measuring = step, time.time(), 0.0, True
    return took

  def measure(self, step: int) -> tuple[float, float, float] | None:
    """(img/s, data wait fraction, ETA s) since the last measurement, None before any."""
    if not self.measuring or step <= self.step:
      return None
    now = time.time()
    elapsed = max(now - self.time, 1e-9)
    rate = (step - self.step) * self.batch_size / elapsed
    out = rate, self.waited / elapsed, (self.total - step) * self.batch_size / max(rate, 1e-9)
    self.step, self.time, self.waited = step, now, 0.0
    return out


def reads(config) -> tuple:
  """The fields this mode reads besides those its build reads (config/reads.py): the loop's
  cadence and data, and the sample grids' (not a classifier's: it makes none)."""
  t = config.training
  own = ("seed", "data.num_workers", "data.random_flip", "data.image_size",
         "training.num_train_steps", "training.log_every", "training.checkpoint_every",
         "training.sample_every", "training.keep_checkpoints", "training.steps_per_dispatch",
         "training.batch_size")
  phema = ("training.phema_every",) if t.phema_sigma_rels else ()
  grids = () if t.objective == "classifier" else (
      "sampling.num_samples", "sampling.seed", "sampling.use_ema")
  return own + phema + grids


def train_and_evaluate(config, workdir: str, overrides=None):
  """Trains per `config`, resuming from `workdir` if it holds a checkpoint; returns the
  final TrainState (replicated on the mesh). The config gate builds the step and the sampler
  before the workdir, its checkpoints or its config.json are touched; the workdir's lock is
  held from then on (one writer per workdir: runs.one_writer)."""
  run = runs.start_run(config, workdir, "train", overrides, reads(config))
  with runs.one_writer(run.workdir):
    return _train(config, run)


def _resume(config, run: runs.Run):
  """(checkpoint manager, the newest readable state or a fresh one, its step)."""
  manager = checkpoint.make_manager(run.checkpoint_dir, config.training.keep_checkpoints)
  checkpoint.set_aside_strays(manager)
  state = build.train_state(config, run.plan.model, run.plan.shape)
  try:
    restored = checkpoint.restore_latest(manager, state, set_aside=True)
  except checkpoint.CheckpointMismatchError as e:
    raise runs.named_mismatch(e, config, run.workdir) from None
  if restored is not None:
    state = restored
    log(f"Resuming from step {int(state.step)} in {run.workdir}")
  return manager, state, int(state.step)


def record_settings(config, workdir: str, start: int):
  """Writes the run's record of settings, WORKDIR/config.json, which always describes the
  checkpoints beside it: at once for a new run (or an unchanged resume); for a resume at step
  `start` that changes settings, the old file is kept as config.<start>.json and config.json
  is replaced only once the resumed run has saved — the returned callable does that (None
  when nothing waits); a run that fails before its first save leaves the record as it was."""
  path, text = os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2)
  changed = runs.changed_settings(path, text) if start else []
  if not changed:
    if parallel.is_main_process():
      files.save_text(path, text)
    return None
  kept = os.path.join(workdir, f"config.{start}.json")
  if parallel.is_main_process():
    files.save_text(kept, epath.Path(path).read_text())
  log(f"Resuming with {len(changed)} setting(s) changed since {path}: "
      f"{'; '.join(changed[:8])}{' …' if len(changed) > 8 else ''}. The settings that trained "
      f"steps up to {start} are kept in {kept}; config.json takes the new ones once this run "
      f"saves a checkpoint.")

  def replace():
    if parallel.is_main_process():
      files.save_text(path, text)
  return replace


def _train(config, run: runs.Run):
  plan, t, k = run.plan, config.training, config.training.steps_per_dispatch
  manager, state, start = _resume(config, run)
  if start >= t.num_train_steps:
    log(f"Nothing to train: {run.workdir} is at step {start}, "
        f"{'past' if start > t.num_train_steps else 'at'} training.num_train_steps="
        f"{t.num_train_steps}; raise it to train further (nothing was written).")
    return parallel.replicate(state, run.mesh)
  snapshot_manager = None
  if t.phema_sigma_rels:
    snapshot_manager = snapshots.make_manager(run.workdir)
    snapshots.forget_after(snapshot_manager, start)
  pending = record_settings(config, run.workdir, start)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  log(f"{n_params / 1e6:.2f}M parameters; {run.mesh.size} device(s); global batch "
      f"{t.batch_size}")
  state = parallel.replicate(state, run.mesh)
  host_batches = batches.iterate_batches(
      plan.source, start, num_workers=config.data.num_workers, steps_per_item=k,
      global_batch=t.batch_size, image_size=config.data.image_size, seed=config.seed,
      random_flip=config.data.random_flip, process_index=jax.process_index(),
      process_count=jax.process_count())
  device_batches = parallel.prefetch_to_device(host_batches, run.mesh, steps_per_dispatch=k)
  writer = MetricsWriter(run.workdir, resumed_at=start)
  cadence = Cadence(t.num_train_steps, t.log_every, t.checkpoint_every, t.sample_every,
                    t.phema_every if t.phema_sigma_rels else 0)
  rates = Rates(start, t.batch_size, t.num_train_steps)
  in_flight = collections.deque()  # metrics of the dispatched steps, newest last
  step = start
  with _StopSignals() as stop, contextlib.closing(host_batches):
    while step < t.num_train_steps and stop.received is None:
      with rates.waiting():
        batch = next(device_batches)
      with jax.transfer_guard("disallow"):  # the step moves nothing between host and device
        state, metrics = plan.step_fn(state, batch)
      in_flight.append(metrics)
      if len(in_flight) > MAX_STEPS_AHEAD:  # wait (no transfer) so dispatch stays near the device
        jax.block_until_ready(in_flight.popleft())
      step += k
      if step == start + k:  # compilation: rates and the ETA are measured from here on
        jax.block_until_ready(metrics)
        log(f"Step {step} compiled and ran in {rates.start(step):.1f}s")
      due = cadence.due(step, stop.received is not None)
      if due["check"]:
        m = _finite_metrics(metrics, step, manager, nan_hint(t.objective))
        if due["log"]:
          _log_row(writer, rates, step, t.num_train_steps, m)
      if due["save"]:
        checkpoint.save(manager, state)
        if pending is not None:  # the resumed run's first checkpoint (saved whole): the record
          pending()
          pending = None
      if due["snapshot"]:
        snapshots.save(snapshot_manager, state, t.phema_sigma_rels)
      if due["samples"] and plan.sample_fn is not None:  # a classifier does not sample
        params = state.ema_params if config.sampling.use_ema else state.params
        write_samples(plan.sample_fn, params, config.sampling, run, step, writer)
  manager.wait_until_finished()
  writer.close()
  if stop.received:
    interrupted = Interrupted(stop.received, step)
    log(str(interrupted))
    raise interrupted
  return state


def _log_row(writer, rates: Rates, step: int, total: int, m: dict) -> None:
  """A progress line and the metrics (with img/s and the data wait after the first step)."""
  measured = rates.measure(step)
  if measured is None:  # the first step: no rate measured yet
    writer.scalars(step, m)
    log(progress_line(step, total, m))
  else:
    rate, wait, eta = measured
    writer.scalars(step, {**m, "images_per_sec": rate, "data_wait_fraction": wait})
    log(progress_line(step, total, m, rate, eta, wait))


def nan_hint(objective: str) -> str:
  """Besides the learning rate and the data, what can make the objective's loss non-finite
  (its row, objectives/rows.py)."""
  if objective == "classifier":
    return rows.CLASSIFIER_NAN_HINT
  return rows.get(objective).nan_hint


def _finite_metrics(metrics, step: int, manager, hint: str) -> dict[str, float]:
  """The step's metrics on the host; NonFiniteLossError (nothing saved) if any is NaN/inf,
  except on a step that float16's loss scaling skipped (its update was not applied)."""
  m = {key: float(v) for key, v in jax.device_get(metrics).items()}
  if m.get("skipped"):  # float16: an overflowing step was skipped and the loss scale halved
    log(f"Step {step}: non-finite gradient in float16, update skipped; loss scale now "
        f"{m['loss_scale'] / 2:g}")
    return {k: v for k, v in m.items() if np.isfinite(v)}
  if not all(np.isfinite(v) for v in m.values()):
    last_good = manager.latest_step()
    kept = ("there is no checkpoint yet" if last_good is None else
            f"the last good checkpoint is step {last_good}")
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at step {step} ({m}); stopped without saving, "
        f"{kept}. Lower optim.learning_rate, or check the data and {hint}.")
  return m


def sample_grid(sample_fn, params, sampling, num_devices: int, shape):
  """(uint8 grid, NFE per sample) of sampling.num_samples (at most 64, rounded up to the
  devices) samples with sampling.seed, upscaled to at least 64 pixels per image."""
  num = -(-min(sampling.num_samples, 64) // num_devices) * num_devices
  x, nfe = sample_fn(params, jax.random.key(sampling.seed), num)
  return images.make_grid(parallel.to_host(x), scale=max(1, 64 // shape[0])), nfe


def write_samples(sample_fn, params, sampling, run, step, writer) -> str:
  """The sample grid (sample_grid) as WORKDIR/samples/step_N.png and a TensorBoard image."""
  grid, nfe = sample_grid(sample_fn, params, sampling, run.mesh.size, run.shape)
  path = os.path.join(run.workdir, "samples", f"step_{step:08d}.png")
  if parallel.is_main_process():
    images.save_png(path, grid)
  writer.image(step, "samples", grid)
  log(f"Samples at step {step} ({nfe:.0f} network evaluations each) -> {path}")
  return path
