"""Config → objects: the one place that turns a ConfigDict into schedules, SDEs, models, the
loss and train step, samplers, the bits/dim function, optimizers and data sources.

What `make_*` returns is built once per run and closes over plain objects (schedule, SDE,
model, options), never over the config; the step, sampler and bits/dim function are each
compiled once by `jax.jit` where they are built. Everything below takes plain arguments.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddpm_jax import (data, diffusion, likelihood, losses, parallel, preconditioning, schedules,
                      score_losses, train_step)
from ddpm_jax import sde as sde_lib
from ddpm_jax.broadcast import per_example
from ddpm_jax.models.layers import ATTENTION
from ddpm_jax.models.unet import UNet
from ddpm_jax.samplers import common, ddim, dpm_solver, log_snr, unipc

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
OBJECTIVES = ("ddpm", "dsm", "ncsn", "edm")
SCORE_SAMPLERS = ("pc", "ode", "dpm_solver", "unipc", "edm", "ald")  # models: the score
SAMPLERS = {"ddpm": ("ddpm", "ddim") + SCORE_SAMPLERS[:-1], "dsm": SCORE_SAMPLERS[:-1],
            "ncsn": ("ald",), "edm": SCORE_SAMPLERS[:-1]}


def _positive(v) -> bool:
  return v > 0


def _at_least(low):
  return lambda v: v >= low


def _between(low, high, *, high_included=False):
  return lambda v: low <= v <= high if high_included else low <= v < high


# (field, test, what it must be): the ranges `validate` checks first, one field at a time.
RANGES = (
    ("data.image_size", _positive, "a positive number of pixels"),
    ("data.num_classes", _positive, "a positive number of classes"),
    ("diffusion.num_timesteps", _positive, "a positive number of steps, e.g. 1000"),
    ("diffusion.beta_start", _between(0, 1), "in [0, 1), e.g. 1e-4"),
    ("diffusion.beta_end", _between(0, 1), "in [0, 1), e.g. 0.02"),
    ("model.ch", lambda v: v > 0 and v % 32 == 0, "a positive multiple of 32 (GroupNorm's 32 groups)"),
    ("model.num_res_blocks", _positive, "at least 1"),
    ("model.dropout", _between(0, 1), "in [0, 1)"),
    ("training.batch_size", _positive, "a positive global batch size"),
    ("training.num_train_steps", _positive, "at least 1"),
    ("training.steps_per_dispatch", _positive, "at least 1"),
    ("training.log_every", _positive, "at least 1"),
    ("training.checkpoint_every", _positive, "at least 1"),
    ("training.keep_checkpoints", _positive, "at least 1 (the newest checkpoint is always kept)"),
    ("training.sample_every", _at_least(0), "0 (at the end only) or more"),
    ("training.ema_decay", _between(0, 1), "in [0, 1), e.g. 0.9999"),
    ("training.label_dropout", _between(0, 1), "in [0, 1)"),
    ("training.vlb_weight", _at_least(0), "0 or more"),
    ("optim.learning_rate", _positive, "positive, e.g. 2e-4"),
    ("optim.warmup_steps", _at_least(0), "0 or more"),
    ("optim.grad_clip", _at_least(0), "0 (off) or a positive norm"),
    ("optim.beta1", _between(0, 1), "in [0, 1)"),
    ("optim.beta2", _between(0, 1), "in [0, 1)"),
    ("optim.eps", _positive, "positive"),
    ("sampling.num_steps", _positive, "at least 1"),
    ("sampling.eta", _between(0, 1, high_included=True), "in [0, 1] (0: deterministic DDIM)"),
    ("sampling.num_samples", _positive, "at least 1"),
    ("sampling.batch_size", _positive, "at least 1"),
    ("sampling.snr", _positive, "positive"),
    ("sampling.n_steps_each", _positive, "at least 1"),
    ("sampling.eps", _between(0, 1), "in [0, 1), e.g. 1e-3"),
    ("sampling.rtol", _positive, "positive"),
    ("sampling.atol", _positive, "positive"),
    ("sampling.step_lr", _positive, "positive"),
    ("sampling.guidance_weight", _at_least(0), "0 (off) or more"),
    ("sampling.solver_order", lambda v: v in (1, 2, 3), "1, 2 or 3"),
    ("sampling.edm_churn", _at_least(0), "0 (deterministic) or more, e.g. 40"),
    ("sampling.edm_s_tmin", _at_least(0), "0 or more"),
    ("sampling.edm_s_noise", _positive, "positive, e.g. 1.0"),
    ("sde.beta_min", _positive, "positive"),
    ("sde.sigma_min", _positive, "positive"),
    ("sde.num_scales", _positive, "at least 1"),
    ("sde.train_eps", _between(0, 1), "in [0, 1), e.g. 1e-5"),
    ("edm.sigma_min", _positive, "positive, e.g. 0.002"),
    ("edm.sigma_data", _positive, "positive: the data's standard deviation, e.g. 0.5"),
    ("edm.p_std", _positive, "positive, e.g. 1.2"),
    ("eval.num_examples", _at_least(0), "0 (the whole split) or more"),
    ("eval.batch_size", _positive, "at least 1"),
    ("eval.rtol", _positive, "positive"),
    ("eval.atol", _positive, "positive"),
    ("fid.num_samples", _positive, "at least 1"),
    ("fid.chunk_size", _positive, "at least 1"),
    ("fid.inception_batch_size", _positive, "at least 1"),
    ("fid.ref_num_examples", _at_least(0), "0 (the whole split) or more"),
    ("fid.kid_subsets", _positive, "at least 1"),
    ("fid.kid_subset_size", _at_least(2), "at least 2"),
)
# (first, second): fields whose values must be ordered first < second.
ORDERED = (("diffusion.beta_start", "diffusion.beta_end"), ("sde.beta_min", "sde.beta_max"),
           ("sde.sigma_min", "sde.sigma_max"), ("edm.sigma_min", "edm.sigma_max"),
           ("sampling.edm_s_tmin", "sampling.edm_s_tmax"))
# (field, its choices): settings that name one of a few options.
CHOICES = (
    ("model.dtype", tuple(DTYPES)),
    ("model.attention", ATTENTION),
    ("sampling.spacing", ("",) + log_snr.SPACINGS),
    ("sampling.dpm_solver_variant", dpm_solver.VARIANTS),
    ("sampling.unipc_variant", unipc.VARIANTS),
)


def _field(config, name: str):
  return functools.reduce(lambda node, part: node[part], name.split("."), config)


def _check_ranges(config) -> None:
  for name, ok, want in RANGES:
    value = _field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
      raise ValueError(f"{name}={value!r} must be {want}; set --config.{name}.")
  for low, high in ORDERED:
    if not _field(config, low) < _field(config, high):
      raise ValueError(f"{low}={_field(config, low)!r} must be below {high}="
                       f"{_field(config, high)!r}; change one of them.")
  for name, choices in CHOICES:
    if _field(config, name) not in choices:
      raise ValueError(f"Unknown {name} {_field(config, name)!r}; use one of {choices}.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects bad choices up front, before any data is read or program compiled."""
  _check_ranges(config)
  objective = config.training.objective
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown training.objective {objective!r}; use one of {OBJECTIVES}.")
  diffusion.check_types(config.model.mean_type, config.model.var_type)
  if config.data.num_workers < 0:
    raise ValueError(f"data.num_workers={config.data.num_workers}; use 0 (a thread) or more "
                     f"worker processes.")
  if objective == "ddpm":
    _ddpm_loss_options(config)
  elif config.training.t_sampler == "importance":
    raise ValueError("training.t_sampler 'importance' draws the timesteps of objective 'ddpm'; "
                     "for 'dsm' set sde.importance_sampling=True (with likelihood weighting).")
  if objective != "ddpm" or config.sampling.method in SCORE_SAMPLERS:
    build_sde(config)
  s = config.sampling
  if s.method not in SAMPLERS[objective]:
    raise ValueError(f"sampling.method {s.method!r} does not fit training.objective "
                     f"{objective!r}; use one of {SAMPLERS[objective]}.")
  if s.method == "dpm_solver" and s.dpm_solver_variant == "singlestep" and s.solver_order != 2:
    raise ValueError(f"sampling.dpm_solver_variant 'singlestep' is DPM-Solver++(2S), of order "
                     f"2; set sampling.solver_order=2 (not {s.solver_order}).")
  if s.method == "ddim":
    if s.num_steps > config.diffusion.num_timesteps:
      raise ValueError(f"sampling.num_steps={s.num_steps} must be at most "
                       f"diffusion.num_timesteps={config.diffusion.num_timesteps}; lower it.")
    ddim.ddim_timesteps(config.diffusion.num_timesteps, s.num_steps, s.skip_type)
  t, k = config.training, config.training.steps_per_dispatch
  if t.num_train_steps % k or t.checkpoint_every % k or t.log_every % k:
    raise ValueError(f"training.steps_per_dispatch={k} must divide num_train_steps, "
                     f"checkpoint_every and log_every; change one of them.")


