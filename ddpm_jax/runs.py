"""What every mode starts with: the workdir prepared, the config validated, the mesh, the
data source, the model, and for the modes that use a trained model its parameters.

  run = start_run(config, workdir, batch_field="training.batch_size")   # --mode train
  run, params, step = load_run(config, workdir, batch_field="sampling.batch_size")

and what the modes that generate many samples share: `results_name` (what their files are
called) and `resumable_chunks`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable

import numpy as np
from etils import epath
from jax.sharding import Mesh

from ddpm_jax import builders, checkpoint, files, parallel, sampler_builder
from ddpm_jax.metrics_writer import log
from ddpm_jax.models.unet import UNet


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: str       # absolute or a URI (gs://…), created, writable
  mesh: Mesh         # every device of every host, axis "data"
  source: Any        # random access to the split's images (data.py)
  shape: tuple       # (S, S, C) of the preprocessed images
  model: UNet

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, "checkpoints")


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


def start_run(config, workdir: str, *, batch_field: str, split: str | None = None) -> Run:
  """Prepares the workdir, validates the config, checks that the batch size named by
  `batch_field` (e.g. "sampling.batch_size") divides over the devices, opens the data split
  (default data.split) and builds the model."""
  workdir = prepare_workdir(workdir)
  builders.validate(config)
  mesh = parallel.make_mesh()
  batch_size = functools.reduce(getattr, batch_field.split("."), config)
  parallel.check_divisible(batch_size, mesh, batch_field)
  source = builders.build_source(config, split)
  shape = builders.image_shape(config, source)
  return Run(workdir, mesh, source, shape, builders.build_model(config, shape[-1]))


def load_run(config, workdir: str, *, batch_field: str, split: str | None = None
             ) -> tuple[Run, Any, int]:
  """`start_run`, then `restore_params`: (run, params, step)."""
  run = start_run(config, workdir, batch_field=batch_field, split=split)
  return (run, *restore_params(config, run))


def restore_params(config, run: Run) -> tuple[Any, int]:
  """(params, step) of the newest readable checkpoint of the run's workdir: the EMA
  parameters unless config.sampling.use_ema is False."""
  manager = checkpoint.make_manager(run.checkpoint_dir)
  if not manager.all_steps():  # before building a template to restore into
    raise FileNotFoundError(f"No checkpoint in {run.checkpoint_dir}; train first with "
                            f"--mode train and the same --workdir.")
  state = checkpoint.restore_latest(manager, builders.init_state(config, run.model, run.shape))
  params = state.ema_params if config.sampling.use_ema else state.params
  return parallel.replicate(params, run.mesh), int(state.step)


def results_name(config, step: int, params, **extra) -> tuple[str, dict]:
  """(name, settings) for the files that sampling `params` (checkpoint `step`) with `config`
  makes: sampler, steps, η, guidance, EMA choice, step and seed in words, then a digest of
  every setting that changes the samples — all of config.sampling, the model, the diffusion
  or SDE and the objective, the image size, the step, a digest of the parameters themselves,
  the samplers' revision (sampler_builder.REVISION) and `extra` (e.g. an evaluation's chunk
  size) — so files made with other settings never share a name. E.g.
  'ddim50_eta0_ema_step800000_seed0_1a2b3c4d'."""
  s = config.sampling
  settings = {**{k: config[k].to_dict() for k in ("sampling", "model", "diffusion", "sde")},
              "objective": config.training.objective, "image_size": config.data.image_size,
              "num_classes": builders.num_classes(config), "step": step,
              "params_digest": checkpoint.digest(params),
              "sampler_revision": sampler_builder.REVISION, **extra}
  stepped = ("ddim", "ode", "dpm_solver", "unipc", "edm")
  words = [f"{s.method}{s.num_steps if s.method in stepped else ''}"]
  if s.method == "ddim":
    words.append(f"eta{s.eta:g}")
  if config.model.conditional:
    words.append(f"w{s.guidance_weight:g}")
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
  paths = [os.path.join(directory, f"chunk_{i:05d}.npz") for i in range(num_chunks)]
  written = parallel.agree(np.array([files.exists(p) for p in paths], bool))  # process 0's view
  if written.any():
    log(f"{int(written.sum())} of {num_chunks} chunks already in {directory}; making the rest")
  chunks = []
  for i, path in enumerate(paths):
    if written[i]:
      chunks.append(files.load_npz(path))
      continue
    chunks.append(make(i))
    if parallel.is_main_process():
      files.save_npz(path, **chunks[-1])
  return chunks
