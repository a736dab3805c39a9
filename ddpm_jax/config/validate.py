"""The gate every mode passes before it touches anything: the schema (config/schema.py), the
command-line settings the run would ignore, then a dry build of every host-side object the
mode will use — the data source and image shape, the network's shapes, the sampler's loop
(its step grid and coefficients), the loss and train step, the bits/dim function, the FID
reference split and weights. Building is cheap (`jax.jit` compiles lazily), so a bad config
fails here in seconds with one line, before a workdir is created, a config.json written or a
checkpoint read; and what was built is what the mode then runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from jax.sharding import Mesh

from ddpm_jax.config import build, edit_inputs, guidance, memory, reads, sampler, schema
from ddpm_jax.evaluation import fid, inception
from ddpm_jax.infra import compile_cache, parallel
from ddpm_jax.objectives import rows

BATCH_FIELDS = {"train": "training.batch_size", "sample": "sampling.batch_size",
                "edit": "sampling.batch_size", "reflow": "sampling.batch_size",
                "bpd": "eval.batch_size", "eval": "fid.chunk_size"}


@dataclasses.dataclass(frozen=True)
class Reference:
  """The FID reference: a data split's first `count` images (features computed by the mode),
  or published statistics (fid.reference_stats: μ, Σ and the features where the file has
  them)."""
  source: Any = None
  count: int = 0
  stats: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a mode runs, built from a valid config; nothing here has touched the disk."""
  mode: str
  mesh: Mesh                 # every device of every host, axis "data"
  source: Any                # the mode's split (eval.split for bpd, else data.split)
  shape: tuple               # (S, S, C) of the preprocessed images
  model: Any                 # the network module (config/build.py NETWORK_ROWS)
  template: Any              # the TrainState's shapes and dtypes (what a checkpoint holds)
  sample_fn: Callable | None = None   # train, sample, eval (config/sampler.py)
  step_fn: Callable | None = None     # train
  bpd_fn: Callable | None = None      # bpd
  reference: Reference | None = None  # eval
  classifier: guidance.Classifier | None = None  # sample, eval, edit: sampling.classifier_scale
  edit: edit_inputs.Inputs | None = None  # edit
  reads: frozenset = frozenset()  # the fields the build read (config/reads.py)


def validate(config, mode: str, overrides: Mapping | None = None,
             mode_reads: tuple = ()) -> Plan:
  """Checks `config` for `mode` and builds what the mode runs, recording the fields the build
  reads (config/reads.py); with `mode_reads`, the fields or sections that the mode's own code
  reads (declared beside it, modes/*.py READS), they are the run's `Plan.reads`. `overrides`
  are the fields set on the command line (dotted names): one the run does not read is
  refused. Raises ValueError (or FileNotFoundError for a missing file) with one line."""
  if mode not in schema.MODES:
    raise ValueError(f"Unknown mode {mode!r}; use one of {schema.MODES}.")
  schema.check(config)
  memory.check_schedule(config)
  recorder = reads.Recorder(config)
  compile_cache.check(recorder.compilation_cache)
  if build.classifies(config) and mode != "train":
    raise ValueError(f"A training.objective 'classifier' run is trained (--mode train), not "
                     f"used with --mode {mode}: guide a model's sampler with it via "
                     f"sampling.classifier_workdir and sampling.classifier_scale.")
  mesh = parallel.make_mesh()
  batch_field = BATCH_FIELDS.get(mode)  # import, export: no batches
  if batch_field:
    parallel.check_divisible(schema.field(recorder, batch_field), mesh, batch_field)
  if mode == "train":
    _check_micro_batches(config, mesh)
  if mode == "phema" and not config.training.phema_sigma_rels:
    raise ValueError("--mode phema reconstructs from the snapshots of a run trained with "
                     "training.phema_sigma_rels (e.g. (0.05, 0.10)); set it as the run was "
                     "trained.")
  if mode in ("eval", "bpd") and config.data.dataset == "pairs":
    raise ValueError(f"--mode {mode} measures against real data, not reflow's pairs: set "
                     f"--config.data.dataset (and data.path) to the data of the first "
                     f"rectification.")
  plan = _build(recorder, mode, mesh, batch_field)
  # training.phema_sigma_rels: the checkpoint's layout (its EMA profiles), in every mode.
  read = frozenset(recorder.seen | reads.expand(config, mode_reads)
                   | {"training.phema_sigma_rels"})
  unread = [name for name in overrides or () if name not in read]
  if unread:
    raise ValueError(schema.unread_message(config, mode, unread[0]))
  return dataclasses.replace(plan, reads=read)