# ------------------------------------------------------------------ the diffusion

def _betas(config) -> np.ndarray:
  """β_0…β_{T−1} of config.diffusion, float64."""
  c = config.diffusion
  betas = schedules.beta_schedule(c.beta_schedule, c.num_timesteps, beta_start=c.beta_start,
                                  beta_end=c.beta_end)
  return schedules.rescale_zero_terminal_snr(betas) if c.zero_terminal_snr else betas


def build_schedule(config: ml_collections.ConfigDict) -> schedules.Schedule:
  return schedules.make_schedule(_betas(config))


def build_sde(config):
  """The SDE of a "dsm" config; for "ncsn" the VE SDE over its noise levels; for "edm" the VE
  SDE over EDM's σ range (config.edm); for "ddpm" the VP SDE whose N-step discretization is
  the linear β schedule (β_min = T β_start, β_max = T β_end), or for other schedules the
  discrete VP SDE of its β_i, so a DDPM-trained network samples with the SDE samplers."""
  c = config.sde
  if config.training.objective == "ncsn":
    return sde_lib.VESDE(c.sigma_min, c.sigma_max, c.num_scales)
  if config.training.objective == "edm":
    return sde_lib.VESDE(config.edm.sigma_min, config.edm.sigma_max, c.num_scales)
  if config.training.objective == "ddpm":
    d = config.diffusion
    if d.zero_terminal_snr:
      raise ValueError("SDE samplers need a finite log-SNR at t = T; with "
                       "diffusion.zero_terminal_snr=True use sampling.method 'ddpm' or 'ddim'.")
    n = d.num_timesteps
    if d.beta_schedule != "linear":
      return sde_lib.DiscreteVPSDE(tuple(float(b) for b in _betas(config)))
    return sde_lib.VPSDE(d.beta_start * n, d.beta_end * n, n)
  return sde_lib.make_sde(c.name, beta_min=c.beta_min, beta_max=c.beta_max,
                          sigma_min=c.sigma_min, sigma_max=c.sigma_max, num_scales=c.num_scales)


