"""config.sampling → the compiled sampler: the row of sampling.method in samplers/table.py,
its options read from the config, the network's Denoiser (clipping where the sampler honours
sampling.clip_x0, classifier-free guidance for conditional models) and the network
evaluations per sample.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from ddpm_jax.config import build, load, schema
from ddpm_jax.samplers import common, table

# Raised whenever a sampler's samples for an unchanged config change, so that results named
# by the settings (modes/runs.results_name) made by older code are not reused. 2: dpm_solver,
# unipc and edm honour sampling.clip_x0; 3: so does the ode; 4: every sampler reads one
# Denoiser (core/denoiser.py) and DDPM networks on the linear β schedule are sampled on their
# exact discrete VP process by the SDE samplers (before: the continuous VP SDE).
REVISION = 4


def check(config) -> None:
  """sampling.method fits the objective and its settings fit each other (the modes that
  sample; a run that does not sample, e.g. --mode import, need not name a sampler)."""
  s, obj = config.sampling, config.training.objective
  if obj == "classifier":
    return  # a classifier does not sample
  entry = table.get(s.method)
  if obj not in entry.objectives:
    fits = tuple(name for name, e in table.SAMPLERS.items() if obj in e.objectives)
    raise ValueError(f"sampling.method {s.method!r} does not fit training.objective "
                     f"{obj!r}; use one of {fits}.")
  if s.method == "dpm_solver" and s.dpm_solver_variant == "singlestep" and s.solver_order != 2:
    raise ValueError(f"sampling.dpm_solver_variant 'singlestep' is DPM-Solver++(2S), of order "
                     f"2; set sampling.solver_order=2 (not {s.solver_order}).")
  if s.method == "ddim" and s.num_steps > config.diffusion.num_timesteps:
    raise ValueError(f"sampling.num_steps={s.num_steps} must be at most "
                     f"diffusion.num_timesteps={config.diffusion.num_timesteps}; lower it.")


def options(config, t_start: float | None = None) -> dict:
  """The builder keywords of sampling.method, read from config.sampling (an empty spacing
  is the sampler's own default grid); with a t_start, SDEdit's start (--mode edit)."""
  s, entry = config.sampling, table.get(config.sampling.method)
  out = {keyword: s[field] for keyword, field in entry.options.items()}
  if "spacing" in out and not out["spacing"]:
    out["spacing"] = entry.grid
  return out if t_start is None else {**out, "t_start": t_start}


def option_names(method: str) -> tuple[str, ...]:
  """The sampling.* fields a sample call of `method` takes as keyword options (the Python
  API's names are the command line's): the sampler's own, clip_x0 where it clips, and the
  classifier-free guidance weight."""
  entry = table.get(method)
  return tuple(dict.fromkeys([*entry.options.values(), *(["clip_x0"] if entry.clips else []),
                              "guidance_weight"]))


def with_options(config, method: str | None, options: dict, where: str):
  """A copy of `config` with sampling.method and the sampling.* `options` set and checked
  (config/schema.py); an option `method` does not read is a one-line ValueError naming
  `where` and the options it takes."""
  config = config.copy_and_resolve_references()
  method = method or config.sampling.method
  accepted = option_names(method)
  unknown = [k for k in options if k not in accepted]
  if unknown:
    raise ValueError(f"{where}: method {method!r} takes no option {unknown[0]!r}; its options "
                     f"are {accepted}.")
  load.assign(config, {"sampling.method": method,
                       **{f"sampling.{k}": v for k, v in options.items()}})
  schema.check(config)
  check(config)
  return config


def guided(config) -> bool:
  return bool(config.model.conditional and config.sampling.guidance_weight)


def evaluations_per_call(config, classifier: bool) -> int:
  """Evaluations per prediction: 2 networks under classifier-free guidance, +1 for the
  classifier's gradient (core/denoiser.py)."""
  return (2 if guided(config) else 1) + bool(classifier)


def nfe_per_sample(config, classifier: bool = False, t_start: float | None = None
                   ) -> int | None:
  """Evaluations per sample of a fixed-step sampler (evaluations_per_call per step); None for
  the adaptive probability-flow ODE, whose solver counts its own."""
  n = table.nfe(config.sampling.method, build.process(config), options(config, t_start))
  return None if n is None else n * evaluations_per_call(config, classifier)


def loop(config, shape, t_start: float | None = None):
  """The per-device loop of sampling.method for images of `shape` (samplers/common.py)."""
  entry = table.get(config.sampling.method)
  return entry.build(build.process(config), tuple(shape), **options(config, t_start))


def make_sampler(config, net_module, shape, mesh, classifier_module=None,
                 t_start: float | None = None):
  """sample_fn(params, key, num, first_index=0, *, x=None, known=None, labels=None) ->
  (samples [num, *shape], evaluations per sample) with the configured sampler, compiled once
  (for each distinct num) and data-parallel over `mesh`. With a `t_start` (SDEdit, --mode
  edit), x are the images to edit; known = (data, mask) inpaints (core/denoiser.py).

  Class-conditional models get labels cycling through the classes: sample i of the whole
  run (i = first_index, first_index + 1, …) has label i mod num_classes; with
  sampling.guidance_weight, classifier-free guidance (applied by the Denoiser). With a
  `classifier_module` (config/guidance.py), params = (network's, classifier's) and the
  sampler is guided by it at sampling.classifier_scale, the labels cycling through its
  classes.
  """
  check(config)
  s = config.sampling
  entry = table.get(s.method)
  run = common.compile_loop(loop(config, shape, t_start), make_denoiser(
      config, net_module, entry.clips, classifier_module), mesh)
  classes = build.num_classes(config) or getattr(classifier_module, "num_classes", None)
  fixed_nfe = nfe_per_sample(config, classifier_module is not None, t_start)
  per_call = evaluations_per_call(config, classifier_module is not None)

  def sample_fn(params, key, num: int, first_index: int = 0, *, x=None, known=None,
                labels=None):
    if labels is None and classes is not None:
      labels = np.arange(first_index, first_index + num) % classes
    x, info = run(params, key, num, x_init=x, cond=labels, known=known)
    if fixed_nfe is None:  # the ODE counts its evaluations of the field
      return x, float(np.mean(jax.device_get(info["nfe"]))) * per_call
    return x, float(fixed_nfe)
  return sample_fn


def make_denoiser(config, net_module, clips: bool, classifier_module=None):
  """params ↦ the Denoiser of the network with those parameters, as the sampler reads it
  (clipped where `clips` and sampling.clip_x0, guided by sampling.guidance_weight)
  (params = (network's, classifier's) with a classifier); the settings are read here, so the
  closure holds plain objects."""
  make = build.denoiser(config, clip_x0=clips and config.sampling.clip_x0)
  apply = build.apply_fn(net_module)
  guidance = (config.sampling.guidance_weight, build.num_classes(config)) if guided(config) \
      else None
  apply_classifier = None
  if classifier_module is not None:
    apply_classifier = build.apply_fn(classifier_module)
    scale, net_labels = config.sampling.classifier_scale, bool(config.model.conditional)

  def denoiser(params):
    if apply_classifier is not None:
      params, classifier_params = params
    d = make(functools.partial(apply, params))
    if guidance is not None:
      d = d.guided(*guidance)
    if apply_classifier is not None:
      d = d.classifier_guided(functools.partial(apply_classifier, classifier_params), scale,
                              net_labels=net_labels)
    return d
  return denoiser
