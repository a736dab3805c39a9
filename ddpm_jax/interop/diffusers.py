"""diffusers `UNet2DModel` folders ↔ the DDPM U-Net (models/unet.py) and its chain.

A folder holds config.json (UNet2DModel's fields; a field it omits has diffusers' default),
diffusion_pytorch_model.safetensors (the state dict) and the DDPMScheduler's
scheduler_config.json, beside it (the google/ddpm-* releases) or in ../scheduler/ (a
pipeline's unet/ subfolder). `settings` turns the two configs into this library's config
fields, refusing by name a field the U-Net cannot honour; `config_files` is the way back.

The state dict ↔ tree rule: diffusers' modules in the order the U-Net builds them (down
blocks' resnets and attentions, each level's downsampler, the middle, the up blocks'), one
tree entry each (ResnetBlock_k, AttnBlock_k, Downsample_i, Upsample_u), leaf by leaf with
PyTorch's layouts converted (OIHW ↔ HWIO, Linear (out, in) ↔ Dense (in, out), the 1×1
shortcut convolution ↔ a Dense). Files written before diffusers 0.15 name attention
query/key/value/proj_attn; they read as to_q/to_k/to_v/to_out.0.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ddpm_jax.interop.tensors import FormatError

DIFFUSERS_VERSION = "0.30.0"  # written into exported configs: the oldest layout we write
WEIGHTS = "diffusion_pytorch_model.safetensors"

# UNet2DModel's defaults, for the fields a config.json omits (diffusers' unet_2d.py).
UNET_DEFAULTS = dict(
    sample_size=None, in_channels=3, out_channels=3, center_input_sample=False,
    time_embedding_type="positional", time_embedding_dim=None, freq_shift=0,
    flip_sin_to_cos=True,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    mid_block_type="UNetMidBlock2D",
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(224, 448, 672, 896), layers_per_block=2, mid_block_scale_factor=1,
    downsample_padding=1, downsample_type="conv", upsample_type="conv", dropout=0.0,
    act_fn="silu", attention_head_dim=8, norm_num_groups=32, attn_norm_num_groups=None,
    norm_eps=1e-5, resnet_time_scale_shift="default", add_attention=True, class_embed_type=None,
    num_class_embeds=None, num_train_timesteps=None)
# The values the DDPM U-Net computes with (Ho et al.'s network, as the google/ddpm-* files set).
HONOURED = dict(
    center_input_sample=False, time_embedding_type="positional", freq_shift=1,
    flip_sin_to_cos=False, mid_block_type="UNetMidBlock2D", mid_block_scale_factor=1,
    downsample_padding=0, downsample_type="conv", upsample_type="conv", act_fn="silu",
    attn_norm_num_groups=None, norm_eps=1e-6, resnet_time_scale_shift="default", add_attention=True, class_embed_type=None,
    num_class_embeds=None)
SCHEDULER_DEFAULTS = dict(  # DDPMScheduler's
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    trained_betas=None, variance_type="fixed_small", clip_sample=True, prediction_type="epsilon",
    thresholding=False, dynamic_thresholding_ratio=0.995, clip_sample_range=1.0,
    sample_max_value=1.0, timestep_spacing="leading", steps_offset=0,
    rescale_betas_zero_snr=False)
SCHEDULES = {"linear": "linear", "scaled_linear": "quadratic",
             "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}  # diffusers: ours
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")  # the same names


def _refuse(where: str, field: str, value, wanted) -> FormatError:
  return FormatError(f"{where}: {field}={value!r} is not supported (the DDPM U-Net and chain "
                     f"need {wanted!r}); convert another way or use a matching model.")


def settings(unet: Mapping, scheduler: Mapping, where: str = "config.json") -> dict:
  """This library's config fields ("model.ch": 128, …) of a UNet2DModel config and its
  DDPMScheduler config; a field that the U-Net or the chain cannot honour is refused by
  name."""
  u = {**UNET_DEFAULTS, **{k: v for k, v in unet.items() if not k.startswith("_")}}
  s = {**SCHEDULER_DEFAULTS, **{k: v for k, v in scheduler.items() if not k.startswith("_")}}
  for field, wanted in HONOURED.items():
    if u[field] != wanted:
      raise _refuse(where, field, u[field], wanted)
  channels = u["block_out_channels"]
  if (not isinstance(channels, (list, tuple)) or not channels
      or not all(isinstance(c, int) and c > 0 for c in channels)):
    raise FormatError(f"{where}: block_out_channels={channels!r} is not a list of channel "
                      f"counts, one per level; the file is damaged or not a UNet2DModel's.")
  channels = list(channels)
  ch, groups = channels[0], u["norm_num_groups"]
  if not isinstance(groups, int) or groups <= 0 or any(c % groups for c in channels):
    raise _refuse(where, "norm_num_groups", groups, f"a divisor of every channel count "
                  f"{channels}")
  if any(c % ch for c in channels):
    raise _refuse(where, "block_out_channels", channels, "multiples of the first entry")
  if u["time_embedding_dim"] not in (None, 4 * ch):
    raise _refuse(where, "time_embedding_dim", u["time_embedding_dim"], 4 * ch)
  size = u["sample_size"]
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      raise _refuse(where, "sample_size", size, "square images")
    size = size[0]
  down, up = list(u["down_block_types"]), list(u["up_block_types"])
  attn = [t == "AttnDownBlock2D" for t in down]
  for t in down:
    if t not in ("DownBlock2D", "AttnDownBlock2D"):
      raise _refuse(where, "down_block_types", down, "DownBlock2D or AttnDownBlock2D each")
  mirrored = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
  if up != mirrored:
    raise _refuse(where, "up_block_types", up, mirrored)
  head = u["attention_head_dim"]
  if head is not None and any(head != c for c, a in zip(channels, attn) if a):
    raise _refuse(where, "attention_head_dim", head, None)  # one head of all the channels
  if u["out_channels"] not in (u["in_channels"], 2 * u["in_channels"]):
    raise _refuse(where, "out_channels", u["out_channels"],
                  (u["in_channels"], 2 * u["in_channels"]))
  for field in ("trained_betas", "thresholding"):
    if s[field]:
      raise _refuse("scheduler_config.json", field, s[field], SCHEDULER_DEFAULTS[field])
  if s["clip_sample"] and s["clip_sample_range"] != 1.0:
    raise _refuse("scheduler_config.json", "clip_sample_range", s["clip_sample_range"], 1.0)
  for field, table in (("beta_schedule", SCHEDULES), ("prediction_type", PREDICTIONS),
                       ("variance_type", VARIANCES)):
    if s[field] not in table:
      raise _refuse("scheduler_config.json", field, s[field], tuple(table))
  learned = s["variance_type"].startswith("learned")
  if (u["out_channels"] == 2 * u["in_channels"]) != learned:
    raise FormatError(f"{where}: out_channels={u['out_channels']} with in_channels="
                      f"{u['in_channels']} does not fit the scheduler's variance_type="
                      f"{s['variance_type']!r} (a learned variance doubles the outputs).")
  return {
      "model.name": "ddpm", "model.ch": ch, "model.ch_mult": tuple(c // ch for c in channels),
      "model.num_res_blocks": u["layers_per_block"], "model.norm_groups": groups,
      "model.attn_resolutions": tuple(size >> i for i, a in enumerate(attn) if a),
      "model.dropout": float(u["dropout"]), "model.resamp_with_conv": True,
      "model.conditional": False, "model.mean_type": PREDICTIONS[s["prediction_type"]],
      "model.var_type": s["variance_type"], "data.image_size": size,
      "training.objective": "ddpm", "diffusion.beta_schedule": SCHEDULES[s["beta_schedule"]],
      "diffusion.beta_start": float(s["beta_start"]), "diffusion.beta_end": float(s["beta_end"]),
      "diffusion.num_timesteps": int(s["num_train_timesteps"]),
      "diffusion.zero_terminal_snr": bool(s["rescale_betas_zero_snr"]),
      "sampling.clip_x0": bool(s["clip_sample"]), "in_channels": u["in_channels"]}


def attention_levels(image_size: int, attn_resolutions, num_levels: int) -> list[bool]:
  """Which levels of the U-Net attend (their resolution image_size / 2^level is listed)."""
  return [(image_size >> i) in tuple(attn_resolutions) for i in range(num_levels)]


def config_files(fields: Mapping) -> tuple[dict, dict]:
  """(config.json, scheduler_config.json) contents for `settings`-style fields: the inverse
  of `settings`, every field written out."""
  ch, mult, size = fields["model.ch"], fields["model.ch_mult"], fields["data.image_size"]
  attn = attention_levels(size, fields["model.attn_resolutions"], len(mult))
  channels = fields["in_channels"]
  learned = fields["model.var_type"].startswith("learned")
  unet = {**UNET_DEFAULTS, **HONOURED, "_class_name": "UNet2DModel",
          "_diffusers_version": DIFFUSERS_VERSION, "sample_size": size,
          "in_channels": channels, "out_channels": channels * (2 if learned else 1),
          "block_out_channels": [ch * m for m in mult],
          "layers_per_block": fields["model.num_res_blocks"],
          "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
          "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
          "attention_head_dim": None, "dropout": fields["model.dropout"],
          "norm_num_groups": fields["model.norm_groups"]}
  unet = {k: list(v) if isinstance(v, tuple) else v for k, v in unet.items()}
  return unet, scheduler_config(fields)


def scheduler_config(fields: Mapping) -> dict:
  """scheduler_config.json contents for `settings`-style fields (the chain's diffusion.*,
  model.mean_type and var_type, sampling.clip_x0; "betas" for a schedule diffusers has no
  name for)."""
  schedule = {v: k for k, v in SCHEDULES.items()}.get(fields["diffusion.beta_schedule"])
  scheduler = {**SCHEDULER_DEFAULTS, "_class_name": "DDPMScheduler",
               "_diffusers_version": DIFFUSERS_VERSION,
               "num_train_timesteps": fields["diffusion.num_timesteps"],
               "beta_start": fields["diffusion.beta_start"],
               "beta_end": fields["diffusion.beta_end"],
               "beta_schedule": schedule or "linear",
               "variance_type": fields["model.var_type"],
               "clip_sample": fields["sampling.clip_x0"],
               "prediction_type": {v: k for k, v in PREDICTIONS.items()}[fields["model.mean_type"]],
               "rescale_betas_zero_snr": fields["diffusion.zero_terminal_snr"]}
  if schedule is None:  # e.g. "constant": the β list itself
    scheduler["trained_betas"] = [float(b) for b in fields["betas"]]
  return scheduler


# ------------------------------------------------------------------ tensors

_NORM = [("weight", "scale", "vector"), ("bias", "bias", "vector")]
_CONV = [("weight", "kernel", "conv"), ("bias", "bias", "vector")]
_LINEAR = [("weight", "kernel", "linear"), ("bias", "bias", "vector")]


def _within(prefix_d, prefix_t, leaves):
  return [(f"{prefix_d}.{d}", f"{prefix_t}/{t}", layout) for d, t, layout in leaves]


def _resnet(d, t):
  return (_within(f"{d}.norm1", f"{t}/GroupNorm_0", _NORM) + _within(f"{d}.conv1", f"{t}/Conv_0", _CONV)
          + _within(f"{d}.time_emb_proj", f"{t}/Dense_0", _LINEAR)
          + _within(f"{d}.norm2", f"{t}/GroupNorm_1", _NORM)
          + _within(f"{d}.conv2", f"{t}/Conv_1", _CONV)
          + [(f"{d}.conv_shortcut.weight", f"{t}/Dense_1/kernel", "conv1x1"),
             (f"{d}.conv_shortcut.bias", f"{t}/Dense_1/bias", "vector")])


def _attention(d, t):
  return (_within(f"{d}.group_norm", f"{t}/GroupNorm_0", _NORM)
          + [leaf for name, ours in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                                     ("to_out.0", "proj_out"))
             for leaf in _within(f"{d}.{name}", f"{t}/{ours}", _LINEAR)])


def leaf_names(num_levels: int, num_res_blocks: int, attn_levels) -> list[tuple[str, str, str]]:
  """(state-dict key, tree path with "/", layout) of every tensor the U-Net can hold, in the
  order it builds them (the 1×1 shortcuts included; absent where the width stays)."""
  out = _within("conv_in", "conv_in", _CONV) + _within(
      "time_embedding.linear_1", "temb_dense0", _LINEAR) + _within(
      "time_embedding.linear_2", "temb_dense1", _LINEAR)
  counter = {"ResnetBlock": 0, "AttnBlock": 0}

  def add(kind, d):
    name = f"{kind}_{counter[kind]}"
    counter[kind] += 1
    out.extend(_resnet(d, name) if kind == "ResnetBlock" else _attention(d, name))
  for i in range(num_levels):
    for j in range(num_res_blocks):
      add("ResnetBlock", f"down_blocks.{i}.resnets.{j}")
      if attn_levels[i]:
        add("AttnBlock", f"down_blocks.{i}.attentions.{j}")
    if i != num_levels - 1:
      out.extend(_within(f"down_blocks.{i}.downsamplers.0.conv", f"Downsample_{i}/Conv_0", _CONV))
  add("ResnetBlock", "mid_block.resnets.0")
  add("AttnBlock", "mid_block.attentions.0")
  add("ResnetBlock", "mid_block.resnets.1")
  for u, level in enumerate(reversed(range(num_levels))):
    for j in range(num_res_blocks + 1):
      add("ResnetBlock", f"up_blocks.{u}.resnets.{j}")
      if attn_levels[level]:
        add("AttnBlock", f"up_blocks.{u}.attentions.{j}")
    if level != 0:
      out.extend(_within(f"up_blocks.{u}.upsamplers.0.conv", f"Upsample_{u}/Conv_0", _CONV))
  return out + _within("conv_norm_out", "norm_out", _NORM) + _within("conv_out", "conv_out", _CONV)


OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def modern_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The state dict with pre-0.15 attention names (…attentions.0.query.weight) renamed."""
  out = {}
  for key, value in state.items():
    *head, module, leaf = key.split(".")
    if "attentions" in head and module in OLD_ATTENTION:
      key = ".".join([*head, OLD_ATTENTION[module], leaf])
    out[key] = value
  return out