def ncsn_sigmas(config):
  """σ_1 > … > σ_L of an "ncsn" config: geometric over sde.num_scales levels."""
  c = config.sde
  return schedules.geometric_sigmas(c.sigma_max, c.sigma_min, c.num_scales)


# ------------------------------------------------------------------ the network

def num_classes(config) -> int | None:
  return config.data.num_classes if config.model.conditional else None


def _learned_variance(config) -> bool:
  return config.training.objective == "ddpm" and diffusion.learns_variance(config.model.var_type)


def build_model(config: ml_collections.ConfigDict, num_channels: int) -> UNet:
  """The U-Net of config.model (after `validate`), with 2C outputs for a learned variance."""
  m = config.model
  return UNet(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
              attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
              resamp_with_conv=m.resamp_with_conv,
              out_ch=num_channels * (2 if _learned_variance(config) else 1),
              num_classes=num_classes(config), dtype=DTYPES[m.dtype], attention=m.attention,
              embedding="positional" if _time_input(config) == "index" else "fourier")


def apply_fn(model):
  """net(params, x, t[, y]): the network's forward in inference mode."""
  return lambda params, x, t, *cond: model.apply({"params": params}, x, t, *cond)


def _time_input(config) -> str:
  """VP-type score networks see t·(N−1) (positional); VE and NCSN networks see log σ."""
  obj = config.training.objective
  if obj == "ddpm" or (obj == "dsm" and config.sde.name in ("vp", "subvp")):
    return "index"
  return "log_sigma"


