"""The Python API's objects, over the same seam as the command line (config/ builds, modes/runs
loads): a `Pipeline` holds a config, its network, process and parameters, and the programs it
compiled, so that a notebook's second call does not compile again.

  import ddpm_jax as dj
  pipe = dj.Pipeline.from_config(dj.configs.get("demo"))
  state, step = pipe.init(jax.random.key(0)), pipe.train_step()  # compiled, data-parallel
  for batch in pipe.batches():                      # or {"image": x}: float NHWC in [−1, 1]
    state, metrics = step(state, batch)
  pipe = pipe.with_params(state.ema_params)
  images, nfe = pipe.sample(16, jax.random.key(1), method="dpm_solver", num_steps=10)
  pipe.save("diffusers:exported");  dj.Pipeline.load("diffusers:exported")
  dj.Pipeline.load("runs/demo")                     # a workdir: its config.json, newest step

Options are the command line's `sampling.*` fields under the same names, with the config's
values as defaults (clipping included); errors name the Python arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any

import jax
import numpy as np
import ml_collections
from etils import epath

from ddpm_jax.config import build, defaults, load, sampler, schema, weights
from ddpm_jax.core.denoiser import Denoiser
from ddpm_jax.data import batches
from ddpm_jax.infra import parallel
from ddpm_jax.modes import runs
from ddpm_jax.objectives import rows
from ddpm_jax.samplers import table


def python_error(message: str) -> str:
  """A config message as Python code reads it: `--config.sampling.X` is the argument X,
  `--config.A.B` the config field A.B."""
  message = re.sub(r"--config\.sampling\.(\w+)", r"the argument \1", message)
  message = re.sub(r"\bsampling\.(\w+)", r"\1", message)
  return message.replace("--config.", "config field ")


def _checked(fn, *args, **kwargs):
  try:
    return fn(*args, **kwargs)
  except ValueError as e:
    raise ValueError(python_error(str(e))) from None


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
  """A model: its config, network module, image shape (S, S, C), device mesh and parameters
  (None until `init` or `with_params`). Programs compiled by `sample`, `edit`,
  `bits_per_dim` and `train_step` are kept and shared with `with_params` copies."""
  config: ml_collections.ConfigDict
  model: Any
  shape: tuple
  mesh: Any
  params: Any = None
  programs: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def from_config(cls, config, *, channels: int | None = None) -> "Pipeline":
    """The pipeline of `config` (checked as the command line checks it); `channels` of the
    images (default: read from the config's dataset)."""
    _checked(schema.check, config)
    if channels is None:
      shape = _checked(build.image_shape, config, _checked(build.source, config))
    else:
      size = config.data.image_size
      shape = (size, size, int(channels))
    return cls(config, build.model(config, shape[-1]), shape, parallel.make_mesh())

  @property
  def channels(self) -> int:
    return self.shape[-1]

  @property
  def process(self):
    """The process the network is trained on (core/sde.py)."""
    return build.process(self.config)

  def with_params(self, params) -> "Pipeline":
    """This pipeline with `params` (e.g. a TrainState's ema_params), placed on every device."""
    return dataclasses.replace(self, params=parallel.replicate(params, self.mesh))

  def init(self, key=None):
    """A fresh TrainState (parameters, optimizer, EMA) from `key` (default: config.seed)."""
    return build.train_state(self.config, self.model, self.shape, key=key)

  def train_step(self):
    """step(state, batch) -> (state, metrics): the command line's compiled, data-parallel
    training step (state donated), one step per call (training.steps_per_dispatch is the
    command line's loop's). batch = {"image": float [B, S, S, C] in [−1, 1], "label": int [B]
    (conditional models)}; B a multiple of the devices."""
    if "train_step" not in self.programs:
      config = self.config.copy_and_resolve_references()
      config.training.steps_per_dispatch = 1
      self.programs["train_step"] = build.train_step(config, self.model, self.mesh)
    step, conditional = self.programs["train_step"], bool(self.config.model.conditional)

    def run(state, batch):
      if "image" not in batch:
        raise ValueError(f"batch has no 'image' (it has {sorted(batch)}); pass {{'image': "
                         f"float [B, S, S, C] in [-1, 1]}}.")
      image = np.asarray(batch["image"], np.float32)
      if image.ndim != 4 or image.shape[1:] != tuple(self.shape):
        raise ValueError(f"batch['image'] has shape {image.shape}; this model takes "
                         f"[B, {', '.join(map(str, self.shape))}].")
      if conditional and "label" not in batch:
        raise ValueError("batch has no 'label': this model is class-conditional "
                         "(model.conditional); pass {'image': …, 'label': int [B]}.")
      label = batch.get("label", np.zeros(len(image), np.int32))
      _checked(parallel.check_divisible, len(image), self.mesh, "the batch size")
      placed = parallel.shard_batch({"image": image, "label": np.asarray(label, np.int32)},
                                    self.mesh)
      return step(parallel.replicate(state, self.mesh), placed)
    return run

  def batches(self, start: int = 0):
    """The training batches of the config's data (data.*, training.batch_size, seed) from
    step `start`, as the command line reads them: deterministic in (seed, step), each
    {"image": float32 [B, S, S, C] in [−1, 1], "label": int32 [B]}."""
    c, t = self.config, self.config.training
    return batches.iterate_batches(
        _checked(build.source, c), start, num_workers=c.data.num_workers,
        global_batch=t.batch_size, image_size=c.data.image_size, seed=c.seed,
        random_flip=c.data.random_flip, process_index=jax.process_index(),
        process_count=jax.process_count())

  def denoiser(self, **options) -> Denoiser:
    """The network with this pipeline's parameters as a Denoiser (core/denoiser.py), clipped
    and guided as `sample` would be with these options."""
    config = _checked(sampler.with_options, self.config, None, options, "Pipeline.denoiser")
    clips = table.get(config.sampling.method).clips and config.sampling.clip_x0
    d = build.denoiser(config, clip_x0=clips)(
        functools.partial(build.apply_fn(self.model), self._params()))
    if sampler.guided(config):
      d = d.guided(config.sampling.guidance_weight, build.num_classes(config))
    return d

  def sample(self, num: int, key, *, method: str | None = None, labels=None, **options):
    """(images [num, S, S, C] in [−1, 1], network evaluations per sample) with `method`
    (default sampling.method) and its options (sampling.* names; the config's values where
    not given). Compiled once per (method, options, num) and reused."""
    return self._sampler(method, options, None, "Pipeline.sample")(
        self._params(), key, self._count(num), labels=labels)

  def edit(self, images, key, *, t_start: float = 0.5, mask=None, method: str | None = None,
           labels=None, **options):
    """SDEdit of `images` (float [B, S, S, C] in [−1, 1]) from t_start·T; with `mask` (1 =
    keep), inpainting (from the prior where t_start is 1). Returns (images, NFE)."""
    x = np.asarray(images, np.float32)
    n = self._count(len(x))
    known = None if mask is None else (x, np.asarray(mask, np.float32))  # broadcast by the loop
    from_prior = mask is not None and t_start == 1
    run = self._sampler(method, options, None if from_prior else float(t_start),
                        "Pipeline.edit")
    return run(self._params(), key, n, x=None if from_prior else x, known=known,
               labels=labels)

  def bits_per_dim(self, images_uint8, key) -> np.ndarray:
    """Bits/dim of each image (uint8 [B, S, S, C]) as --mode bpd computes it: the variational
    bound for "ddpm" models, the probability-flow ODE NLL (dequantized) for score models."""
    objective = self.config.training.objective
    if objective == "classifier" or rows.get(objective).likelihood is None:
      raise ValueError(f"A training.objective {objective!r} model has no likelihood.")
    if "bpd" not in self.programs:
      self.programs["bpd"] = build.bpd(self.config, self.model, self.mesh)
    x = np.asarray(images_uint8)
    if x.dtype != np.uint8:
      raise ValueError(f"images_uint8 has dtype {x.dtype}; pass uint8 images.")
    self._count(len(x))
    return np.asarray(self.programs["bpd"](self._params(), key, x / np.float32(127.5) - 1))

  def save(self, target: str) -> str:
    """Writes the parameters to 'diffusers:FOLDER' (the DDPM U-Net) or 'edm:FILE.npz'
    (SongUNet, DhariwalUNet), with this pipeline's channels; returns the path."""
    params = jax.tree.map(np.asarray, jax.device_get(self._params()))
    return weights.export(self.config, params, target, self.channels)

  @classmethod
  def load(cls, source: str, config=None) -> "Pipeline":
    """A pipeline with trained parameters: a workdir of this library (its config.json and
    newest checkpoint, EMA weights unless config.sampling.use_ema is False), or 'FORMAT:PATH'
    of published weights (diffusers:FOLDER reads its config from the folder; score_sde:FILE,
    edm:FILE, adm:FILE and ncsnv2:FILE need the `config` of their network). Channels come from the
    weights."""
    fmt, sep, path = source.partition(":")
    if not sep or fmt not in weights.FORMATS:
      return cls._from_workdir(source, config)
    if fmt == "diffusers":
      config, params = weights.load_diffusers(os.path.expanduser(path), config)
      channels = weights.params_channels(config, params)
    elif config is None:
      raise ValueError(f"Pipeline.load({source!r}) needs config=: the network's settings "
                       f"(e.g. dj.configs.get('cifar10_edm_ddpmpp')) for a {fmt} file.")
    else:
      params, channels = weights.import_with_channels(config, source)
    return cls.from_config(config, channels=channels).with_params(params)

  @classmethod
  def _from_workdir(cls, workdir: str, config=None) -> "Pipeline":
    path = epath.Path(os.path.expanduser(workdir)) / "config.json"
    if config is None:
      if not path.exists():
        raise FileNotFoundError(f"{workdir} has no config.json: give a workdir of this "
                                f"library, or FORMAT:PATH with FORMAT one of "
                                f"{weights.FORMATS}.")
      config = load.run_config(str(path))
    run, params, _ = runs.load_run(config, os.path.expanduser(workdir), "sample")
    return cls(config, run.plan.model, run.shape, run.mesh, params)

  def _params(self):
    if self.params is None:
      raise ValueError("This pipeline has no parameters: call with_params(state.ema_params) "
                       "after init and training, or Pipeline.load(a workdir or FORMAT:PATH).")
    return self.params

  def _count(self, num: int) -> int:
    num = int(num)
    if num < 1 or num % self.mesh.size:
      raise ValueError(f"num={num}: the batch is split over {self.mesh.size} device(s); use a "
                       f"positive multiple of {self.mesh.size}.")
    return num

  def _sampler(self, method, options: dict, t_start, where: str):
    config = _checked(sampler.with_options, self.config, method, options, where)
    key = ("sample", json.dumps(config.sampling.to_dict(), sort_keys=True), t_start)
    if key not in self.programs:
      self.programs[key] = _checked(sampler.make_sampler, config, self.model, self.shape,
                                    self.mesh, None, t_start)
    return self.programs[key]


def sample(method: str, denoiser: Denoiser, key, shape, *, labels=None, x_T=None, **options):
  """(samples [B, ...] of `shape`, network evaluations per sample) from a Denoiser (e.g.
  `Denoiser.from_fn(your_network, process, predicts=..., noise_input=...)`) with sampler
  `method`; options under their sampling.* names, defaults as the command line's
  (docs/config.md: clip_x0 True, num_steps 50, …). Compiles for the call; a
  Pipeline keeps its programs."""
  if "guidance_weight" in options:
    raise ValueError("sample: guidance is set on the Denoiser of your own network: pass "
                     "denoiser.guided(weight, null_label).")
  config = defaults.get_config()
  config.training.objective = denoiser.objective
  if denoiser.objective == "ddpm":  # the chain's own length bounds DDIM's steps
    config.diffusion.num_timesteps = denoiser.process.N
  config = _checked(sampler.with_options, config, method, options, "sample")
  if table.get(method).clips and config.sampling.clip_x0:
    denoiser = denoiser.replace(clip_x0=True)
  x, info = table.sample(method, denoiser, key, tuple(shape), x_T=x_T, cond=labels,
                         **sampler.options(config))
  return x, info["nfe"]
