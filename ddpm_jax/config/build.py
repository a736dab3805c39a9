"""Config → objects: the process (SDE or discrete chain), the network and its Denoiser, the
loss and train step, the bits/dim function, the optimizer and the data source.

What these return is built once per run and closes over plain objects (process, model,
options), never over the config; the step and bits/dim function are each compiled once by
`jax.jit` where they are built. Everything below takes plain arguments. The values are
checked first (config/schema.py): these functions assume a valid config.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ddpm_jax.config import load, memory, reads
from ddpm_jax.core import chain
from ddpm_jax.core import denoiser as denoiser_lib
from ddpm_jax.data import sources
from ddpm_jax.evaluation import protocols
from ddpm_jax.infra import parallel
from ddpm_jax.models.half_unet import HalfUNet
from ddpm_jax.models.dhariwal_unet import DhariwalUNet
from ddpm_jax.models.ncsnpp import NCSNpp
from ddpm_jax.models import ncsnv2
from ddpm_jax.models.song_unet import SongUNet
from ddpm_jax.models.unet import UNet
from ddpm_jax.objectives import augment
from ddpm_jax.objectives import classifier as classifier_objective
from ddpm_jax.objectives import ddpm as ddpm_objective
from ddpm_jax.objectives import rows
from ddpm_jax.samplers import common, likelihood
from ddpm_jax.training import power_ema
from ddpm_jax.training import step as step_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ------------------------------------------------------------------ the process

def betas(config):
  """β_0…β_{T−1} of config.diffusion's chain, float64."""
  return process(config).discrete_betas()


def read_names(config, names) -> list[str]:
  """The dotted names of an objective row's fields that `config` reads: all but a `When`
  whose condition does not hold (the condition looked up, not counted as read:
  config/reads.py)."""
  return [f if isinstance(f, str) else f.name for f in names
          if isinstance(f, str) or reads.peek(config, f.on) in f.values]


def values(config, names) -> dict:
  """{last name: value} of the fields `names` of an objective row that `config` reads (its
  keywords)."""
  return {name.rpartition(".")[2]: load.value(config, name)
          for name in read_names(config, names)}


def network_objective(config) -> str:
  """The objective (core/denoiser.py OBJECTIVES) whose process the run is on:
  training.objective, or for a classifier that of the models it guides (classifier.process)."""
  obj = config.training.objective
  return config.classifier.process if obj == "classifier" else obj


def process_fields(config) -> list[str]:
  """The fields that define the process the network is on (its objective row's `defines`,
  those this config reads): what a guiding classifier and a run's config.json must share."""
  return read_names(config, rows.get(network_objective(config)).defines)


def process(config):
  """What the network was trained on: the process of its objective's row
  (objectives/rows.py) made of the row's fields; a classifier is on the process of the models
  it guides."""
  row = rows.get(network_objective(config))
  return row.process(**values(config, row.process_fields))


# ------------------------------------------------------------------ the network

def num_classes(config) -> int | None:
  return config.data.num_classes if config.model.conditional else None


def learned_variance(config) -> bool:
  return config.training.objective == "ddpm" and chain.learns_variance(config.model.var_type)


def classifies(config) -> bool:
  """A noise-conditional classifier's run (training.objective 'classifier')."""
  return config.training.objective == "classifier"


@dataclasses.dataclass(frozen=True)
class Network:
  """A network row: its module, the constructor keyword each model.* field it reads goes to,
  and the keywords made from other settings (computed(config, num_channels) -> dict)."""
  module: type
  fields: dict
  computed: Callable


def _out_channels(config, num_channels: int) -> int:
  """C outputs, 2C for a learned variance."""
  return num_channels * (2 if learned_variance(config) else 1)


def _embedding(config) -> str:
  """The DDPM U-Net and its half embed their noise input as their Denoiser feeds it (the
  chain step or a flow's scaled time: positional; log σ or c_noise: Fourier)."""
  return "positional" if _probe(config).noise_input in ("index", "t") else "fourier"


SHARED = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "remat")
_UNET = {"ch": "ch", "ch_mult": "ch_mult", "num_res_blocks": "num_res_blocks",
         "attn_resolutions": "attn_resolutions", "dropout": "dropout", "remat": "remat",
         "resamp_with_conv": "resamp_with_conv", "attention": "attention", "dtype": "dtype",
         "norm_groups": "norm_groups"}
