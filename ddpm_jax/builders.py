"""Config → objects: the one place that turns a ConfigDict into schedules, models, losses,
optimizers, data sources and train states. Everything below takes plain arguments."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections

from ddpm_jax import (checkpoint, data, diffusion, losses, parallel, schedules, score_losses,
                      train_step)
from ddpm_jax import sde as sde_lib
from ddpm_jax.metrics_writer import log
from ddpm_jax.models.unet import UNet
from ddpm_jax.samplers import ddim, ddpm, guidance, langevin, ode, pc

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
OBJECTIVES = ("ddpm", "dsm", "ncsn")
SAMPLERS = {"ddpm": ("ddpm", "ddim", "pc", "ode"), "dsm": ("pc", "ode"), "ncsn": ("ald",)}


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects bad choices up front, before any data is read or program compiled."""
  objective = config.training.objective
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown training.objective {objective!r}; use one of {OBJECTIVES}.")
  diffusion.check_types(config.model.mean_type, config.model.var_type)
  if objective == "ddpm":
    build_loss_kwargs(config)
  if objective != "ddpm" or config.sampling.method in ("pc", "ode"):
    build_sde(config)
  s = config.sampling
  if s.method not in SAMPLERS[objective]:
    raise ValueError(f"sampling.method {s.method!r} does not fit training.objective "
                     f"{objective!r}; use one of {SAMPLERS[objective]}.")
  if s.method == "ode" and config.model.conditional:
    raise ValueError("sampling.method 'ode' does not take class labels yet; use 'pc' for a "
                     "conditional model.")
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
  learned = m.var_type in ("learned", "learned_range") and config.training.objective == "ddpm"
  return UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
              resamp_with_conv=m.resamp_with_conv, out_ch=num_channels * (2 if learned else 1),
              num_classes=num_classes(config), dtype=DTYPES[m.dtype],
              embedding="positional" if _time_input(config) == "index" else "fourier")


def build_sde(config):
  """The SDE of a "dsm" config; for "ncsn" the VE SDE over its noise levels; for "ddpm" the
  VP SDE whose N-step discretization is the linear β schedule (β_min = T β_start,
  β_max = T β_end), so a DDPM-trained network samples with the SDE samplers."""
  c = config.sde
  if config.training.objective == "ncsn":
    return sde_lib.VESDE(c.sigma_min, c.sigma_max, c.num_scales)
  if config.training.objective == "ddpm":
    d = config.diffusion
    if d.beta_schedule != "linear" or d.zero_terminal_snr:
      raise ValueError("SDE samplers for a DDPM model need diffusion.beta_schedule='linear' "
                       "(the VP SDE's discretization); use sampling.method 'ddpm' or 'ddim'.")
    n = d.num_timesteps
    return sde_lib.VPSDE(d.beta_start * n, d.beta_end * n, n)
  return sde_lib.make_sde(c.name, beta_min=c.beta_min, beta_max=c.beta_max,
                          sigma_min=c.sigma_min, sigma_max=c.sigma_max, num_scales=c.num_scales)


def ncsn_sigmas(config):
  """σ_1 > … > σ_L of an "ncsn" config: geometric over sde.num_scales levels."""
  c = config.sde
  return schedules.geometric_sigmas(c.sigma_max, c.sigma_min, c.num_scales)


def _time_input(config) -> str:
  """VP-type score networks see t·(N−1) (positional); VE and NCSN networks see log σ."""
  obj = config.training.objective
  if obj == "ddpm" or (obj == "dsm" and config.sde.name in ("vp", "subvp")):
    return "index"
  return "log_sigma"


def score_fn_of(config, net):
  """score(x, t) of a "dsm" or "ddpm" network (the mean part of a learned-variance output),
  or score(x, σ) of an "ncsn" one."""
  net = parallel.as_pytree_callable(net)
  if config.training.objective == "ncsn":
    return jax.tree_util.Partial(_ncsn_score, net)
  if config.training.objective == "ddpm" and config.model.var_type in ("learned", "learned_range"):
    net = jax.tree_util.Partial(_mean_part, net)
  return sde_lib.model_score_fn(net, build_sde(config), config.model.mean_type, _time_input(config))


def _mean_part(net, x, t, *cond):
  return jnp.split(net(x, t, *cond), 2, axis=-1)[0]


def _ncsn_score(net, x, sigma, *cond):
  return -net(x, jnp.log(sigma), *cond) / sigma.reshape((-1,) + (1,) * (x.ndim - 1))


def build_loss_fn(config):
  """loss_fn(net, x0, keys) -> (loss, metrics) for the configured objective."""
  obj = config.training.objective
  if obj == "ddpm":
    return functools.partial(_ddpm_loss, build_schedule(config), build_loss_kwargs(config))
  return functools.partial(_score_loss, config)


