"""config.sampling → the compiled sampler: the loop of sampling.method (samplers/), its model
(the network, its score for the SDE samplers, classifier-free guidance) and the network
evaluations per sample. Like builders.py, whose schedule, SDE and network functions it uses,
it reads the config once per run and returns plain functions.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from ddpm_jax import builders
from ddpm_jax.samplers import common, ddim, ddpm, dpm_solver, edm, guidance, langevin, ode, pc
from ddpm_jax.samplers import unipc

DEFAULT_SPACING = {"dpm_solver": "logsnr", "unipc": "logsnr", "edm": "karras"}
# Raised whenever a sampler's samples for an unchanged config change, so that results named
# by the settings (runs.results_name) made by older code are not reused. 2: dpm_solver, unipc
# and edm honour sampling.clip_x0 (they ignored it before); 3: so does the ode.
REVISION = 3


def nfe_per_sample(config) -> int | None:
  """Network evaluations per sample of a fixed-step sampler (×2 under classifier-free
  guidance); None for the probability-flow ODE, whose solver counts its own."""
  s = config.sampling
  if s.method == "ddim":
    n = s.num_steps
  elif s.method == "ddpm":
    n = config.diffusion.num_timesteps
  elif s.method == "pc":
    n = builders.build_sde(config).N * ((s.predictor != "none") +
                                         (s.corrector != "none") * s.n_steps_each)
  elif s.method == "ald":  # every level's Langevin steps and the final denoising step
    n = len(builders.ncsn_sigmas(config)) * s.n_steps_each + s.denoise
  elif s.method == "dpm_solver":
    n = dpm_solver.nfe(s.num_steps, s.solver_order, s.dpm_solver_variant, s.denoise)
  elif s.method == "unipc":
    n = unipc.nfe(s.num_steps, s.denoise)
  elif s.method == "edm":
    n = edm.nfe(s.num_steps, s.denoise)
  else:
    return None
  return n * (2 if _guided(config) else 1)


def _guided(config) -> bool:
  return bool(config.model.conditional and config.sampling.guidance_weight)


def sampler_loop(config, shape):
  """The per-device loop of config.sampling.method (samplers/common.py) for images of
  `shape`; the methods of builders.SCORE_SAMPLERS take the score as their model."""
  s, m = config.sampling, config.model
  if s.method == "ddim":
    return ddim.ddim_loop(builders.build_schedule(config), shape, num_steps=s.num_steps,
                          eta=s.eta, skip_type=s.skip_type, mean_type=m.mean_type,
                          var_type=m.var_type, clip_x0=s.clip_x0)
  if s.method == "ddpm":
    return ddpm.ddpm_loop(builders.build_schedule(config), shape, mean_type=m.mean_type,
                          var_type=m.var_type, clip_x0=s.clip_x0)
  if s.method == "ald":
    return langevin.ald_loop(builders.ncsn_sigmas(config), shape, step_lr=s.step_lr,
                             n_steps_each=s.n_steps_each, denoise=s.denoise)
  sde = builders.build_sde(config)
  if s.method == "pc":
    return pc.pc_loop(sde, shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                      n_steps=s.n_steps_each, eps=s.eps, denoise=s.denoise)
  if s.method == "ode":
    return ode.ode_loop(sde, shape, solver=s.ode_solver, rtol=s.rtol, atol=s.atol,
                        num_steps=s.num_steps, eps=s.eps, denoise=s.denoise, clip_x0=s.clip_x0)
  grid = dict(num_steps=s.num_steps, spacing=s.spacing or DEFAULT_SPACING[s.method], eps=s.eps,
              denoise=s.denoise, clip_x0=s.clip_x0)
  if s.method == "dpm_solver":
    return dpm_solver.dpm_solver_loop(sde, shape, order=s.solver_order,
                                      variant=s.dpm_solver_variant,
                                      lower_order_final=s.lower_order_final, **grid)
  if s.method == "unipc":
    return unipc.unipc_loop(sde, shape, order=s.solver_order, variant=s.unipc_variant,
                            corrector=s.unipc_corrector, lower_order_final=s.lower_order_final,
                            **grid)
  return edm.edm_loop(sde, shape, churn=s.edm_churn, s_tmin=s.edm_s_tmin, s_tmax=s.edm_s_tmax,
                      s_noise=s.edm_s_noise, **grid)


def make_sampler(config, model, shape, mesh):
  """sample_fn(params, key, num, first_index=0) -> (samples [num, *shape], network
  evaluations per sample) with the configured sampler (config.sampling, after
  builders.validate), compiled once (for each distinct num) and data-parallel over `mesh`.

  Class-conditional models get labels cycling through the classes: sample i of the whole
  run (i = first_index, first_index + 1, …) has label i mod num_classes; with
  sampling.guidance_weight, classifier-free guidance, applied to the network's output (ε, x̂_0,
  v or the score: each is affine in the others at fixed x and t, so every sampler sees the
  same guided model).
  """
  s = config.sampling
  loop = sampler_loop(config, tuple(shape))
  apply = builders.apply_fn(model)
  score_of = builders.network_score(config) if s.method in builders.SCORE_SAMPLERS else None
  classes, guided, fixed_nfe = builders.num_classes(config), _guided(config), nfe_per_sample(config)

  def sampler_model(params):
    net = functools.partial(apply, params)
    if guided:
      net = guidance.classifier_free_guidance(net, s.guidance_weight, classes)
    return net if score_of is None else score_of(net)

  run = common.compile_loop(loop, sampler_model, mesh)

  def sample_fn(params, key, num: int, first_index: int = 0):
    labels = None if classes is None else np.arange(first_index, first_index + num) % classes
    out = run(params, key, num, cond=labels)
    if fixed_nfe is None:  # the ODE: (samples, evaluations per sample)
      return out[0], float(np.mean(jax.device_get(out[1])))
    return out, float(fixed_nfe)
  return sample_fn