_EDM = {"model_channels": "ch", "channel_mult": "ch_mult", "num_blocks": "num_res_blocks",
        "attn_resolutions": "attn_resolutions", "dropout": "dropout", "remat": "remat",
        "channel_mult_emb": "channel_mult_emb", "augment_dim": "augment_dim", "dtype": "dtype"}
NETWORK_ROWS = {
    "ddpm": Network(UNet, _UNET, lambda config, c: dict(
        out_ch=_out_channels(config, c), num_classes=num_classes(config),
        embedding=_embedding(config))),
    "ncsnpp": Network(NCSNpp, {
        "nf": "ch", **{k: k for k in SHARED[1:]}, **{k: k for k in (
            "resamp_with_conv", "fir", "fir_kernel", "skip_rescale", "resblock_type",
            "progressive", "progressive_input", "progressive_combine", "embedding_type",
            "fourier_scale", "init_scale", "scale_by_sigma", "nonlinearity")}},
        lambda config, c: {}),
    "song_unet": Network(SongUNet, {**_EDM, **{k: k for k in (
        "embedding_type", "channel_mult_noise", "encoder_type", "decoder_type",
        "resample_filter")}}, lambda config, c: dict(
            out_channels=_out_channels(config, c), label_dim=num_classes(config) or 0)),
    "dhariwal_unet": Network(DhariwalUNet, {**_EDM, "num_heads": "num_heads"}, lambda config, c: dict(
        out_channels=_out_channels(config, c), label_dim=num_classes(config) or 0)),
    **{name: Network(ncsnv2.NCSNv2, {"ngf": "ch", "dtype": "dtype"},
                     lambda config, c, v=variant: dict(variant=v))
       for name, variant in (("ncsnv2", "ncsnv2"), ("ncsnv2_deeper", "deeper"),
                             ("ncsnv2_deepest", "deepest"))},
    "half_unet": Network(HalfUNet, _UNET, lambda config, c: dict(
        num_classes=config.data.num_classes, embedding=_embedding(config))),
}
NETWORKS = tuple(NETWORK_ROWS)
# The options under config.model that each network reads besides the shared ones (and
# name, conditional, mean_type, var_type, which the process and Denoiser read).
NETWORK_OPTIONS = {name: tuple(f for f in row.fields.values() if f not in SHARED)
                   for name, row in NETWORK_ROWS.items()}


def model(config: ml_collections.ConfigDict, num_channels: int):
  """The network of config.model.name (its row in NETWORK_ROWS): each model.* field it reads
  passed to the keyword it names, compute dtypes by name, tuples as tuples; with 2C outputs
  for a learned variance (a classifier, 'half_unet': data.num_classes logits)."""
  m = config.model
  if m.name not in NETWORK_ROWS:
    raise ValueError(f"Unknown model.name {m.name!r}; use one of {NETWORKS}.")
  row = NETWORK_ROWS[m.name]
  kwargs = {keyword: load.value(config, f"model.{name}") for keyword, name in row.fields.items()}
  if "dtype" in kwargs:
    kwargs["dtype"] = DTYPES[kwargs["dtype"]]
  return row.module(**kwargs, **row.computed(config, num_channels))


def apply_fn(net_module):
  """net(params, x, noise_input[, y]): the network's forward in inference mode."""
  return lambda params, x, t, *cond: net_module.apply({"params": params}, x, t, *cond)


def denoiser(config, *, clip_x0: bool = False):
  """net ↦ the Denoiser of a network trained with this config (core/denoiser.py), the
  process and settings read once (the closure holds plain objects, not the config);
  `clip_x0` clips its x̂_0 (samplers that honour sampling.clip_x0)."""
  return functools.partial(
      denoiser_lib.make, process=process(config), objective=network_objective(config),
      # a classifier's probe reads the process alone (objectives/classifier.py)
      **({} if classifies(config) else values(config, rows.get(network_objective(config)).denoiser_fields)),
      var_type=config.model.var_type if learned_variance(config) else "fixed_small",
      clip_x0=bool(clip_x0))


def _probe(config) -> denoiser_lib.Denoiser:
  """The Denoiser of the config around no network: its static settings."""
  return denoiser(config)(None)


