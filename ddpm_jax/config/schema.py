"""What a valid config is: each field's range or choices (every allowed set read from the code
that consumes it) and the relations between fields; and the line that refuses a command-line
setting no part of the run reads (config/validate.py records what it reads), naming what
does read it.

`check(config)` raises ValueError with one line naming the field and the fix;
`unread_message` is the line for a setting the run does not read (config/validate.py).
"""

from __future__ import annotations

import functools

import numpy as np

from ddpm_jax.config import build, fields
from ddpm_jax.core import chain
from ddpm_jax.objectives import augment, rows
from ddpm_jax.samplers import table
from ddpm_jax.training import power_ema

MODES = ("train", "sample", "bpd", "eval", "import", "export", "edit", "phema", "reflow")


BY_NAME = {f.name: f for f in fields.FIELDS}
# (field, test, what it must be): the ranges, one field at a time (config/fields.py).
RANGES = tuple((f.name, f.check, f.want) for f in fields.FIELDS if f.check is not None)

EDM_LOG_SIGMA = 40  # |ln σ| of EDM's training draws: σ² stays finite in float32 (e^±80)
INT_MAX = 2**31 - 1  # integers index int32 arrays and seed int32 keys on the devices


# (field, element test, what the elements are, whether the tuple may be empty, an example):
# the tuple-valued fields.
TUPLES = tuple((f.name, *f.elements) for f in fields.FIELDS if f.elements is not None)
# (first, second): fields whose values must be ordered first < second.
ORDERED = (("diffusion.beta_start", "diffusion.beta_end"), ("sde.beta_min", "sde.beta_max"),
           ("sde.sigma_min", "sde.sigma_max"), ("edm.sigma_min", "edm.sigma_max"),
           ("sampling.edm_s_tmin", "sampling.edm_s_tmax"))
# (field, its choices): settings that name one of a few options, as their consumers list them.
CHOICES = tuple((f.name, f.choices) for f in fields.FIELDS if f.choices is not None)


def field(config, name: str):
  return functools.reduce(lambda node, part: node[part], name.split("."), config)


def _leaves(node, prefix=""):
  for key, value in node.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from _leaves(value, name + ".")
    else:
      yield name, value


def check_types(config) -> None:
  """Every number finite and within int32, every tuple field a tuple of what it holds."""
  for name, value in _leaves(config):
    if isinstance(value, float) and not np.isfinite(value):
      raise ValueError(f"{name}={value!r} must be a finite number; set --config.{name}.")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
      raise ValueError(f"{name}={value} must be at most {INT_MAX} (int32); set "
                       f"--config.{name}.")
  for name, ok, what, may_be_empty, example in TUPLES:
    value = field(config, name)
    if (not isinstance(value, (tuple, list)) or not all(ok(v) for v in value)
        or not (value or may_be_empty)):
      empty = ", or ()" if may_be_empty else ""
      raise ValueError(f"{name}={value!r} must be a {'' if may_be_empty else 'non-empty '}"
                       f"tuple of {what}, e.g. {example}{empty}; set --config.{name}.")


def check(config) -> None:
  """Types, ranges, choices and relations; the first problem as a one-line ValueError."""
  check_types(config)
  for name, ok, want in RANGES:
    value = field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
      raise ValueError(f"{name}={value!r} must be {want}; set --config.{name}.")
  for low, high in ORDERED:
    if not field(config, low) < field(config, high):
      raise ValueError(f"{low}={field(config, low)!r} must be below {high}="
                       f"{field(config, high)!r}; change one of them.")
  for name, choices in CHOICES + _sampler_choices(config):
    if field(config, name) not in choices:
      raise ValueError(f"Unknown {name} {field(config, name)!r}; use one of {choices}.")
  _check_objective(config)
  _check_network(config)
  _check_phema(config)
  _check_pairs(config)
  t, k = config.training, config.training.steps_per_dispatch
  if t.num_train_steps % k or t.checkpoint_every % k or t.log_every % k or t.phema_every % k:
    raise ValueError(f"training.steps_per_dispatch={k} must divide num_train_steps, "
                     f"checkpoint_every, log_every and phema_every; change one of them.")