def network_score(config):
  """net ↦ score(x, t[, y]) for a "dsm", "edm" (preconditioned) or "ddpm" network (the mean
  part of a learned-variance output), or score(x, σ[, y]) for an "ncsn" one; the SDE built
  once."""
  if config.training.objective == "ncsn":
    return lambda net: functools.partial(_ncsn_score, net)
  sde = build_sde(config)
  if config.training.objective == "edm":
    return lambda net: preconditioning.score_fn(net, sde, config.edm.sigma_data)
  mean_type, time_input = config.model.mean_type, _time_input(config)
  var_type = config.model.var_type if _learned_variance(config) else "fixed_small"

  def score_of(net):
    mean_part = lambda x, t, *cond: diffusion.split_output(net(x, t, *cond), var_type)[0]  # noqa: E731
    return sde_lib.model_score_fn(mean_part, sde, mean_type, time_input)
  return score_of


def _ncsn_score(net, x, sigma, *cond):
  """s(x, σ) = −net(x, log σ)/σ: the NCSN network predicts −σ s (unit-variance target)."""
  return -net(x, jnp.log(sigma), *cond) / per_example(sigma, x)


# ------------------------------------------------------------------ training

def _ddpm_loss_options(config: ml_collections.ConfigDict) -> dict:
  t = config.training
  if t.t_sampler not in losses.TIMESTEP_SAMPLERS:
    raise ValueError(f"Unknown training.t_sampler {t.t_sampler!r}; use one of "
                     f"{losses.TIMESTEP_SAMPLERS}.")
  if t.loss_type not in losses.LOSS_TYPES:
    raise ValueError(f"Unknown training.loss_type {t.loss_type!r}; use one of {losses.LOSS_TYPES}.")
  return dict(loss_type=t.loss_type, mean_type=config.model.mean_type,
              var_type=config.model.var_type, vlb_weight=t.vlb_weight, t_method=t.t_sampler)


def build_loss(config):
  """loss_fn(net, x0, keys, probs=None) -> (loss, metrics) for the configured objective;
  probs is the importance distribution of t (training.t_sampler 'importance')."""
  obj = config.training.objective
  if obj == "ddpm":
    schedule, options = build_schedule(config), _ddpm_loss_options(config)
    return lambda net, x0, keys, probs=None: losses.diffusion_loss(
        net, schedule, x0, keys, probs=probs, **options)
  if obj == "edm":
    e = config.edm
    return lambda net, x0, keys, probs=None: preconditioning.edm_loss(
        net, x0, keys, sigma_data=e.sigma_data, p_mean=e.p_mean, p_std=e.p_std)
  score_of, c = network_score(config), config.sde
  if obj == "ncsn":
    sigmas = ncsn_sigmas(config)
    return lambda net, x0, keys, probs=None: score_losses.ncsn_loss(
        score_of(net), sigmas, x0, keys, reduce=c.reduce)
  sde = build_sde(config)
  options = dict(eps=c.train_eps, likelihood_weighting=c.likelihood_weighting,
                 importance_sampling=c.importance_sampling, reduce=c.reduce)
  return lambda net, x0, keys, probs=None: score_losses.dsm_loss(score_of(net), sde, x0, keys,
                                                                 **options)


def build_optimizer(config: ml_collections.ConfigDict):
  o = config.optim
  return train_step.make_optimizer(learning_rate=o.learning_rate, warmup_steps=o.warmup_steps,
                                   grad_clip=o.grad_clip, beta1=o.beta1, beta2=o.beta2, eps=o.eps)


