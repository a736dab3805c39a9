"""What every mode starts with: the config gate (config/validate.py), then the workdir, and
for the modes that use a trained model its parameters.

  run = start_run(config, workdir, "train")                   # run.plan: what the gate built
  run, params, step = load_run(config, workdir, "sample")

and what the modes that generate many samples share: `results_name` (what their files are
called) and `resumable_chunks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Callable

import numpy as np
from etils import epath
from jax.sharding import Mesh

from ddpm_jax.config import build, load, sampler, validate
from ddpm_jax.infra import compile_cache, files, lock, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.training import checkpoint


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: str       # absolute or a URI (gs://…), created, writable
  plan: validate.Plan  # what the mode runs, built by the config gate

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, "checkpoints")

  @property
  def mesh(self) -> Mesh:
    return self.plan.mesh

  @property
  def shape(self) -> tuple:
    return self.plan.shape


def prepare_workdir(workdir: str) -> str:
  """Creates the workdir and checks that it is writable, with a one-line error if not (the
  writing process only: the others write nothing)."""
  workdir = files.resolve(workdir)
  if not parallel.is_main_process():
    return workdir
  try:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test_{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise PermissionError(f"Cannot write to workdir {workdir!r} ({e.strerror or e}); choose "
                          f"a writable --workdir.") from None
  return workdir


@contextlib.contextmanager
def one_writer(workdir: str):
  """Holds the workdir's lock (infra/lock.py) for the block: process 0 takes it, every
  process learns whether it could (so that all stop together with one line), and it is
  released on any exit of the block."""
  held, error = None, None
  if parallel.is_main_process():
    held = lock.WorkdirLock(workdir, " ".join(sys.argv))
    try:
      held.acquire()
    except lock.WorkdirLocked as e:
      held, error = None, e
  if not parallel.agree(error is None):
    raise error or lock.WorkdirLocked(f"Process 0 could not lock {workdir}: another run is "
                                      f"writing it (process 0's error says which).")
  try:
    yield
  finally:
    if held is not None:
      held.release()


def start_run(config, workdir: str, mode: str, overrides=None, reads: tuple = ()) -> Run:
  """The config gate (config/validate.py: checks and builds everything the mode runs; `reads`
  the fields the mode's own code reads), then the workdir: nothing is written for a config
  that the gate refuses."""
  plan = validate.validate(config, mode, overrides, reads)
  compile_cache.enable(config.compilation_cache)  # before the mode compiles anything
  return Run(prepare_workdir(workdir), plan)


def load_run(config, workdir: str, mode: str, overrides=None, reads: tuple = ()
             ) -> tuple[Run, Any, int]:
  """`start_run`, then `restore_params`: (run, params, step)."""
  run = start_run(config, workdir, mode, overrides, reads)
  return (run, *restore_params(config, run))


def changed_settings(path: str, text: str) -> list[str]:
  """'field old → new' for each dotted field whose value in the config JSON `text` differs
  from the one in the file at `path` (none when the file is absent or unreadable)."""
  try:
    old = _flat(json.loads(epath.Path(path).read_text()))
  except (OSError, ValueError):
    return []
  new = _flat(json.loads(text))
  return [f"{k} {old.get(k, '(absent)')} → {new.get(k, '(absent)')}"
          for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def named_mismatch(error, config, workdir: str) -> Exception:
  """A checkpoint of other shapes than `config` builds, with the settings that differ from
  the workdir's config.json named first (where any do)."""
  path = os.path.join(workdir, "config.json")
  changed = changed_settings(path, config.to_json_best_effort())
  if not changed:
    return error
  return checkpoint.CheckpointMismatchError(
      f"Settings changed since {path} change what the checkpoints hold: "
      f"{'; '.join(changed[:6])}{' …' if len(changed) > 6 else ''}; set them back (or use a "
      f"new --workdir). {error}")


def check_process(config, workdir: str) -> None:
  """The process `config` samples is the one the run was trained on: each field that defines
  it (the objective's row, objectives/rows.py) as the workdir's config.json has it; a
  difference is a one-line ValueError naming the field (none without a config.json)."""
  path = os.path.join(workdir, "config.json")
  if not files.exists(path):
    return
  trained = load.run_config(path)
  for name in ["training.objective", *build.process_fields(config)]:
    try:
      theirs = load.value(trained, name)
    except ValueError:  # a config.json without the field (written by hand, or older)
      continue
    mine = load.value(config, name)
    if mine != theirs:
      raise ValueError(f"{path} says {name}={theirs!r} (the process the run was trained on); "
                       f"this run has {mine!r}: drop the setting, or pass --config {path}.")


def restore_params(config, run: Run) -> tuple[Any, int]:
  """(params, step) of the newest readable checkpoint of the run's workdir: the EMA
  parameters unless config.sampling.use_ema is False; with a guiding classifier (its EMA
  parameters), params = (the network's, the classifier's). The process is checked against
  the run's config.json first (check_process)."""
  check_process(config, run.workdir)
  try:
    state = _restore(run.checkpoint_dir, run.plan.template, "train first with --mode train "
                     "and the same --workdir")
  except checkpoint.CheckpointMismatchError as e:
    raise named_mismatch(e, config, run.workdir) from None
  params = state.ema_params if config.sampling.use_ema else state.params
  clf = run.plan.classifier
  if clf is not None:
    params = (params, _restore(clf.checkpoint_dir, clf.template, "train the classifier "
                               "first (--mode train on sampling.classifier_workdir)").ema_params)
  return parallel.replicate(params, run.mesh), int(state.step)


def _restore(checkpoint_dir: str, template, advice: str):
  manager = checkpoint.make_manager(checkpoint_dir)
  if not manager.all_steps():  # before building a template to restore into
    raise FileNotFoundError(f"No checkpoint in {checkpoint_dir}; {advice}.")
  return checkpoint.restore_latest(manager, template)


def results_name(config, read, step: int, params, **extra) -> tuple[str, dict]:
  """(name, settings) for the files that sampling `params` (checkpoint `step`) with `config`
  makes: sampler, steps, η, guidance, EMA choice, step and seed in words, then a digest of
  every setting that changes the samples — the config.sampling fields the run reads (`read`,
  its Plan's: not, say, sampling.batch_size in --mode eval), the model, the diffusion
  or SDE and the objective, the image size, the step, a digest of the parameters themselves,
  the samplers' revision (config/sampler.py REVISION) and `extra` (e.g. an evaluation's chunk
  size) — so files made with other settings never share a name. E.g.
  'ddim50_eta0_ema_step800000_seed0_1a2b3c4d'."""
  s = config.sampling
  settings = {"sampling": {k: v for k, v in s.to_dict().items() if f"sampling.{k}" in read},
              **{k: config[k].to_dict() for k in ("model", "diffusion", "sde")},
              **({"flow": config.flow.to_dict()} if config.training.objective == "flow"
                 else {}),
              "objective": config.training.objective, "image_size": config.data.image_size,
              "num_classes": build.num_classes(config), "step": step,
              "params_digest": checkpoint.digest(params),
              "sampler_revision": sampler.REVISION, **extra}
  stepped = "num_steps" in sampler.option_names(s.method)  # its row reads the step count
  words = [f"{s.method}{s.num_steps if stepped else ''}"]
  if s.method == "ddim":
    words.append(f"eta{s.eta:g}")
  if config.model.conditional:
    words.append(f"w{s.guidance_weight:g}")
  if s.classifier_scale:
    words.append(f"cg{s.classifier_scale:g}")
  words += ["ema" if s.use_ema else "raw", f"step{step}", f"seed{s.seed}"]
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
  return "_".join(words + [key]), settings


def resumable_chunks(directory: str, num_chunks: int,
                     make: Callable[[int], dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
  """Chunks 0…num_chunks−1, each a dict of arrays: chunk i is read from
  DIRECTORY/chunk_{i:05d}.npz where an earlier, interrupted run wrote it, else made by
  make(i) and written (atomically, by process 0) before chunk i+1 starts — so a killed run
  loses at most the chunk in progress. make(i) must depend on i alone (e.g. a key folded
  with i), so resumed chunks equal those of an uninterrupted run."""
  names = [f"chunk_{i:05d}.npz" for i in range(num_chunks)]
  present = files.names(directory)  # one listing, not a lookup per chunk
  written = parallel.agree(np.array([name in present for name in names], bool))
  if written.any():
    log(f"{int(written.sum())} of {num_chunks} chunks already in {directory}; making the rest")
  chunks = []
  for i, path in enumerate(os.path.join(directory, name) for name in names):
    if written[i]:
      chunks.append(files.load_npz(path))
      continue
    chunks.append(make(i))
    if parallel.is_main_process():
      files.save_npz(path, **chunks[-1])
  return chunks