def _sampler_choices(config) -> tuple:
  """The option choices of the samplers (the chosen one's where several read a field)."""
  mine = table.SAMPLERS.get(config.sampling.method)
  out = {}
  for entry in table.SAMPLERS.values():
    for name, choices in entry.choices.items():
      out.setdefault(name, choices)
  if mine is not None:
    out.update(mine.choices)
  return tuple((f"sampling.{name}", choices) for name, choices in out.items())


def _check_objective(config) -> None:
  obj, t, m, c = config.training.objective, config.training, config.model, config.sde
  if (obj == "classifier") != (m.name == "half_unet"):
    raise ValueError(f"training.objective 'classifier' trains model.name 'half_unet' and only "
                     f"it (now objective {obj!r}, model.name {m.name!r}); set both or "
                     f"neither.")
  if obj == "classifier" and m.conditional:
    raise ValueError("A classifier predicts the labels, it is not fed them; set "
                     "model.conditional=False (data.num_classes is its number of classes).")
  if obj == "ddpm":
    chain.check_types(m.mean_type, m.var_type)
    if t.loss_type == "hybrid" and not chain.learns_variance(m.var_type):
      raise ValueError(f"training.loss_type 'hybrid' trains the variance: set model.var_type "
                       f"to 'learned' or 'learned_range' (not {m.var_type!r}), or use "
                       f"loss_type 'simple'.")
  elif t.t_sampler == "importance":
    raise ValueError("training.t_sampler 'importance' draws the timesteps of objective 'ddpm'; "
                     "for 'dsm' set sde.importance_sampling=True (with likelihood weighting).")
  e = config.edm
  if build.network_objective(config) == "edm" and abs(e.p_mean) + 7 * e.p_std > EDM_LOG_SIGMA:
    raise ValueError(f"edm.p_mean={e.p_mean:g} and edm.p_std={e.p_std:g} draw ln σ beyond "
                     f"±{EDM_LOG_SIGMA} (|p_mean| + 7 p_std > {EDM_LOG_SIGMA}), where σ² "
                     f"overflows float32 and the loss is NaN; EDM uses -1.2 and 1.2.")
  if obj == "flow" and config.flow.prediction == "x0" and config.flow.weighting == "velocity":
    raise ValueError("flow.prediction 'x0' with flow.weighting 'velocity' weighs the x̂_0 error "
                     "by (d/σ)², 1/t² on the linear path (10¹⁰ near t = 0); set "
                     "flow.weighting='x0' (or 'eps').")
  if obj == "dsm":
    if c.importance_sampling and not c.likelihood_weighting:
      raise ValueError("sde.importance_sampling draws t for the likelihood weighting; set "
                       "sde.likelihood_weighting=True too.")
    if c.importance_sampling and c.name == "subvp":
      raise ValueError("sde.importance_sampling is implemented for the VP and VE SDEs; set it "
                       "False for sde.name 'subvp'.")


