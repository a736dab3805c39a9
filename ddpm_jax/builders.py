"""Config → objects: the one place that turns a ConfigDict into schedules, models, losses,
optimizers, data sources and train states. Everything below takes plain arguments."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections

from ddpm_jax import data, diffusion, losses, parallel, schedules, train_step
from ddpm_jax.models.unet import UNet
from ddpm_jax.samplers import ddim, ddpm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SAMPLERS = ("ddpm", "ddim")


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects bad choices up front, before any data is read or program compiled."""
  diffusion.check_types(config.model.mean_type, config.model.var_type)
  build_loss_kwargs(config)
  s = config.sampling
  if s.method not in SAMPLERS:
    raise ValueError(f"Unknown sampling.method {s.method!r}; use one of {SAMPLERS}.")
  if s.method == "ddim":
    ddim.ddim_timesteps(config.diffusion.num_timesteps, s.num_steps, s.skip_type)
  if config.model.dtype not in DTYPES:
    raise ValueError(f"Unknown model.dtype {config.model.dtype!r}; use one of {tuple(DTYPES)}.")


def build_schedule(config: ml_collections.ConfigDict) -> schedules.Schedule:
  c = config.diffusion
  betas = schedules.beta_schedule(c.beta_schedule, c.num_timesteps, beta_start=c.beta_start,
                                  beta_end=c.beta_end)
  if c.zero_terminal_snr:
    betas = schedules.rescale_zero_terminal_snr(betas)
  return schedules.make_schedule(betas)


def num_classes(config) -> int | None:
  return config.data.num_classes if config.model.conditional else None


def build_model(config: ml_collections.ConfigDict, num_channels: int) -> UNet:
  """The U-Net of config.model (after `validate`), with 2C outputs for a learned variance."""
  m = config.model
  learned = m.var_type in ("learned", "learned_range")
  return UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
              resamp_with_conv=m.resamp_with_conv, out_ch=num_channels * (2 if learned else 1),
              num_classes=num_classes(config), dtype=DTYPES[m.dtype])


def build_loss_kwargs(config: ml_collections.ConfigDict) -> dict:
  t = config.training
  if t.t_sampler not in ("uniform", "antithetic"):
    raise ValueError(f"Unknown training.t_sampler {t.t_sampler!r}; use 'uniform' or 'antithetic'.")
  if t.loss_type not in losses.LOSS_TYPES:
    raise ValueError(f"Unknown training.loss_type {t.loss_type!r}; use one of {losses.LOSS_TYPES}.")
  return dict(loss_type=t.loss_type, mean_type=config.model.mean_type,
              var_type=config.model.var_type, vlb_weight=t.vlb_weight, t_method=t.t_sampler)


def build_optimizer(config: ml_collections.ConfigDict):
  o = config.optim
  return train_step.make_optimizer(learning_rate=o.learning_rate, warmup_steps=o.warmup_steps,
                              grad_clip=o.grad_clip, beta1=o.beta1, beta2=o.beta2, eps=o.eps)


def build_source(config: ml_collections.ConfigDict, split: str | None = None):
  d = config.data
  data_dir = os.path.expanduser(d.data_dir) if d.data_dir else None
  return data.open_source(d.dataset, split or d.split, data_dir, d.path)


def image_shape(config, source) -> tuple[int, int, int]:
  """(S, S, C) of the preprocessed images; checks that the U-Net can halve S enough times."""
  size = config.data.image_size
  levels = 2**(len(config.model.ch_mult) - 1)
  if size % levels:
    raise ValueError(f"data.image_size={size} is not divisible by {levels} "
                     f"(2^(len(model.ch_mult)-1)); use a multiple of {levels} or fewer levels.")
  first, _ = source.get([0])
  return (size, size, first[0].shape[-1] if first[0].ndim == 3 else 1)


def check_batch(config, mesh) -> None:
  bs = config.training.batch_size
  n = mesh.size
  if bs % n or bs % jax.process_count():
    raise ValueError(f"training.batch_size={bs} does not divide over {n} devices; use a "
                     f"multiple of {n}.")


def init_state(config, model, shape) -> train_step.TrainState:
  return train_step.create_train_state(model, build_optimizer(config), jax.random.key(config.seed),
                                  shape, num_classes(config))


@dataclasses.dataclass(frozen=True)
class _Apply:
  """model.apply as a hashable function, equal for equal modules (so jit caches hit)."""
  model: UNet

  def __call__(self, params, x, t, y=None):
    return self.model.apply({"params": params}, x, t, y)


def make_model_fn(model, params) -> jax.tree_util.Partial:
  """The network as a sampler callable (x_t, t[, y]) -> output; the parameters are pytree
  leaves of the Partial, so they are arguments of the compiled sampler."""
  return jax.tree_util.Partial(_Apply(model), params)


def sample(config, model, params, key, num: int, shape, mesh, labels=None):
  """Samples with the configured sampler (config.sampling) from bound parameters."""
  s = config.sampling
  sched = build_schedule(config)
  fn = make_model_fn(model, params)
  batch_shape = (num,) + tuple(shape)
  m = config.model
  if s.method == "ddim":
    return ddim.ddim_sample(fn, sched, key, batch_shape, num_steps=s.num_steps, eta=s.eta,
                            skip_type=s.skip_type, mean_type=m.mean_type, var_type=m.var_type,
                            clip_x0=s.clip_x0, cond=labels, mesh=mesh)
  if s.method == "ddpm":
    return ddpm.ddpm_sample(fn, sched, key, batch_shape, mean_type=m.mean_type,
                            var_type=m.var_type, clip_x0=s.clip_x0, cond=labels, mesh=mesh)
  raise ValueError(f"Unknown sampling.method {s.method!r}; use one of {SAMPLERS}.")


def make_step(config, model, mesh):
  t = config.training
  step = train_step.make_train_step(model, build_schedule(config), loss_kwargs=build_loss_kwargs(config),
                               ema_decay=t.ema_decay, num_classes=num_classes(config),
                               label_dropout=t.label_dropout)
  return parallel.data_parallel_train_step(step, mesh, t.steps_per_dispatch)