# ------------------------------------------------------------------ training

def loss(config):
  """loss_fn(net, x0, keys, probs=None, labels=None) -> (loss, metrics) for the configured
  objective (its row's loss, objectives/rows.py); probs is the importance distribution of t
  (training.t_sampler 'importance'), labels the batch's (what a classifier learns)."""
  obj = config.training.objective
  if obj == "classifier":
    probe = _probe(config)
    draws = {"dsm": ("sde.train_eps",), "edm": ("edm.p_mean", "edm.p_std")}.get(probe.objective, ())
    levels = classifier_objective.level_sampler(probe, **values(config, draws))
    return lambda net, x0, keys, probs=None, labels=None: classifier_objective.classifier_loss(
        net, probe, levels, x0, labels, keys)
  row = rows.get(obj)
  return row.loss(process(config), denoiser(config), **values(config, row.loss_fields))


def optimizer(config: ml_collections.ConfigDict):
  o = config.optim
  return step_lib.make_optimizer(learning_rate=o.learning_rate, warmup_steps=o.warmup_steps,
                                 grad_clip=o.grad_clip, beta1=o.beta1, beta2=o.beta2, eps=o.eps)


def train_state(config, net_module, shape, *, abstract: bool = False,
                key=None) -> step_lib.TrainState:
  """A fresh TrainState (with a loss history when training.t_sampler is 'importance'), from
  `key` (default: the key of config.seed); with `abstract` its shapes and dtypes only."""
  history = None
  if importance_sampled(config):
    history = ddpm_objective.empty_loss_history(config.diffusion.num_timesteps)
  key = jax.random.key(config.seed) if key is None else key
  return step_lib.create_train_state(net_module, optimizer(config), key,
                                     shape, num_classes(config), history, abstract=abstract,
                                     loss_scale=loss_scale(config),
                                     phema_profiles=len(config.training.phema_sigma_rels))


def importance_sampled(config) -> bool:
  """Timesteps drawn by improved DDPM's importance sampling (a loss history in the state)."""
  return config.training.objective == "ddpm" and config.training.t_sampler == "importance"


def phema_gammas(config) -> tuple[float, ...]:
  """The exponents γ of the power-function EMAs tracked for post-hoc EMA
  (training/power_ema.py)."""
  return tuple(float(g) for g in power_ema.sigma_rel_to_gamma(config.training.phema_sigma_rels))


def loss_scale(config) -> float | None:
  """The initial dynamic loss scale of float16 compute (None for float32 and bfloat16, whose
  range needs none)."""
  return config.training.loss_scale_init if config.model.dtype == "float16" else None


def train_step(config, net_module, mesh):
  """The data-parallel training step (state, batch) -> (state, metrics), state donated."""
  t = config.training
  augment_fn = None if t.augment_p <= 0 else functools.partial(
      augment.augment, p=float(t.augment_p), color=bool(t.augment_color))
  history = None
  if importance_sampled(config):
    history = (ddpm_objective.history_probs, ddpm_objective.update_loss_history)
  step = step_lib.make_train_step(net_module, loss(config), ema_decay=t.ema_decay,
                                  num_classes=num_classes(config),
                                  label_dropout=t.label_dropout if num_classes(config) else 0.0,
                                  augment_fn=augment_fn, history=history,
                                  grad_accum_steps=t.grad_accum_steps,
                                  unroll=jax.default_backend() == "cpu",
                                  **({"loss_scale_every": t.loss_scale_every}
                                     if loss_scale(config) else {}),
                                  phema_gammas=phema_gammas(config))
  return parallel.data_parallel_train_step(step, mesh, t.steps_per_dispatch)


# ------------------------------------------------------------------ likelihood

