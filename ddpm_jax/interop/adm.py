"""OpenAI guided-diffusion checkpoints (ADM, Dhariwal & Nichol 2021: guided_diffusion/unet.py
UNetModel with use_scale_shift_norm and resblock_updown, as its released models have them) →
EDM's DhariwalUNet state dict (EDM's re-implementation of the same network, which
models/dhariwal_unet.py reads through interop/edm_weights.py).

Module for module: time_embed.0/.2 → map_layer0/1, label_emb (an Embedding [K, E]) →
map_label (a Linear [E, K] without bias on the one-hot labels), input_blocks.0 → the first
level's conv, then each input block (a ResBlock, with its attention as `.1`) → the encoder's
blocks in order (`_down` blocks included), the middle block's ResBlock + attention and ResBlock
→ `_in0` and `_in1`, each output block → the decoder's `_block{i}`, its last layer at the end of
a level being the next level's `_up` block, out.0/.2 → out_norm/out_conv. Inside a ResBlock,
in_layers.0/.2, emb_layers.1, out_layers.0/.3, skip_connection → norm0, conv0, affine, norm1,
conv1, skip; inside an attention block, norm, qkv, proj_out → norm2, qkv, proj (1-D kernels
made 1×1). EDM lays the q, k, v channels out as (head, channel, q/k/v); guided-diffusion as
(head, q/k/v, channel) (QKVAttentionLegacy) or, with use_new_attention_order, (q/k/v, head,
channel) (QKVAttention): `qkv_rows` permutes them.

The networks compute the same function where EDM's rules are guided-diffusion's: 32 groups in
every GroupNorm (EDM: min(32, C/4), so every width ≥ 128) and the heads (EDM: C/64, i.e.
num_head_channels 64, or model.num_heads for --num_heads): `check_widths` refuses the rest.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ddpm_jax.interop.tensors import FormatError

RESBLOCK = {"in_layers.0": "norm0", "in_layers.2": "conv0", "emb_layers.1": "affine",
            "out_layers.0": "norm1", "out_layers.3": "conv1", "skip_connection": "skip"}
ATTENTION = {"norm": "norm2", "qkv": "qkv", "proj_out": "proj"}
MIN_WIDTH = 128  # the narrowest width at which EDM's GroupNorm has guided-diffusion's 32 groups


def check_widths(model_channels: int, channel_mult) -> None:
  """A one-line FormatError where a level is narrower than MIN_WIDTH."""
  narrow = [model_channels * m for m in channel_mult if model_channels * m < MIN_WIDTH]
  if narrow:
    raise FormatError(f"a level of {narrow[0]} channels: guided-diffusion normalizes with 32 "
                      f"groups at every width and EDM's DhariwalUNet with min(32, C/4), which "
                      f"differ below {MIN_WIDTH} channels (every released model is wider); "
                      f"such a network cannot be read exactly.")


def blocks(resolution: int, channel_mult, num_blocks: int,
           attn_resolutions) -> list[tuple[str, str, str | None]]:
  """(guided ResBlock prefix, EDM block name, guided attention prefix or None) in order."""
  out = [("input_blocks.0.0", f"enc.{resolution}x{resolution}_conv", None)]
  k = 1
  for level in range(len(channel_mult)):
    res = resolution >> level
    if level:
      out.append((f"input_blocks.{k}.0", f"enc.{res}x{res}_down", None))
      k += 1
    for i in range(num_blocks):
      attn = f"input_blocks.{k}.1" if res in attn_resolutions else None
      out.append((f"input_blocks.{k}.0", f"enc.{res}x{res}_block{i}", attn))
      k += 1
  low = resolution >> (len(channel_mult) - 1)
  out += [("middle_block.0", f"dec.{low}x{low}_in0", "middle_block.1"),
          ("middle_block.2", f"dec.{low}x{low}_in1", None)]
  k = 0
  for level in reversed(range(len(channel_mult))):
    res = resolution >> level
    for i in range(num_blocks + 1):
      attn = res in attn_resolutions
      out.append((f"output_blocks.{k}.0", f"dec.{res}x{res}_block{i}",
                  f"output_blocks.{k}.1" if attn else None))
      if level and i == num_blocks:
        up = 2 * res
        out.append((f"output_blocks.{k}.{2 if attn else 1}", f"dec.{up}x{up}_up", None))
      k += 1
  return out


def qkv_rows(channels: int, heads: int, new_order: bool) -> np.ndarray:
  """rows[j]: the guided-diffusion row of EDM's qkv row j = h·3d + c·3 + s (d = C/heads,
  s = q, k, v)."""
  d = channels // heads
  h, c, s = np.meshgrid(np.arange(heads), np.arange(d), np.arange(3), indexing="ij")
  rows = s * channels + h * d + c if new_order else h * 3 * d + s * d + c
  return rows.reshape(-1)


def edm_state_dict(state: Mapping[str, np.ndarray], resolution: int, channel_mult,
                   num_blocks: int, attn_resolutions, heads, new_order: bool,
                   where: str) -> dict[str, np.ndarray]:
  """EDM's DhariwalUNet state dict of a guided-diffusion UNetModel state dict; heads(C) is
  the attention heads at width C. Every tensor placed, none left over."""
  state = {k.removeprefix("module."): np.asarray(v, np.float32) for k, v in state.items()}
  out, used = {}, set()

  def move(src: str, dst: str, transform=None):
    keys = [k for k in state if k == src or k.startswith(src + ".")]
    if not keys:
      raise FormatError(f"{where}: no tensors of {src}; the checkpoint is not a guided-diffusion "
                        f"UNetModel of this shape (check model.*: ch, ch_mult, "
                        f"num_res_blocks, attn_resolutions).")
    for key in keys:
      leaf = key[len(src) + 1:]
      out[f"{dst}.{leaf}"] = transform(leaf, state[key]) if transform else state[key]
      used.add(key)

  def qkv(leaf, value):
    if value.ndim != (3 if leaf == "weight" else 1) or value.shape[0] % 3:
      raise FormatError(f"{where}: a qkv {leaf} of shape {value.shape} is not a 1-D "
                        f"convolution's of 3C outputs.")
    channels = value.shape[1] if leaf == "weight" else value.shape[0] // 3
    n = heads(channels)
    if n <= 0 or channels % n:
      raise FormatError(f"{where}: attention of {channels} channels cannot have {n} heads; "
                        f"check model.num_heads (guided-diffusion's --num_heads).")
    rows = qkv_rows(channels, n, new_order)
    return value[rows][..., None] if leaf == "weight" else value[rows]

  move("time_embed.0", "map_layer0")
  move("time_embed.2", "map_layer1")
  if "label_emb.weight" in state:
    move("label_emb", "map_label", lambda leaf, v: np.ascontiguousarray(v.T))
  move("out.0", "out_norm")
  move("out.2", "out_conv")
  for resblock, name, attn in blocks(resolution, channel_mult, num_blocks, attn_resolutions):
    if name.endswith("_conv"):
      move(resblock, name)
      continue
    for src, dst in RESBLOCK.items():
      if any(k.startswith(f"{resblock}.{src}.") for k in state):
        move(f"{resblock}.{src}", f"{name}.{dst}")
    if attn:
      move(f"{attn}.norm", f"{name}.norm2")
      move(f"{attn}.qkv", f"{name}.qkv", qkv)
      move(f"{attn}.proj_out", f"{name}.proj",
           lambda leaf, v: v[..., None] if leaf == "weight" else v)
  extra = sorted(set(state) - used)
  if extra:
    raise FormatError(f"{where}: tensor {extra[0]} is not in this network ({len(extra)} "
                      f"unexpected); check model.* against the checkpoint's flags.")
  return out