def _build(config, mode: str, mesh, batch_field) -> Plan:
  """What `mode` runs (all but the Plan's `reads`), built from `config`, a Recorder."""
  source = build.source(config, config.eval.split if mode == "bpd" else None)
  shape = build.image_shape(config, source)
  model = build.model(config, shape[-1])
  # The checkpoint's layout (the optimizer's state, the loss history) whatever the mode: read,
  # not counted as a setting of this run except where it trains.
  template = build.train_state(config if mode == "train" else reads.unrecorded(config), model,
                               shape, abstract=True)
  memory.check_devices(config, mode, template, shape, batch_field,
                       schema.field(config, batch_field) if batch_field else None)
  memory.check_gathered(config, mode, shape)
  plan = Plan(mode, mesh, source, shape, model, template)
  if mode in ("sample", "eval", "edit"):
    clf = guidance.classifier(config, shape)
    t_start = None
    if mode == "edit":
      plan = dataclasses.replace(plan, edit=_edit_inputs(config, shape, clf))
      t_start = None if plan.edit.mask is not None and config.edit.t_start == 1 else (
          config.edit.t_start)
    plan = dataclasses.replace(plan, classifier=clf, sample_fn=sampler.make_sampler(
        config, model, shape, mesh, None if clf is None else clf.module, t_start))
  elif mode == "reflow":
    _check_reflow(config)
    plan = dataclasses.replace(plan, sample_fn=sampler.make_sampler(config, model, shape, mesh))
  elif mode == "train" and not build.classifies(config):
    plan = dataclasses.replace(plan, sample_fn=sampler.make_sampler(config, model, shape, mesh))
  if mode == "train":
    plan = dataclasses.replace(plan, step_fn=build.train_step(config, model, mesh))
  if mode == "bpd":
    if rows.get(config.training.objective).likelihood is None:
      raise ValueError(f"training.objective {config.training.objective!r} has no likelihood "
                       f"(NCSN's levels are not a process with a density); --mode bpd takes "
                       f"training.objective "
                       f"{tuple(n for n, r in rows.OBJECTIVES.items() if r.likelihood)}.")
    plan = dataclasses.replace(plan, bpd_fn=build.bpd(config, model, mesh))
  if mode == "eval":
    build.fid_protocol(config)
    plan = dataclasses.replace(plan, reference=_reference(config))
  if mode in ("import", "export"):
    build.denoiser(config)  # the weight formats state the process and the prediction
  return plan


REFLOW_SAMPLERS = ("ode", "flow_euler", "flow_heun")  # from t = 1, where z is x_1 exactly


def _check_reflow(config) -> None:
  """--mode reflow draws pairs of a flow model by a deterministic map of its noise."""
  if config.training.objective != "flow":
    raise ValueError(f"--mode reflow draws (noise, sample) pairs of a flow model "
                     f"(training.objective 'flow'), not {config.training.objective!r}.")
  s = config.sampling
  if s.method not in REFLOW_SAMPLERS:
    raise ValueError(f"--mode reflow needs a deterministic ODE sampler that starts from the "
                     f"noise at t = 1, one of {REFLOW_SAMPLERS}, not sampling.method "
                     f"{s.method!r}; set --config.sampling.method.")


def _edit_inputs(config, shape, clf) -> edit_inputs.Inputs:
  """The images to edit; their labels (where the .npz has them and the model or classifier
  takes labels) within the classes."""
  inputs = edit_inputs.inputs(config, shape)
  classes = build.num_classes(config) or (None if clf is None else clf.num_classes)
  if inputs.labels is not None and classes is not None and (
      inputs.labels.min() < 0 or inputs.labels.max() >= classes):
    raise ValueError(f"edit.input={config.edit.input!r} has labels outside [0, {classes}); "
                     f"the model's classes are 0…{classes - 1}.")
  if classes is None:
    inputs = dataclasses.replace(inputs, labels=None)
  return inputs


def _check_micro_batches(config, mesh) -> None:
  """Each device's batch splits into training.grad_accum_steps micro-batches, each even for
  antithetic timesteps (paired within the batch a loss sees)."""
  t, k = config.training, config.training.grad_accum_steps
  per_device = t.batch_size // mesh.size
  if per_device % k:
    raise ValueError(f"training.grad_accum_steps={k} must divide each device's batch: "
                     f"training.batch_size={t.batch_size} over {mesh.size} devices is "
                     f"{per_device} per device; use a batch size that is a multiple of "
                     f"{k * mesh.size} or another number of micro-batches.")
  if t.t_sampler == "antithetic" and (per_device // k) % 2:
    raise ValueError(f"training.t_sampler 'antithetic' pairs the timesteps within each "
                     f"micro-batch: training.batch_size={t.batch_size} over {mesh.size} "
                     f"devices and {k} micro-batches is odd per micro-batch; use a multiple "
                     f"of {2 * k * mesh.size}.")


def _reference(config) -> Reference:
  """The FID reference (published statistics, read and checked, or the protocol's split), with
  the KID subset and the Inception weights checked."""
  f = config.fid
  inception.weights_path(f.inception_weights)
  if f.reference_stats:
    stats = fid.load_reference(os.path.expanduser(f.reference_stats))
    if stats[0].shape != (inception.FEATURES,):
      raise ValueError(f"fid.reference_stats={f.reference_stats!r} holds {stats[0].shape[0]}-d "
                       f"statistics; the FID Inception's pool3 features are "
                       f"{inception.FEATURES}-d: use the tools' Inception statistics.")
    if stats[2] is not None:
      check_kid_subset(f, len(stats[2]))
    return Reference(stats=stats)
  source, n = build.reference(config)
  check_kid_subset(f, n)
  return Reference(source, n)


def check_kid_subset(f, n_ref: int) -> None:
  """KID averages over subsets of fid.kid_subset_size samples and reference images; a subset
  as large as either set is the whole set every time (a KID std of 0), so it is refused."""
  if f.kid_subset_size >= min(f.num_samples, n_ref):
    raise ValueError(f"fid.kid_subset_size={f.kid_subset_size} must be smaller than "
                     f"fid.num_samples={f.num_samples} and the {n_ref} reference images (larger "
                     f"subsets are all the same: a KID std of 0); lower it.")