def bpd(config, net_module, mesh):
  """bpd_fn(params, key, x) -> bits/dim [B] of data x in [−1, 1], data-parallel and compiled
  once: the full variational bound (Σ_t L_t + L_prior, one noise draw per t) for "ddpm"
  models, the probability-flow NLL of uniformly dequantized x for "dsm" and "edm" ones. Each
  example's noise and probe come from its own key, so the values do not depend on the device
  count."""
  e = config.eval  # read here: the built function closes over plain objects
  apply, make = apply_fn(net_module), denoiser(config)
  if rows.get(config.training.objective).likelihood == "vlb":
    def vlb(params, batched):
      keys, x = batched
      return ddpm_objective.vlb_bpd(make(functools.partial(apply, params)), x, keys)[0]

    program = parallel.data_parallel(vlb, mesh)
    return lambda params, key, x: program(params, (jax.random.split(key, x.shape[0]), x))

  nll = common.compile_loop(
      likelihood.nll_loop(process(config), method=e.divergence, rtol=e.rtol, atol=e.atol),
      lambda params: make(functools.partial(apply, params)), mesh)

  def pf_ode_bpd(params, key, x):
    deq_key, probe_key = jax.random.split(key)
    logp, _ = nll(params, probe_key, x.shape[0], x_init=likelihood.dequantize(deq_key, x))
    return likelihood.bits_per_dim(logp, x[0].size)
  return pf_ode_bpd


# ------------------------------------------------------------------ data

def source(config: ml_collections.ConfigDict, split: str | None = None):
  """The split's source (default data.split); in-memory images already at data.image_size."""
  d = config.data
  data_dir = os.path.expanduser(d.data_dir) if d.data_dir else None
  src = sources.open_source(d.dataset, split or d.split, data_dir, d.path)
  if config.model.conditional:
    top = sources.num_label_values(src)
    if top is None:
      raise ValueError(f"model.conditional=True needs labels, and dataset {d.dataset!r} has "
                       f"none; set model.conditional=False or use labelled data.")
    if top > d.num_classes:
      raise ValueError(f"The labels of {d.dataset!r} go up to {top - 1}, beyond "
                       f"data.num_classes={d.num_classes}; set data.num_classes={top}.")
  if isinstance(src, sources.ArraySource):
    memory.check_dataset(config, len(src), src.images.shape[-1])
  return sources.at_size(src, d.image_size)


def fid_protocol(config) -> protocols.Protocol:
  """How --mode eval measures: the paper's preset fid.protocol (with fid.num_samples per seed),
  or the config's own fid.* fields."""
  f = config.fid
  if f.protocol:
    return dataclasses.replace(protocols.PROTOCOLS[f.protocol], num_samples=f.num_samples)
  return protocols.Protocol(f.num_samples, f.ref_split, f.resize, f.num_seeds,
                            "this config's fid.* fields")


def reference(config) -> tuple:
  """(source, n): the FID reference split and how many of its images are the reference: all
  of the protocol's split, or the first fid.ref_num_examples of fid.ref_split (all when 0)."""
  f = config.fid
  src = source(config, fid_protocol(config).ref_split)
  if f.protocol or f.ref_num_examples <= 0:
    return src, len(src)
  return src, min(f.ref_num_examples, len(src))


def image_shape(config, src) -> tuple[int, int, int]:
  """(S, S, C) of the preprocessed images; checks that the network can halve S enough times
  and, for the U-Nets, that each model.attn_resolutions entry is one of its resolutions S,
  S/2, …"""
  size, row = config.data.image_size, NETWORK_ROWS.get(config.model.name)
  if row is not None and row.module is ncsnv2.NCSNv2:  # no levels to choose: its variant's
    halvings = ncsnv2.HALVINGS[row.computed(config, 1)["variant"]]
    if size % 2**halvings:
      raise ValueError(f"data.image_size={size} is not divisible by {2**halvings}, which "
                       f"model.name {config.model.name!r} halves it by; use a multiple.")
  else:
    _check_levels(config, size)
  first, _ = src.get([0])
  return (size, size, first[0].shape[-1] if first[0].ndim == 3 else 1)


def _check_levels(config, size: int) -> None:
  levels = 2**(len(config.model.ch_mult) - 1)
  if size % levels:
    raise ValueError(f"data.image_size={size} is not divisible by {levels} "
                     f"(2^(len(model.ch_mult)-1)); use a multiple of {levels} or fewer levels.")
  sizes = tuple(size >> i for i in range(len(config.model.ch_mult)))
  never = [r for r in config.model.attn_resolutions if r not in sizes]
  if never:
    raise ValueError(f"model.attn_resolutions={tuple(config.model.attn_resolutions)} names "
                     f"{never[0]}, a resolution this U-Net never has (data.image_size={size} "
                     f"over {len(sizes)} levels: {sizes}); use some of those, or () for no "
                     f"attention.")