def _check_network(config) -> None:
  m = config.model
  fixed = "norm_groups" in build.NETWORK_OPTIONS[m.name]  # else EDM's and score_sde's rule
  levels = "ch_mult" in build.NETWORK_ROWS[m.name].fields.values()  # NCSNv2's are fixed
  for c in (m.ch * k for k in (m.ch_mult if levels else ())):
    groups = m.norm_groups if fixed else max(1, min(32, c // 4))
    if c % groups:
      raise ValueError(f"model.ch={m.ch} must give levels (× model.ch_mult) that GroupNorm's "
                       f"{groups} groups{' (model.norm_groups)' if fixed else ''} divide, not "
                       f"{c} channels; set --config.model.ch (e.g. a multiple of 32).")
  if m.name == "ncsnpp":
    if m.conditional:
      raise ValueError("model.name 'ncsnpp' has no class labels; set model.conditional=False "
                       "or use 'song_unet' / 'dhariwal_unet' (label_dim) or 'ddpm'.")
    if m.dtype != "float32":
      raise ValueError(f"model.name 'ncsnpp' computes in float32; set model.dtype='float32' "
                       f"(not {m.dtype!r}).")
    if build.learned_variance(config):
      raise ValueError("model.name 'ncsnpp' has no variance outputs; use model.var_type "
                       "'fixed_small' or 'fixed_large'.")
    if m.scale_by_sigma and build._probe(config).noise_input != "log_sigma":
      raise ValueError("model.scale_by_sigma divides by σ = exp(the noise input), which is "
                       "log σ only for VE score models (training.objective 'dsm' with sde.name "
                       "'ve', or 'ncsn'); set it False.")
  if m.name.startswith("ncsnv2"):
    if build._probe(config).noise_input != "log_sigma":
      raise ValueError(f"model.name {m.name!r} is not fed the noise level (its score is F(x)/σ, "
                       f"a VE model's): use training.objective 'ncsn', or 'dsm' with sde.name "
                       f"'ve'.")
    if m.conditional or build.learned_variance(config):
      raise ValueError(f"model.name {m.name!r} has no class labels and no variance outputs; "
                       f"set model.conditional=False and a fixed model.var_type.")
    if config.training.objective == "dsm" and m.mean_type != "eps":
      raise ValueError(f"model.name {m.name!r} predicts the noise (−F(x)); set "
                       f"model.mean_type='eps' (not {m.mean_type!r}).")
  t = config.training
  labels = augment.LABEL_DIM + (augment.COLOR_LABEL_DIM if t.augment_color else 0)
  if t.augment_p > 0 and (m.name not in ("song_unet", "dhariwal_unet")
                          or m.augment_dim != labels):
    raise ValueError(f"training.augment_p feeds {labels} augment labels to the network: set "
                     f"model.name 'song_unet' or 'dhariwal_unet' with model.augment_dim="
                     f"{labels} (now {m.name!r}, {m.augment_dim}).")


def _check_pairs(config) -> None:
  """Reflow's pairs (data.dataset 'pairs') train a flow model, coupling kept: no flips, no
  augmentation."""
  if config.data.dataset != "pairs":
    return
  t = config.training
  if t.objective != "flow":
    raise ValueError(f"data.dataset 'pairs' holds a flow model's (noise, sample) pairs, which "
                     f"train training.objective 'flow' (reflow), not {t.objective!r}.")
  if config.data.random_flip or t.augment_p > 0:
    raise ValueError("Reflow's pairs keep their coupling: set data.random_flip=False and "
                     "training.augment_p=0 (a flipped or augmented image is no longer its "
                     "noise's sample).")


def _check_phema(config) -> None:
  """training.phema_sigma_rels: a tuple of distinct lengths in (0, 1/√12]."""
  rels = config.training.phema_sigma_rels
  want = (f"a tuple of distinct EMA lengths in (0, {power_ema.SIGMA_REL_MAX:.4f}], e.g. (0.05, "
          f"0.10), or () for no post-hoc EMA")
  if not isinstance(rels, (tuple, list)) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and
      0 < v <= power_ema.SIGMA_REL_MAX for v in rels) or len(set(rels)) != len(rels):
    raise ValueError(f"training.phema_sigma_rels={rels!r} must be {want}; set "
                     f"--config.training.phema_sigma_rels.")


# ------------------------------------------------------------------ what a run reads

def unread_message(config, mode: str, name: str) -> str:
  """The gate's line for a command-line setting `name` that this run does not read
  (config/reads.py records what it reads), naming what does read it where a table says."""
  context = (f"this run: --mode {mode}, training.objective {config.training.objective!r}, "
             f"sampling.method {config.sampling.method!r}, model.name {config.model.name!r}")
  who = _readers(name)
  where = f"is read only by {who}" if who else "is not read by this run"
  return f"--config.{name} {where} ({context}); drop it or change what it configures."


def _readers(name: str) -> str:
  """Who reads field `name`, from the tables of samplers, networks and objectives; "" where
  no table says."""
  section, _, leaf = name.partition(".")
  if section == "sampling":
    methods = [m for m, e in table.SAMPLERS.items() if leaf in e.options.values()]
    if methods:
      return f"sampling.method {' / '.join(map(repr, methods))}"
  if section == "model":
    networks = [n for n, fields in build.NETWORK_OPTIONS.items() if leaf in fields]
    if networks:
      return f"model.name {' / '.join(map(repr, networks))}"
  users = []
  for obj, row in rows.OBJECTIVES.items():
    for f in row.process_fields + row.loss_fields + row.denoiser_fields:
      if (f if isinstance(f, str) else f.name) == name:
        users.append(f"training.objective {obj!r}" if isinstance(f, str) else
                     f"training.objective {obj!r} with {f.on} {' / '.join(map(repr, f.values))}")
        break
  return ", ".join(users) or BY_NAME[name].read_by or fields.READ_BY.get(section, "")
