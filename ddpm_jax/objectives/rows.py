"""The objectives, one row each: the process the network is trained on, the loss, the Denoiser
fields (core/denoiser.py make), the config fields each part is made of, what can make the loss
non-finite, and how its likelihood is computed. config/build.py reads a row's fields from the
config and passes their values here as keywords (the field's last name), so a row holds no
config; the gate, the guiding classifier's check, the training loop's NaN message and --mode
bpd read the same row. A new objective is its loss module, a row and, where its network
predicts something new, a case in core/denoiser.py make.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ddpm_jax.core import paths, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.objectives import ddpm, dsm, edm, flow

DIFFUSION = ("diffusion.beta_schedule", "diffusion.beta_start", "diffusion.beta_end",
             "diffusion.num_timesteps", "diffusion.zero_terminal_snr")


@dataclasses.dataclass(frozen=True)
class When:
  """A row's field that is read only while field `on` has one of `values` (else its keyword
  keeps the function's default): e.g. the VP SDE's β range, read for sde.name 'vp'."""
  name: str
  on: str
  values: tuple


@dataclasses.dataclass(frozen=True)
class Objective:
  """process(**values of process_fields) -> the process; loss(process, make_denoiser,
  **values of loss_fields) -> loss_fn(net, x0, keys, probs, labels) -> (loss, metrics), with
  make_denoiser(net) the network's Denoiser (core/denoiser.py make, with the values of
  denoiser_fields); `defines`: the fields a classifier guiding this model must share (its
  noised marginals); `likelihood`: "vlb" (the chain's bound), "ode" (the probability-flow
  NLL) or None. A field may be a `When`."""
  process_fields: tuple
  process: Callable
  loss_fields: tuple
  loss: Callable
  denoiser_fields: tuple
  defines: tuple
  nan_hint: str
  likelihood: str | None


def _chain(beta_schedule, beta_start, beta_end, num_timesteps, zero_terminal_snr):
  """The discrete chain of its β as the exact VP process of those β (DiscreteVPSDE: every
  sampler, DDPM's and the SDE ones, runs on the same schedule)."""
  betas = schedules.beta_schedule(beta_schedule, num_timesteps, beta_start=beta_start,
                                  beta_end=beta_end)
  if zero_terminal_snr:
    betas = schedules.rescale_zero_terminal_snr(betas)
  return sde_lib.DiscreteVPSDE(tuple(float(b) for b in betas))


def _levels(sigma_min, sigma_max, num_scales=1000):
  """The VE SDE over [σ_min, σ_max] (NCSN: its num_scales geometric levels; EDM: its
  samplers' σ range)."""
  return sde_lib.VESDE(sigma_min, sigma_max, num_scales)


def _ddpm_loss(process, make_denoiser, *, loss_type, mean_type, var_type, vlb_weight=0.0,
               t_sampler="uniform"):
  schedule = process.schedule()
  return lambda net, x0, keys, probs=None, labels=None: ddpm.diffusion_loss(
      net, schedule, x0, keys, probs=probs, loss_type=loss_type, mean_type=mean_type,
      var_type=var_type, vlb_weight=vlb_weight, t_method=t_sampler)


def _dsm_loss(process, make_denoiser, **options):
  return lambda net, x0, keys, probs=None, labels=None: dsm.dsm_loss(
      make_denoiser(net).score, process, x0, keys, **options)


def _ncsn_loss(process, make_denoiser, *, reduce):
  levels = process.discrete_sigmas()[::-1]
  return lambda net, x0, keys, probs=None, labels=None: dsm.ncsn_loss(
      make_denoiser(net).score_at_sigma, levels, x0, keys, reduce=reduce)


def _edm_loss(process, make_denoiser, *, sigma_data, p_mean, p_std):
  return lambda net, x0, keys, probs=None, labels=None: edm.edm_loss(
      lambda x, s: make_denoiser(net).predict_at_sigma(x, s).x0, x0, keys,
      sigma_data=sigma_data, p_mean=p_mean, p_std=p_std)


def _flow_loss(process, make_denoiser, **options):
  return lambda net, x0, keys, probs=None, labels=None, coupled_noise=None: flow.flow_loss(
      make_denoiser(net).velocity, process, x0, keys, coupled_noise=coupled_noise, **options)


_VP, _VE = ("vp", "subvp"), ("ve",)
SDE = ("sde.name", When("sde.beta_min", "sde.name", _VP), When("sde.beta_max", "sde.name", _VP),
       When("sde.sigma_min", "sde.name", _VE), When("sde.sigma_max", "sde.name", _VE))
OBJECTIVES = {
    "ddpm": Objective(
        DIFFUSION, _chain,
        ("training.loss_type", "model.mean_type", "model.var_type",
         When("training.vlb_weight", "training.loss_type", ("hybrid",)),
         "training.t_sampler"), _ddpm_loss, ("model.mean_type",), DIFFUSION,
        "the β schedule (diffusion.*)", "vlb"),
    "dsm": Objective(
        SDE + ("sde.num_scales",),
        lambda name, **kw: sde_lib.make_sde(name, **kw),
        ("sde.train_eps", "sde.likelihood_weighting", "sde.importance_sampling",
         "sde.reduce"), _dsm_loss, ("model.mean_type",), SDE, "the SDE (sde.*)", "ode"),
    "ncsn": Objective(
        ("sde.sigma_min", "sde.sigma_max", "sde.num_scales"), _levels,
        ("sde.reduce",), _ncsn_loss, (), ("sde.sigma_min", "sde.sigma_max", "sde.num_scales"),
        "the noise levels (sde.sigma_min, sde.sigma_max)", None),
    "edm": Objective(  # its σ grid of sde.num_scales levels is what the PC sampler steps on
        ("edm.sigma_min", "edm.sigma_max", When("sde.num_scales", "sampling.method", ("pc",))),
        _levels,
        ("edm.sigma_data", "edm.p_mean", "edm.p_std"), _edm_loss, ("edm.sigma_data",),
        ("edm.sigma_min", "edm.sigma_max", "edm.sigma_data"),
        "the noise draws (edm.sigma_data, edm.p_mean, edm.p_std)", "ode"),
    "flow": Objective(
        ("flow.path",), paths.make_path,
        ("flow.t_sampler", When("flow.logit_mean", "flow.t_sampler", ("logit_normal",)),
         When("flow.logit_std", "flow.t_sampler", ("logit_normal",)),
         When("flow.mode_scale", "flow.t_sampler", ("mode",)), "flow.weighting"),
        _flow_loss, ("flow.prediction", "flow.time_scale"),
        ("flow.path", "flow.prediction", "flow.time_scale"),
        "the time draws (flow.t_sampler) or the weighting (flow.weighting)", "ode"),
}
CLASSIFIER_NAN_HINT = "the noise levels of classifier.process"


def get(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown objective {name!r}; use one of {tuple(OBJECTIVES)}.")
  return OBJECTIVES[name]
