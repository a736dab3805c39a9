"""diffusers' NCSN++ folders (google/ncsnpp-*: a ScoreSdeVePipeline's UNet2DModel with
time_embedding_type "fourier" and Skip blocks, diffusers' port of score_sde's NCSN++ VE
models) → score_sde_pytorch's state-dict names, which interop/score_sde.py reads onto
models/ncsnpp.py.

The UNet2DModel computes score_sde's NCSNpp with these settings (the only ones diffusers can
express, checked by `settings`): FIR resampling (1, 3, 3, 1), BigGAN residual blocks, residual
sums ÷ √2, the input pyramid ("input_skip") and output pyramid ("output_skip") combined by
sums, Fourier features of log σ (scale 16), the output ÷ σ; `center_input_sample` is score_sde's
uncentered data (x ∈ [0, 1] mapped to 2x − 1 inside), which the import maps onto this
library's [−1, 1] data as for score_sde's own checkpoints (σ doubles: the scheduler's σ range
is given ×2, and the log 2 shift is folded into the weights).

Names: diffusers' modules in the order NCSNpp creates its all_modules (`modules`), one index
each: the Fourier projection, the two embedding layers, conv_in; per down level its resnets
(each followed by its attention at an attending level), then, below the last level,
resnet_down and the input pyramid's skip_conv (all_modules.i.Conv_0); the middle; per up level
its resnets, its one attention, then skip_norm, skip_conv and resnet_up (the last level's
skip_norm and skip_conv are conv_norm_out and conv_out). Attention's q, k, v and output
Linear weights [out, in] are NIN weights W [in, out].
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ddpm_jax.interop.tensors import FormatError

# UNet2DModel fields the NCSN++ port computes with (diffusers' convert_ncsnpp script's values).
HONOURED = dict(time_embedding_type="fourier", mid_block_type="UNetMidBlock2D",
                mid_block_scale_factor=2 ** 0.5, act_fn="silu", norm_eps=1e-6,
                resnet_time_scale_shift="default", add_attention=True, class_embed_type=None,
                num_class_embeds=None, attention_head_dim=None)
SCHEDULER = dict(sigma_min=0.01, sigma_max=1348.0, num_train_timesteps=2000, snr=0.15,
                 correct_steps=1, sampling_eps=1e-5)  # ScoreSdeVeScheduler's defaults
DOWN, UP = ("SkipDownBlock2D", "AttnSkipDownBlock2D"), ("SkipUpBlock2D", "AttnSkipUpBlock2D")
RESNET = {"norm1": "GroupNorm_0", "conv1": "Conv_0", "time_emb_proj": "Dense_0",
          "norm2": "GroupNorm_1", "conv2": "Conv_1", "conv_shortcut": "Conv_2"}
ATTENTION = {"group_norm": "GroupNorm_0", "to_q": "NIN_0", "to_k": "NIN_1", "to_v": "NIN_2",
             "to_out.0": "NIN_3"}


def is_ncsnpp(unet: Mapping) -> bool:
  return unet.get("time_embedding_type") == "fourier"


def _refuse(where: str, field: str, value, wanted) -> FormatError:
  return FormatError(f"{where}: {field}={value!r} is not supported (diffusers' NCSN++ port, "
                     f"read onto NCSN++, has {wanted!r}); convert another way.")


def settings(unet: Mapping, scheduler: Mapping, where: str = "config.json") -> dict:
  """This library's config fields of a UNet2DModel NCSN++ config and its ScoreSdeVeScheduler
  config; a field the port does not have is refused by name."""
  u = {k: v for k, v in unet.items() if not k.startswith("_")}
  s = {**SCHEDULER, **{k: v for k, v in scheduler.items() if not k.startswith("_")}}
  for field, wanted in HONOURED.items():
    have = u.get(field, wanted)
    close = (isinstance(wanted, float) and isinstance(have, (int, float))
             and abs(have - wanted) < 1e-6)
    if have != wanted and not close:
      raise _refuse(where, field, have, wanted)
  channels, down, up = (list(u.get(k) or ()) for k in ("block_out_channels",
                                                         "down_block_types", "up_block_types"))
  if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
    raise FormatError(f"{where}: block_out_channels={channels!r} is not a list of channel "
                      f"counts, one per level; the file is damaged or not a UNet2DModel's.")
  ch = channels[0]
  if any(c % ch for c in channels):
    raise _refuse(where, "block_out_channels", channels, "multiples of the first entry")
  if len(down) != len(channels) or any(t not in DOWN for t in down):
    raise _refuse(where, "down_block_types", down, f"one of {DOWN} per level")
  attn = [t == DOWN[1] for t in down]
  mirrored = [UP[a] for a in reversed(attn)]
  if up != mirrored:
    raise _refuse(where, "up_block_types", up, mirrored)
  size = u.get("sample_size")
  size = size[0] if isinstance(size, (list, tuple)) and size else size
  layers = u.get("layers_per_block", 2)
  if not isinstance(size, int) or size <= 0 or not isinstance(layers, int) or layers <= 0:
    raise FormatError(f"{where}: sample_size={u.get('sample_size')!r} and layers_per_block="
                      f"{layers!r} must be positive integers; the file is damaged.")
  narrow = [c for c, a in zip(channels, attn) if a and c < 128]
  groups = u.get("norm_num_groups", 32)
  if groups is not None:  # 32 groups in every block; score_sde's min(C/4, 32)
    narrow += [c for c in channels if c < 128]
    if groups != 32:
      raise _refuse(where, "norm_num_groups", groups, None)
  if narrow:  # diffusers' attention blocks always normalize with 32 groups
    raise FormatError(f"{where}: a level of {narrow[0]} channels normalizes with 32 groups in "
                      f"diffusers and min(C/4, 32) in score_sde's NCSN++; such a network is "
                      f"not read (every published one has 128 or more).")
  if u.get("out_channels", 3) != u.get("in_channels", 3):
    raise _refuse(where, "out_channels", u.get("out_channels"), u.get("in_channels", 3))
  scale = 2.0 if u.get("center_input_sample", False) else 1.0  # σ of [0, 1] data, on [−1, 1]
  return {
      "model.name": "ncsnpp", "model.ch": ch, "model.ch_mult": tuple(c // ch for c in channels),
      "model.num_res_blocks": layers,
      "model.attn_resolutions": tuple(size >> i for i, a in enumerate(attn) if a),
      "model.resamp_with_conv": True, "model.fir": True, "model.fir_kernel": (1, 3, 3, 1),
      "model.skip_rescale": True, "model.resblock_type": "biggan",
      "model.progressive": "output_skip", "model.progressive_input": "input_skip",
      "model.progressive_combine": "sum", "model.embedding_type": "fourier",
      "model.fourier_scale": 16.0, "model.scale_by_sigma": True, "model.conditional": False,
      "model.nonlinearity": "swish", "model.mean_type": "score", "data.image_size": size,
      "training.objective": "dsm", "sde.name": "ve",
      "sde.sigma_min": scale * float(s["sigma_min"]), "sde.sigma_max": scale * float(s["sigma_max"]),
      "sde.num_scales": int(s["num_train_timesteps"]), "sampling.snr": float(s["snr"]),
      "sampling.n_steps_each": int(s["correct_steps"]), "sampling.eps": float(s["sampling_eps"]),
      "in_channels": u.get("in_channels", 3), "centered": scale == 1.0}


def modules(num_levels: int, layers: int, attn: list[bool]) -> list[tuple[str, dict | None]]:
  """(diffusers module name, its inner names → score_sde's, or None for a plain layer) in
  NCSNpp's all_modules order."""
  mods = [("time_proj", None), ("time_embedding.linear_1", None),
          ("time_embedding.linear_2", None), ("conv_in", None)]
  for i in range(num_levels):
    for j in range(layers):
      mods.append((f"down_blocks.{i}.resnets.{j}", RESNET))
      if attn[i]:
        mods.append((f"down_blocks.{i}.attentions.{j}", ATTENTION))
    if i != num_levels - 1:
      mods += [(f"down_blocks.{i}.resnet_down", RESNET), (f"down_blocks.{i}.skip_conv",
                                                          {"": "Conv_0"})]
  mods += [("mid_block.resnets.0", RESNET), ("mid_block.attentions.0", ATTENTION),
           ("mid_block.resnets.1", RESNET)]
  for u, level in enumerate(reversed(range(num_levels))):
    for j in range(layers + 1):
      mods.append((f"up_blocks.{u}.resnets.{j}", RESNET))
    if attn[level]:
      mods.append((f"up_blocks.{u}.attentions.0", ATTENTION))
    if level != 0:
      mods += [(f"up_blocks.{u}.skip_norm", None), (f"up_blocks.{u}.skip_conv", None),
               (f"up_blocks.{u}.resnet_up", RESNET)]
    else:
      mods += [("conv_norm_out", None), ("conv_out", None)]
  return mods


def score_sde_state_dict(state: Mapping[str, np.ndarray], num_levels: int, layers: int,
                         attn: list[bool], where: str) -> dict[str, np.ndarray]:
  """The score_sde_pytorch NCSNpp state dict ("all_modules.i.…") of a diffusers NCSN++
  state dict (modern attention names); every tensor placed, none left over."""
  state = dict(state)
  if "time_proj.W" in state:  # files of diffusers < 0.3 hold the frequencies twice
    state.setdefault("time_proj.weight", state.pop("time_proj.W"))
  out, used = {}, set()
  for i, (name, inner) in enumerate(modules(num_levels, layers, attn)):
    keys = [k for k in state if k.startswith(name + ".")]
    if not keys:
      raise FormatError(f"{where}: no tensors of {name}; the folder is not a diffusers NCSN++ "
                        f"of this shape (check config.json).")
    for key in keys:
      rest = key[len(name) + 1:]
      sub, _, leaf = rest.rpartition(".")
      if name == "time_proj":
        target, value = f"all_modules.{i}.W", state[key]
      elif inner is None:
        target, value = f"all_modules.{i}.{rest}", state[key]
      elif sub in inner:
        mapped = inner[sub]
        nin = mapped.startswith("NIN")
        target = f"all_modules.{i}.{mapped}.{({'weight': 'W', 'bias': 'b'} if nin else {}).get(leaf, leaf)}"
        value = np.asarray(state[key]).T if nin and leaf == "weight" else state[key]
      else:
        raise FormatError(f"{where}: tensor {key} is not in diffusers' NCSN++.")
      out[target] = np.asarray(value, np.float32)
      used.add(key)
  extra = sorted(set(state) - used)
  if extra:
    raise FormatError(f"{where}: tensor {extra[0]} is not in this network ({len(extra)} "
                      f"unexpected); check config.json.")
  return out
