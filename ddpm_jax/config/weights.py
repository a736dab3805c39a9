"""Published weights in and ours out, by config: what `--mode import`/`export` and
`Pipeline.load`/`save` run.

  config, params = weights.load_diffusers("ddpm-cifar10-32")       # google/ddpm-* folders
  weights.save_diffusers(config, params, "exported")               # loads in diffusers
  params = weights.load_score_sde("checkpoint_26", config)         # score_sde (Flax / .pth)
  params = weights.load_edm("edm-cifar10-uncond-vp.npz", config)   # EDM's exported state dict
  weights.export(config, params, "edm:net.npz")                    # or diffusers:FOLDER
  net = weights.network_fn(config)                                 # net(params, x, t[, y])

Here a ConfigDict meets the file formats (interop/diffusers.py, score_sde.py, edm_weights.py,
which take plain arguments): the network a config builds gives the template that every
tensor is checked against, by name and shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ddpm_jax.config import build, defaults, load
from ddpm_jax.infra import files
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.interop import (
  adm,
  diffusers,
  diffusers_ncsnpp,
  edm_weights,
  ncsnv2_checkpoints,
  score_sde,
  tensors,
  torch_files,
)

FORMATS = ("diffusers", "score_sde", "edm", "adm", "ncsnv2")  # --import_from
EXPORTS = ("diffusers", "edm")  # --export_to


def network_fn(config, channels: int = 3):
  """net(params, x, noise_input, y=None, augment=None) -> output: the network `config`
  builds, compiled, on NHWC float32 x with the noise input its Denoiser feeds it (the chain
  step for DDPM networks and score_sde's VP models, log σ for VE ones, EDM's c_noise for
  EDM's), class labels y and, for EDM's networks with model.augment_dim, the augmentation
  labels [B, augment_dim] (objectives/augment.py; EDM's augment_labels)."""
  module, augmented = build.model(config, channels), bool(config.model.augment_dim)

  @jax.jit
  def net(params, x, noise_input, y=None, augment=None):
    if augment is not None and not augmented:
      raise ValueError("augment labels are read by EDM's networks with model.augment_dim > 0; "
                       "drop the argument augment or set model.augment_dim.")
    extra = {} if augment is None else {"augment": augment}
    return module.apply({"params": params}, x, noise_input, y, **extra)
  return net


def param_shapes(config, channels: int = 3) -> tuple[dict, list[str]]:
  """(the network's parameter shapes, its top-level entries in creation order)."""
  net, size = build.model(config, channels), config.data.image_size
  args = (jnp.zeros((1, size, size, channels)), jnp.zeros((1,)),
          jnp.zeros((1,), jnp.int32) if build.num_classes(config) else None)
  order = []

  def init():
    params = net.init(jax.random.key(0), *args)["params"]
    order.extend(params)  # a dict in creation order, before jax sorts it
    return params
  return jax.eval_shape(init), order


def params_channels(config, params, channels: int | None = None) -> int:
  """The image channels (3, 1, 4 or 2) of the network `config` builds whose parameter shapes
  `params` has; a `channels` given is checked. Neither fitting is a one-line ValueError."""
  shapes = jax.tree.map(lambda p: tuple(np.shape(p)), params)
  for c in ((channels,) if channels else (3, 1, 4, 2)):
    template, _ = param_shapes(config, c)
    if jax.tree.map(lambda t: tuple(t.shape), template) == shapes:
      return c
  raise ValueError(f"The parameters are not those of the network this config builds "
                   f"(model.*) with {channels or '1, 2, 3 or 4'} image channels; export with "
                   f"the config they were trained with.")


# ------------------------------------------------------------------ diffusers

def _diffusers_files(folder: str) -> tuple[str, str, str]:
  """(config.json, weights, scheduler_config.json) of a UNet2DModel folder or a pipeline."""
  unet = folder if os.path.isfile(os.path.join(folder, "config.json")) else os.path.join(folder, "unet")
  config = os.path.join(unet, "config.json")
  if not os.path.isfile(config):
    raise FileNotFoundError(f"No config.json in {folder} or {folder}/unet; pass a diffusers "
                            f"UNet2DModel folder (e.g. a download of google/ddpm-cifar10-32).")
  weights = os.path.join(unet, diffusers.WEIGHTS)
  if not os.path.isfile(weights):
    raise FileNotFoundError(
        f"No {diffusers.WEIGHTS} in {unet} (a .bin file is a pickle, which is never "
        f"loaded); download the .safetensors file of the release, or convert with diffusers: "
        f"UNet2DModel.from_pretrained(FOLDER).save_pretrained(FOLDER).")
  for candidate in (os.path.join(unet, "scheduler_config.json"),
                    os.path.join(unet, "..", "scheduler", "scheduler_config.json"),
                    os.path.join(folder, "scheduler", "scheduler_config.json")):
    if os.path.isfile(candidate):
      return config, weights, os.path.normpath(candidate)
  return config, weights, None  # a bare UNet2DModel folder (unet.save_pretrained)


def diffusers_fields(folder: str, config=None) -> dict:
  """This library's config fields for a diffusers folder (diffusers.settings); a bare
  UNet2DModel folder (no scheduler config) takes its β schedule, prediction and variance from
  `config`, saying so, or is refused where no config is given."""
  unet, _, scheduler = _diffusers_files(folder)
  unet_config = _read_json(unet)
  if diffusers_ncsnpp.is_ncsnpp(unet_config):
    if scheduler is None:
      raise FileNotFoundError(f"No scheduler_config.json beside {unet} or in a scheduler/ "
                              f"folder: an NCSN++ folder's σ range is its scheduler's; "
                              f"download it too.")
    return diffusers_ncsnpp.settings(unet_config, _read_json(scheduler), unet)
  if scheduler is not None:
    return diffusers.settings(unet_config, _read_json(scheduler), unet)
  if config is None:
    raise FileNotFoundError(f"No scheduler_config.json beside {unet} or in a scheduler/ folder "
                            f"(a bare UNet2DModel folder): it gives the β schedule and the "
                            f"prediction; download it too, or give a config that states them "
                            f"(diffusion.*, model.mean_type, model.var_type).")
  log(f"{folder} has no scheduler config: its β schedule, prediction and variance are the "
      f"config's (diffusion.beta_schedule={config.diffusion.beta_schedule!r}, "
      f"model.mean_type={config.model.mean_type!r}, model.var_type={config.model.var_type!r})")
  return diffusers.settings(unet_config, diffusers.scheduler_config(_settings(config)), unet)


def load_diffusers(folder: str, config=None):
  """(config, params) of a diffusers UNet2DModel folder: `config` (default: the library's
  defaults) with every field the folder determines set from it (a bare UNet2DModel folder:
  the schedule from `config`, diffusers_fields)."""
  fields = diffusers_fields(folder, config)
  config = _with_fields(config, fields)
  _, weights, _ = _diffusers_files(folder)
  return config, diffusers_params(weights, config, fields["in_channels"],
                                  fields.get("centered", True))


def diffusers_params(weights: str, config, channels: int, centered: bool = True) -> dict:
  """The parameters of a folder's weights file: the DDPM U-Net's, or NCSN++'s by way of
  score_sde's names (an uncentered model mapped onto [−1, 1] data as score_sde's are)."""
  state = diffusers.modern_names(tensors.read(weights))
  template, order = param_shapes(config, channels)
  advice = "check the config against the folder's config.json"
  if config.model.name != "ncsnpp":
    return tensors.tree_from_state_dict(state, _unet_names(config), template, weights, advice)
  state = diffusers_ncsnpp.score_sde_state_dict(
      state, len(config.model.ch_mult), config.model.num_res_blocks, _attention_levels(config),
      weights)
  params = tensors.tree_from_state_dict(state, score_sde.torch_names(list(state), order),
                                        template, weights, advice)
  return params if centered else score_sde.onto_centered_data(params)


def _attention_levels(config) -> list[bool]:
  m = config.model
  return diffusers.attention_levels(config.data.image_size, m.attn_resolutions, len(m.ch_mult))


def _unet_names(config):
  m = config.model
  return diffusers.leaf_names(len(m.ch_mult), m.num_res_blocks, _attention_levels(config))


def save_diffusers(config, params, folder: str, channels: int | None = None) -> str:
  """Writes `params` of a DDPM U-Net as a diffusers pipeline folder: model_index.json,
  unet/config.json + diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json
  (DDPMPipeline.from_pretrained(folder) and UNet2DModel.from_pretrained(folder,
  subfolder="unet") load it), its in_channels those of the parameters. Returns the folder."""
  check_export(config, f"diffusers:{folder}")
  return _write_diffusers(config, params, folder, params_channels(config, params, channels))


def _settings(config, channels: int = 3) -> dict:
  """The config's fields as diffusers.settings gives them (its inverse's input)."""
  fields = {f"{section}.{k}": v for section in ("model", "diffusion")
            for k, v in config[section].items()}
  fields.update({"data.image_size": config.data.image_size, "in_channels": channels,
                 "sampling.clip_x0": config.sampling.clip_x0, "betas": build.betas(config)})
  return fields


def _write_diffusers(config, params, folder: str, channels: int) -> str:
  """The pipeline folder, written whole beside `folder` and renamed to it (a write that fails,
  e.g. on a full disk, leaves nothing)."""
  unet, scheduler = diffusers.config_files(_settings(config, channels))
  state = tensors.state_dict_from_tree(jax.device_get(params), _unet_names(config))
  from safetensors.numpy import save_file
  partial = f"{folder.rstrip(os.sep)}.partial-{os.getpid()}"
  with _writing(folder, partial):
    os.makedirs(os.path.join(partial, "unet"))
    save_file(state, os.path.join(partial, "unet", diffusers.WEIGHTS), metadata={"format": "pt"})
    files.save_json(os.path.join(partial, "unet", "config.json"), unet)
    files.save_json(os.path.join(partial, "scheduler", "scheduler_config.json"), scheduler)
    files.save_json(os.path.join(partial, "model_index.json"), {
        "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
    os.rename(partial, folder)
  return folder


@contextlib.contextmanager
def _writing(target: str, partial: str | None = None):
  """An export's writes: an OSError (no such folder, a file in the way, read-only, full) is a
  one-line ValueError naming the target, with the `partial` folder removed."""
  try:
    yield
  except OSError as e:
    if partial:
      shutil.rmtree(partial, ignore_errors=True)
    raise ValueError(f"--export_to: cannot write {target} ({e.strerror or e}); choose a "
                     f"writable path with room (nothing was left there).") from None


# ------------------------------------------------------------------ score_sde and EDM

def load_score_sde(path: str, config, channels: int = 3, centered: bool | None = None) -> dict:
  """Parameters of a score_sde checkpoint, its EMA weights: a Flax `checkpoint_N` file or a
  score_sde_pytorch `.pth` (read as data: interop/torch_files.py), of an NCSN++/DDPM++ network
  (model.name 'ncsnpp') or of score_sde's DDPM (model.name 'ddpm'). `centered`: whether it was
  trained on data in [−1, 1] (score_sde's data.centered; default: False for the VE SDE, as its
  configs have it, else True); an uncentered VE model's log σ input is shifted by log 2."""
  if config.model.name not in ("ncsnpp", "ddpm"):
    raise ValueError(f"score_sde checkpoints are NCSN++/DDPM++ networks (model.name 'ncsnpp') "
                     f"or its DDPM model (model.name 'ddpm'), not {config.model.name!r}; set "
                     f"the one it was trained with, and its options.")
  template, order = param_shapes(config, channels)
  torch_file = path.endswith(torch_files.SUFFIXES)
  if config.model.name == "ddpm":
    if torch_file:
      state = {k.removeprefix("module."): v
               for k, v in score_sde.ema_state_dict(torch_files.read(path)).items()}
    else:
      state = {"/".join(p): v for p, v in
               traverse_util.flatten_dict(dict(score_sde.read_flax(path))).items()}
    mods = score_sde.ddpm_modules(len(config.model.ch_mult), config.model.num_res_blocks,
                                  _attention_levels(config))
    return tensors.tree_from_state_dict(
        score_sde.ddpm_state_dict(state, mods, "torch" if torch_file else "flax"),
        _unet_names(config), template, path, score_sde.ADVICE)
  if torch_file:
    state = score_sde.ema_state_dict(torch_files.read(path),
                                     lambda keys: score_sde.fourier_keys(keys, order))
    params = tensors.tree_from_state_dict(state, score_sde.torch_names(list(state), order),
                                          template, path, score_sde.ADVICE)
  else:
    params = score_sde.params_from_flax(score_sde.read_flax(path), template, path)
  ve = config.training.objective == "dsm" and config.sde.name == "ve"
  if centered is None:
    centered = not ve
  if not centered:
    if not (ve and config.model.embedding_type == "fourier"):
      raise ValueError("An uncentered score_sde model (data in [0, 1]) is read onto this "
                       "library's [−1, 1] data only for the VE SDE with Fourier embeddings "
                       "(its σ doubles); pass centered=True if it was trained on [−1, 1].")
    params = score_sde.onto_centered_data(params)
  return params


def edm_preconditioner(config) -> str:
  """Which of EDM's preconditioners trained the SongUNet/DhariwalUNet `config` describes
  ("edm", "vp" or "ve"; interop/edm_weights.py), from its objective and SDE; a config none
  of them trained is a one-line ValueError naming the fields."""
  m, objective = config.model, config.training.objective
  if m.name not in ("song_unet", "dhariwal_unet"):
    raise ValueError(f"EDM's networks are model.name 'song_unet' (DDPM++, NCSN++) or "
                     f"'dhariwal_unet' (ADM), not {m.name!r}.")
  if objective == "edm":
    return "edm"
  sde = config.sde
  if objective == "dsm" and sde.name in ("vp", "ve") and m.name == "song_unet":
    wanted = {"model.mean_type": "eps"}
    if sde.name == "vp":  # VPPrecond's β_min, β_d = 19.9 and M = 1000
      wanted.update({"sde.beta_min": 0.1, "sde.beta_max": 20.0, "sde.num_scales": 1000})
    for name, want in wanted.items():
      node, leaf = load.parent(config, name)
      if node[leaf] != want:
        raise ValueError(f"EDM's {sde.name.upper()}Precond networks have {name}={want!r}, the "
                         f"config {node[leaf]!r}; set --config.{name}={want!r}.")
    return sde.name
  raise ValueError(f"An EDM state dict was trained with EDMPrecond (training.objective=edm), "
                   f"VPPrecond or VEPrecond (training.objective=dsm with sde.name vp or ve, "
                   f"model.name song_unet), not objective {objective!r} with "
                   f"{'sde.name ' + repr(sde.name) + ' and ' if objective == 'dsm' else ''}"
                   f"model.name {m.name!r}; set the one it was trained with.")


def load_edm(path: str, config, channels: int = 3) -> dict:
  """SongUNet/DhariwalUNet parameters of an EDM state dict (.npz or .safetensors; EDM's
  .pkl files are refused with the one-command export, interop/edm_weights.py), trained with
  the preconditioner the config's objective names (edm_preconditioner: EDM's, or the VP/VE
  baselines as this library's dsm VP/VE models)."""
  precond = edm_preconditioner(config)
  params = _edm_params(edm_weights.read(path), config, channels, path)
  if precond == "ve":
    params = edm_weights.from_ve_precond(params, config.model.embedding_type)
  return params


def load_adm(path: str, config, channels: int = 3) -> dict:
  """DhariwalUNet parameters of an OpenAI guided-diffusion checkpoint (ADM's UNetModel state
  dict: a .pt read as data, or .npz/.safetensors; interop/adm.py), for a config of model.name
  'dhariwal_unet' with the checkpoint's flags: ch (num_channels), ch_mult, num_res_blocks,
  attn_resolutions, model.num_heads (--num_heads; 0 for --num_head_channels 64),
  model.use_new_attention_order, and the chain (training.objective 'ddpm', its
  --noise_schedule; --learn_sigma: model.var_type 'learned_range')."""
  m = config.model
  if m.name != "dhariwal_unet" or config.training.objective != "ddpm":
    raise ValueError(f"guided-diffusion's UNetModel is model.name 'dhariwal_unet' on the chain "
                     f"(training.objective 'ddpm'), not {m.name!r} with "
                     f"{config.training.objective!r}; set both, with the checkpoint's flags.")
  adm.check_widths(m.ch, m.ch_mult)
  raw = _read_state_file(path)
  if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                          for k, v in raw.items()):
    raise tensors.FormatError(f"{path} is not a state dict (a mapping of names to tensors); "
                              f"pass guided-diffusion's model or EMA .pt file.")
  state = adm.edm_state_dict(raw, config.data.image_size, m.ch_mult, m.num_res_blocks,
                             tuple(m.attn_resolutions), lambda c: m.num_heads or c // 64,
                             bool(m.use_new_attention_order), path)
  return _edm_params(state, config, channels, path)


def _read_state_file(path: str):
  """What a weights file holds: a PyTorch file as data (interop/torch_files.py), else a
  .safetensors or .npz state dict (interop/tensors.py)."""
  return torch_files.read(path) if path.endswith(torch_files.SUFFIXES) else tensors.read(path)


def _edm_params(state, config, channels: int, path: str) -> dict:
  """The parameters of an EDM-named state dict for the network `config` builds; a misfit is a
  one-line FormatError naming the file."""
  template, _ = param_shapes(config, channels)
  try:
    return edm_weights.params_from_state_dict(state, template)
  except tensors.FormatError:
    raise
  except ValueError as e:
    raise tensors.FormatError(f"{path}: {e}") from None


def load_ncsnv2(path: str, config, channels: int = 3) -> dict:
  """NCSNv2 parameters of an ermongroup/ncsnv2 checkpoint (checkpoint_N.pth, its EMA weights;
  interop/ncsnv2_checkpoints.py) or a state dict file, for model.name 'ncsnv2',
  'ncsnv2_deeper' or 'ncsnv2_deepest' (the reference's NCSNv2, NCSNv2Deeper, NCSNv2Deepest)
  with model.ch its ngf. Its σ levels are the config's (sde.*: the paper's doubled, for this
  library's [−1, 1] data)."""
  if not config.model.name.startswith("ncsnv2"):
    raise ValueError(f"NCSNv2 checkpoints are model.name 'ncsnv2' (CIFAR-10, CelebA), "
                     f"'ncsnv2_deeper' (LSUN) or 'ncsnv2_deepest' (FFHQ), not "
                     f"{config.model.name!r}.")
  state = ncsnv2_checkpoints.state_dict(_read_state_file(path), path)
  template, _ = param_shapes(config, channels)
  rows = [(".".join(p), "/".join(p), "vector") for p in traverse_util.flatten_dict(template)]
  return tensors.tree_from_state_dict(state, rows, template, path,
                                      "check model.name and model.ch (ngf) against the "
                                      "checkpoint's config")


# ------------------------------------------------------------------ --mode import

def parse_source(source: str, formats=FORMATS) -> tuple[str, str]:
  """'diffusers:FOLDER' → ('diffusers', 'FOLDER')."""
  fmt, sep, path = source.partition(":")
  if not sep or fmt not in formats or not path:
    flag = "--import_from" if formats == FORMATS else "--export_to"
    raise ValueError(f"{flag}={source!r}: use FORMAT:PATH with FORMAT one of {formats}, "
                     f"e.g. {flag}=diffusers:ddpm-cifar10-32.")
  return fmt, os.path.expanduser(path)


def check_export(config, target: str) -> None:
  """The target names a format this config's network is written in, and is not there yet."""
  fmt, path = parse_source(target, EXPORTS)
  m = config.model
  if fmt == "edm" and m.name not in ("song_unet", "dhariwal_unet"):
    raise ValueError(f"--export_to=edm: writes EDM's networks (model.name 'song_unet' or "
                     f"'dhariwal_unet'), not {m.name!r}; use diffusers for the DDPM U-Net.")
  if fmt == "edm":
    edm_preconditioner(config)
  if fmt == "diffusers" and (m.name != "ddpm" or config.training.objective != "ddpm"
                              or m.conditional):
    raise ValueError(f"--export_to=diffusers: writes the unconditional DDPM U-Net of "
                     f"training.objective 'ddpm' (model.name {m.name!r}, objective "
                     f"{config.training.objective!r}); use edm for SongUNet/DhariwalUNet.")
  if fmt == "edm" and not path.endswith(".npz"):
    raise ValueError(f"--export_to=edm:{path}: an EDM state dict is written as .npz (its "
                     f"importers read the format from the suffix); name it {path}.npz.")
  if os.path.exists(path):
    raise ValueError(f"--export_to: {path} exists; choose a new path (nothing is overwritten).")


def export(config, params, target: str, channels: int | None = None) -> str:
  """Writes `params` to target 'diffusers:FOLDER' or 'edm:FILE.npz'; returns the path. The
  image channels are those of the parameters (a given count is checked against them)."""
  check_export(config, target)
  fmt, path = parse_source(target, EXPORTS)
  channels = params_channels(config, params, channels)
  if fmt == "diffusers":
    return _write_diffusers(config, params, path, channels)
  m = config.model
  song = m.name == "song_unet"  # DhariwalUNet resamples with EDM's defaults
  if edm_preconditioner(config) == "ve":
    params = edm_weights.to_ve_precond(jax.device_get(params), m.embedding_type)
  with _writing(path):
    files.save_npz(path, **edm_weights.state_dict(
        params, tuple(m.resample_filter) if song else (1, 1),
        m.encoder_type if song else "standard", m.decoder_type if song else "standard"))
  return path


# The fields a diffusers folder fixes that the run's config must have (dropout, the fixed
# variance and clipping are choices of training and sampling, not of the weights).
WEIGHT_FIELDS = ("model.name", "model.ch", "model.ch_mult", "model.num_res_blocks",
                 "model.norm_groups", "model.attn_resolutions", "model.resamp_with_conv", "model.conditional",
                 "model.mean_type", "data.image_size", "training.objective",
                 "diffusion.beta_schedule", "diffusion.beta_start", "diffusion.beta_end",
                 "diffusion.num_timesteps", "diffusion.zero_terminal_snr")


def import_params(config, source: str, channels: int) -> dict:
  """The parameters `source` ('FORMAT:PATH') holds, for the network `config` builds; a
  diffusers folder that does not match the config is one line naming the field."""
  fmt, path = parse_source(source)
  if fmt == "diffusers":
    fields = diffusers_fields(path, config)
    if fields["model.name"] == "ncsnpp":
      wanted = [k for k in fields if k.split(".")[0] in ("model", "data", "training", "sde")]
    else:
      learned = fields["model.var_type"].startswith("learned")
      wanted = [*WEIGHT_FIELDS, *(["model.var_type"] if learned else [])]
    for name in wanted:
      node, leaf = load.parent(config, name)
      have, want = node[leaf], fields[name]
      if (tuple(have) if isinstance(have, (list, tuple)) else have) != want:
        raise ValueError(f"{path} holds a model with {name}={want!r}, the config has "
                         f"{have!r}; pass --config.{name}={want!r} (or a matching config).")
    if fields["in_channels"] != channels:
      raise ValueError(f"{path} takes {fields['in_channels']} channels and the data have "
                       f"{channels}; use data with {fields['in_channels']} channels.")
    return diffusers_params(_diffusers_files(path)[1], config, channels,
                            fields.get("centered", True))
  if fmt == "score_sde":
    return load_score_sde(path, config, channels)
  if fmt == "adm":
    return load_adm(path, config, channels)
  if fmt == "ncsnv2":
    return load_ncsnv2(path, config, channels)
  return load_edm(path, config, channels)


def import_with_channels(config, source: str) -> tuple[dict, int]:
  """(parameters, image channels) of a score_sde or EDM `source`, the channels those
  (3, 1, 4 or 2) whose network the tensors fit; where none fits, the error for 3 channels.
  (A diffusers folder states its channels: load_diffusers.)"""
  first = None
  for channels in (3, 1, 4, 2):
    try:
      return import_params(config, source, channels), channels
    except tensors.FormatError as e:
      first = first or e
  raise first


def source_digest(source: str) -> dict:
  """{file: sha256} of the files an import reads (the provenance written beside it)."""
  fmt, path = parse_source(source)
  paths = [p for p in _diffusers_files(path) if p] if fmt == "diffusers" else [path]
  return {os.path.abspath(p): files.sha256(p) for p in paths}


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise tensors.FormatError(f"{path} is not valid JSON ({e}).") from None


def _with_fields(config, fields: dict):
  config = defaults.get_config() if config is None else config.copy_and_resolve_references()
  with config.unlocked():
    for name, value in fields.items():
      if name not in ("in_channels", "centered"):
        node, leaf = load.parent(config, name)
        node[leaf] = value
  return config