def _ddpm_loss(schedule, kwargs, net, x0, keys):
  return losses.diffusion_loss(net, schedule, x0, keys, **kwargs)


def _score_loss(config, net, x0, keys):
  c = config.sde
  score = score_fn_of(config, net)
  if config.training.objective == "ncsn":
    return score_losses.ncsn_loss(score, ncsn_sigmas(config), x0, keys, reduce=c.reduce)
  return score_losses.dsm_loss(score, build_sde(config), x0, keys, eps=c.train_eps,
                               likelihood_weighting=c.likelihood_weighting,
                               importance_sampling=c.importance_sampling, reduce=c.reduce)


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
  parallel.check_divisible(config.training.batch_size, mesh, "training.batch_size")


def load_trained(config, workdir: str, split: str | None = None):
  """(source, image shape, model, params) of the newest readable checkpoint in workdir, the
  EMA parameters unless config.sampling.use_ema is False."""
  source = build_source(config, split)
  shape = image_shape(config, source)
  model = build_model(config, shape[-1])
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
  state = checkpoint.restore_latest(manager, init_state(config, model, shape))
  if state is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train first with "
                            f"--mode train and the same --workdir.")
  return source, shape, model, state


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


def nfe_per_sample(config) -> int:
  """Network evaluations per sample of a fixed-step sampler (×2 under classifier-free
  guidance); the adaptive ODE solver reports its own count through `sample(stats=…)`."""
  s = config.sampling
  if s.method == "ddim":
    n = s.num_steps
  elif s.method == "ddpm":
    n = config.diffusion.num_timesteps
  elif s.method == "pc":
    n = build_sde(config).N * ((s.predictor != "none") + (s.corrector != "none") * s.n_steps_each)
  else:  # ald: every level's Langevin steps and the final denoising step
    n = len(ncsn_sigmas(config)) * s.n_steps_each + 1
  return n * (2 if config.model.conditional and s.guidance_weight else 1)


def sample(config, model, params, key, num: int, shape, mesh, first_index: int = 0,
           stats: dict | None = None):
  """Samples with the configured sampler (config.sampling) from bound parameters.

  Class-conditional models get labels cycling through the classes: sample i of the whole
  run (i = first_index, first_index + 1, …) has label i mod num_classes. If `stats` is a
  dict, stats["nfe"] gets the mean network evaluations per sample.
  """
  s = config.sampling
  labels = None
  if config.model.conditional:
    labels = jnp.arange(first_index, first_index + num) % config.data.num_classes
  sched = build_schedule(config)
  fn = make_model_fn(model, params)
  if labels is not None and s.guidance_weight:
    fn = guidance.classifier_free_guidance(fn, s.guidance_weight, config.data.num_classes)
  if stats is not None and s.method != "ode":
    stats["nfe"] = float(nfe_per_sample(config))
  batch_shape = (num,) + tuple(shape)
  m = config.model
  if s.method == "ddim":
    return ddim.ddim_sample(fn, sched, key, batch_shape, num_steps=s.num_steps, eta=s.eta,
                            skip_type=s.skip_type, mean_type=m.mean_type, var_type=m.var_type,
                            clip_x0=s.clip_x0, cond=labels, mesh=mesh)
  if s.method == "ddpm":
    return ddpm.ddpm_sample(fn, sched, key, batch_shape, mean_type=m.mean_type,
                            var_type=m.var_type, clip_x0=s.clip_x0, cond=labels, mesh=mesh)
  score = score_fn_of(config, fn)
  if s.method == "pc":
    return pc.pc_sample(score, build_sde(config), key, batch_shape, predictor=s.predictor,
                        corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each,
                        eps=s.eps, cond=labels, mesh=mesh)
  if s.method == "ode":
    x, nfe = ode.ode_sample(score, build_sde(config), key, batch_shape, solver=s.ode_solver,
                            rtol=s.rtol, atol=s.atol, num_steps=s.num_steps, eps=s.eps, mesh=mesh)
    log(f"probability-flow ODE ({s.ode_solver}): {float(jnp.mean(nfe)):.0f} function "
        f"evaluations per sample")
    if stats is not None:
      stats["nfe"] = float(jnp.mean(nfe))
    return x
  return langevin.annealed_langevin_sample(score, ncsn_sigmas(config), key, batch_shape,
                                           step_lr=s.step_lr, n_steps_each=s.n_steps_each,
                                           cond=labels, mesh=mesh)


def make_step(config, model, mesh):
  t = config.training
  step = train_step.make_train_step(model, build_loss_fn(config), ema_decay=t.ema_decay,
                                    num_classes=num_classes(config), label_dropout=t.label_dropout)
  return parallel.data_parallel_train_step(step, mesh, t.steps_per_dispatch)