def init_state(config, model, shape) -> train_step.TrainState:
  """A fresh TrainState (with a loss history when training.t_sampler is 'importance')."""
  history = None
  if config.training.objective == "ddpm" and config.training.t_sampler == "importance":
    history = losses.empty_loss_history(config.diffusion.num_timesteps)
  return train_step.create_train_state(model, build_optimizer(config), jax.random.key(config.seed),
                                       shape, num_classes(config), history)


def make_step(config, model, mesh):
  """The data-parallel training step (state, batch) -> (state, metrics), state donated."""
  t = config.training
  step = train_step.make_train_step(model, build_loss(config), ema_decay=t.ema_decay,
                                    num_classes=num_classes(config), label_dropout=t.label_dropout)
  return parallel.data_parallel_train_step(step, mesh, t.steps_per_dispatch)


# ------------------------------------------------------------------ likelihood

def make_bpd(config, model, mesh):
  """bpd_fn(params, key, x) -> bits/dim [B] of data x in [−1, 1], data-parallel and compiled
  once: the full variational bound (Σ_t L_t + L_prior, one noise draw per t) for "ddpm"
  models, the probability-flow NLL of uniformly dequantized x for "dsm" ones. Each example's
  noise and probe come from its own key, so the values do not depend on the device count."""
  obj, e, m = config.training.objective, config.eval, config.model
  if obj == "ncsn":
    raise ValueError("NCSN has no likelihood; use training.objective 'ddpm', 'dsm' or 'edm'.")
  apply = apply_fn(model)
  if obj == "ddpm":
    schedule = build_schedule(config)

    def vlb(params, batched):
      keys, x = batched
      total, _, _ = losses.vlb_bpd(functools.partial(apply, params), schedule, x, keys,
                                   mean_type=m.mean_type, var_type=m.var_type)
      return total

    program = parallel.data_parallel(vlb, mesh)
    return lambda params, key, x: program(params, (jax.random.split(key, x.shape[0]), x))

  score_of = network_score(config)
  nll = common.compile_loop(
      likelihood.nll_loop(build_sde(config), method=e.divergence, rtol=e.rtol, atol=e.atol),
      lambda params: score_of(functools.partial(apply, params)), mesh)

  def pf_ode_bpd(params, key, x):
    deq_key, probe_key = jax.random.split(key)
    logp, _ = nll(params, probe_key, x.shape[0], x_init=likelihood.dequantize(deq_key, x))
    return likelihood.bits_per_dim(logp, x[0].size)
  return pf_ode_bpd


# ------------------------------------------------------------------ data

def build_source(config: ml_collections.ConfigDict, split: str | None = None):
  """The split's source (default data.split); in-memory images already at data.image_size."""
  d = config.data
  data_dir = os.path.expanduser(d.data_dir) if d.data_dir else None
  source = data.open_source(d.dataset, split or d.split, data_dir, d.path)
  if config.model.conditional:
    top = data.num_label_values(source)
    if top is None:
      raise ValueError(f"model.conditional=True needs labels, and dataset {d.dataset!r} has "
                       f"none; set model.conditional=False or use labelled data.")
    if top > d.num_classes:
      raise ValueError(f"The labels of {d.dataset!r} go up to {top - 1}, beyond "
                       f"data.num_classes={d.num_classes}; set data.num_classes={top}.")
  return data.at_size(source, d.image_size)


def image_shape(config, source) -> tuple[int, int, int]:
  """(S, S, C) of the preprocessed images; checks that the U-Net can halve S enough times."""
  size = config.data.image_size
  levels = 2**(len(config.model.ch_mult) - 1)
  if size % levels:
    raise ValueError(f"data.image_size={size} is not divisible by {levels} "
                     f"(2^(len(model.ch_mult)-1)); use a multiple of {levels} or fewer levels.")
  first, _ = source.get([0])
  return (size, size, first[0].shape[-1] if first[0].ndim == 3 else 1)
