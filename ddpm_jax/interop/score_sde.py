"""score_sde checkpoints (Song et al. 2021) → NCSN++/DDPM++ parameters (models/ncsnpp.py)
and DDPM U-Net parameters (models/unet.py, for score_sde's `ddpm` model).

Flax (yang-song/score_sde): a `checkpoint_N` file is msgpack of its training State
{step, optimizer, lr, model_state, ema_rate, params_ema, rng}, read with
flax.serialization.msgpack_restore (data only). The EMA parameters are the tree of
models/ncsnpp.py leaf for leaf.

PyTorch (yang-song/score_sde_pytorch): checkpoint.pth {model, ema, optimizer, step}, read as data
(interop/torch_files.py). `model` is the DataParallel state dict ("module.all_modules.i.
…"); `ema.shadow_params` lists the EMA value of each parameter that requires a gradient, in
`model.parameters()` order (every state-dict entry but the `sigmas` buffer and the fixed
Fourier frequencies W). The i-th module that holds parameters is the i-th entry of the Flax
tree in creation order (both build in forward order), and inside it the names are Flax's
(GroupNorm_0, Conv_0, Dense_0, NIN_0, Conv2d_0, …) with PyTorch's layouts.

DDPM (score_sde's models/ddpm.py, both repositories): Ho et al.'s U-Net, module for module the
diffusers UNet2DModel that models/unet.py reads (interop/diffusers.py leaf_names), except that
its decoder attends once per attending level, after the level's last block, where Ho's and
diffusers' attend after every block: the import gives those extra attention blocks a zero
output projection, which makes each the identity (x + 0), so the network is the same function.
`ddpm_modules` lists its modules in creation order (all_modules.i is the i-th; the Flax tree's
Kind_n the n-th of its kind) with the diffusers name of each.

Data: score_sde's VE models (data.centered = False) take x ∈ [0, 1] and map it to 2x − 1
first, so with this library's data y = 2x − 1 the same network sees the same input, and its σ
is half this library's (σ_y = 2σ_x): its Fourier features of log σ_x = log σ_y − log 2 are
[sin(a − θ), cos(a − θ)] with a = 2πW log σ_y, θ = 2πW log 2, which the import folds into the
first Dense layer (exact: a rotation of each (sin, cos) pair of its input rows). Its output
÷ σ_x is the score in x, twice the score in y, which is the output ÷ σ_y that models/ncsnpp.py
divides by: nothing else changes.
"""

from __future__ import annotations

import math
import os
import re
from typing import Mapping

import numpy as np
from flax import serialization, traverse_util

from ddpm_jax.interop.tensors import FormatError, flat_shapes, from_tree, tree_from_state_dict

ADVICE = ("check the network options (model.*) against the checkpoint's config (score_sde's "
          "configs/)")


def read_flax(path: str) -> dict:
  """The EMA parameters of a score_sde Flax checkpoint file (msgpack; no code runs)."""
  if not os.path.isfile(path):
    raise FormatError(f"{path} is {'a folder' if os.path.isdir(path) else 'not there'}; pass "
                      f"a score_sde checkpoint file (checkpoints/checkpoint_N).")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    state = serialization.msgpack_restore(raw)
  except Exception as e:  # noqa: BLE001 (msgpack raises several types)
    raise FormatError(f"{path} is not a score_sde Flax checkpoint (msgpack: {e}).") from None
  if not isinstance(state, dict) or "params_ema" not in state:
    keys = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
    raise FormatError(f"{path} has no params_ema (it holds {keys}); pass a score_sde "
                      f"checkpoint_N file.")
  params = state["params_ema"]
  return params["params"] if set(params) == {"params"} else params


def params_from_flax(params: Mapping, template, where: str) -> dict:
  """`params` (a nested dict) checked leaf by leaf against the network's template."""
  flat = {"/".join(p): np.asarray(v, np.float32)
          for p, v in traverse_util.flatten_dict(dict(params)).items()}
  names = [(p, p, "vector") for p in flat_shapes(template)]
  return tree_from_state_dict(flat, names, template, where, ADVICE)


def _layout(module: str, leaf: str) -> tuple[str, str]:
  """(Flax leaf, layout) of PyTorch's `leaf` in a module named like its Flax twin."""
  kind = module.rsplit("_", 1)[0]
  if kind == "GroupNorm":
    return {"weight": "scale"}.get(leaf, leaf), "vector"
  if kind == "Conv":
    return {"weight": "kernel"}.get(leaf, leaf), "conv" if leaf == "weight" else "vector"
  if kind == "Conv2d":
    return leaf, "conv" if leaf == "weight" else "vector"
  if kind == "Dense":
    return {"weight": "kernel"}.get(leaf, leaf), "linear" if leaf == "weight" else "vector"
  return leaf, "vector"  # NIN W, b and the Fourier W: the same layout


_MODULE = re.compile(r"^(?:module\.)?all_modules\.(\d+)\.(.+)$")


def torch_names(keys, order: list[str]) -> list[tuple[str, str, str]]:
  """(state-dict key, tree path, layout) of score_sde_pytorch's NCSNpp keys, given the Flax
  tree's top-level entries in creation order."""
  indices = sorted({int(m.group(1)) for k in keys if (m := _MODULE.match(k))})
  if len(indices) != len(order):
    raise FormatError(f"the checkpoint has {len(indices)} modules with parameters and this "
                      f"network {len(order)}; {ADVICE}.")
  entry = dict(zip(indices, order))
  rows = []
  for key in keys:
    m = _MODULE.match(key)
    if m is None:
      continue  # the sigmas buffer
    top, rest = entry[int(m.group(1))], m.group(2).split(".")
    module = rest[0] if len(rest) == 2 else top
    leaf, layout = _layout(module, rest[-1])
    rows.append((key, "/".join([top, *rest[:-1], leaf]), layout))
  return rows


def fourier_keys(keys, order: list[str]) -> set[str]:
  """The keys of NCSNpp's fixed Fourier frequencies W (buffers in all but name: not trained,
  so not in the EMA)."""
  return {k for k, p, _ in torch_names(list(keys), order)
          if p.split("/")[0].startswith("GaussianFourierProjection")}


def ema_state_dict(checkpoint: Mapping, fixed=lambda keys: set()) -> dict[str, np.ndarray]:
  """The model state dict of a score_sde_pytorch checkpoint with the EMA values put in (its
  "module." prefix kept): the shadow parameters, in order, replace each entry that requires
  a gradient (all but the `fixed`(keys) ones), and the buffers go (the `sigmas` table is the
  config's)."""
  ema = checkpoint.get("ema") if isinstance(checkpoint, Mapping) else None
  model = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
  if not (isinstance(model, Mapping) and isinstance(ema, Mapping)
          and isinstance(ema.get("shadow_params"), (list, tuple))
          and all(isinstance(k, str) for k in model)):
    held = (sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, Mapping)
            else type(checkpoint).__name__)
    raise FormatError(f"not a score_sde_pytorch checkpoint ({{model, ema: {{shadow_params}}, "
                      f"…}}; it holds {held}); pass its checkpoint_N.pth.")
  model = dict(model)
  fixed = fixed([k for k in model if _MODULE.match(k)])
  trained = [k for k in model if _MODULE.match(k) and k not in fixed]
  shadow = list(ema["shadow_params"])
  if len(shadow) != len(trained):
    raise FormatError(f"the checkpoint's EMA holds {len(shadow)} tensors for {len(trained)} "
                      f"trained parameters; it is not a score_sde_pytorch checkpoint of this "
                      f"network ({ADVICE}).")
  return {k: v for k, v in {**model, **dict(zip(trained, shadow))}.items() if _MODULE.match(k)}


def fold_log_sigma_shift(params: dict, shift: float) -> dict:
  """The parameters of a network fed log σ + shift as Fourier features, for a network fed
  log σ: each (sin a_k, cos a_k) input pair of Dense_0 rotated by θ_k = 2π W_k shift."""
  w = np.asarray(params["GaussianFourierProjection_0"]["W"], np.float64)
  theta = 2 * math.pi * w * shift
  kernel = np.asarray(params["Dense_0"]["kernel"], np.float64)
  k_sin, k_cos = kernel[:w.size], kernel[w.size:]
  c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
  folded = np.concatenate([k_sin * c - k_cos * s, k_sin * s + k_cos * c]).astype(np.float32)
  return {**params, "Dense_0": {**params["Dense_0"], "kernel": folded}}


def onto_centered_data(params: dict) -> dict:
  """An uncentered VE model (data in [0, 1], fed log σ_x) as a network of this library's
  [−1, 1] data (σ_y = 2σ_x): its log σ input shifted by −log 2 (fold_log_sigma_shift)."""
  return fold_log_sigma_shift(params, -math.log(2.0))


# ------------------------------------------------------------------ DDPM (models/ddpm.py)

def ddpm_modules(num_levels: int, num_res_blocks: int, attn_levels) -> list[tuple[str, str]]:
  """(kind, diffusers name) of score_sde's DDPM modules in creation order."""
  mods = [("Dense", "time_embedding.linear_1"), ("Dense", "time_embedding.linear_2"),
          ("Conv", "conv_in")]
  for level in range(num_levels):
    for j in range(num_res_blocks):
      mods.append(("ResnetBlockDDPM", f"down_blocks.{level}.resnets.{j}"))
      if attn_levels[level]:
        mods.append(("AttnBlock", f"down_blocks.{level}.attentions.{j}"))
    if level != num_levels - 1:
      mods.append(("Downsample", f"down_blocks.{level}.downsamplers.0"))
  mods += [("ResnetBlockDDPM", "mid_block.resnets.0"), ("AttnBlock", "mid_block.attentions.0"),
           ("ResnetBlockDDPM", "mid_block.resnets.1")]
  for u, level in enumerate(reversed(range(num_levels))):
    for j in range(num_res_blocks + 1):
      mods.append(("ResnetBlockDDPM", f"up_blocks.{u}.resnets.{j}"))
    if attn_levels[level]:
      mods.append(("AttnBlock", f"up_blocks.{u}.attentions.{num_res_blocks}"))
    if level != 0:
      mods.append(("Upsample", f"up_blocks.{u}.upsamplers.0"))
  return mods + [("GroupNorm", "conv_norm_out"), ("Conv", "conv_out")]


# (inner module, diffusers sub-name, kind) of each composite module; NIN is score_sde's 1×1
# layer (W [in, out], b), a Linear of weight Wᵀ in diffusers.
_INNER = {
    "ResnetBlockDDPM": [("GroupNorm_0", "norm1", "GroupNorm"), ("Conv_0", "conv1", "Conv"),
                        ("Dense_0", "time_emb_proj", "Dense"), ("GroupNorm_1", "norm2", "GroupNorm"),
                        ("Conv_1", "conv2", "Conv"), ("NIN_0", "conv_shortcut", "NIN1x1")],
    "AttnBlock": [("GroupNorm_0", "group_norm", "GroupNorm"), ("NIN_0", "to_q", "NIN"),
                  ("NIN_1", "to_k", "NIN"), ("NIN_2", "to_v", "NIN"), ("NIN_3", "to_out.0", "NIN")],
    "Downsample": [("Conv_0", "conv", "Conv")],
    "Upsample": [("Conv_0", "conv", "Conv")],
}
# kind → ((source leaf, diffusers leaf, Flax layout of the source) …) per source format
_LEAVES = {
    "Dense": {"torch": (("weight", "weight", None), ("bias", "bias", None)),
              "flax": (("kernel", "weight", "linear"), ("bias", "bias", None))},
    "Conv": {"torch": (("weight", "weight", None), ("bias", "bias", None)),
             "flax": (("kernel", "weight", "conv"), ("bias", "bias", None))},
    "GroupNorm": {"torch": (("weight", "weight", None), ("bias", "bias", None)),
                  "flax": (("scale", "weight", None), ("bias", "bias", None))},
}


def ddpm_state_dict(state: Mapping[str, np.ndarray], mods, fmt: str) -> dict[str, np.ndarray]:
  """The diffusers UNet2DModel state dict (PyTorch layouts) of a score_sde DDPM `state`: a
  PyTorch state dict ("all_modules.i.…", fmt "torch") or a flattened Flax tree ("Kind_n/…",
  "flax"); every tensor of `mods` present, none extra. The decoder's extra attention blocks
  get a zero output projection (the identity)."""
  out, used, counts = {}, set(), {}

  def take(key, diffusers_key, layout, transform=None):
    if key not in state:
      raise FormatError(f"tensor {key} is missing; {ADVICE}.")
    used.add(key)
    value = np.asarray(state[key], np.float32)
    value = from_tree(value, layout) if layout else value
    out[diffusers_key] = transform(value) if transform else value

  for i, (kind, name) in enumerate(mods):
    n = counts[kind] = counts.get(kind, -1) + 1
    at = f"all_modules.{i}" if fmt == "torch" else f"{kind}_{n}"
    sep = "." if fmt == "torch" else "/"
    inner = _INNER.get(kind, [(None, None, kind)])
    for sub, diffusers_sub, sub_kind in inner:
      src = at if sub is None else f"{at}{sep}{sub}"
      dst = name if diffusers_sub is None else f"{name}.{diffusers_sub}"
      if sub_kind.startswith("NIN"):
        if f"{src}{sep}W" not in state and sub_kind == "NIN1x1":
          continue  # no shortcut where the width stays
        shape = (lambda w: w.T[:, :, None, None]) if sub_kind == "NIN1x1" else (lambda w: w.T)
        take(f"{src}{sep}W", f"{dst}.weight", None, shape)
        take(f"{src}{sep}b", f"{dst}.bias", None)
        continue
      for leaf, diffusers_leaf, layout in _LEAVES[sub_kind][fmt]:
        take(f"{src}{sep}{leaf}", f"{dst}.{diffusers_leaf}", layout)
  extra = sorted(set(state) - used)
  if extra:
    raise FormatError(f"tensor {extra[0]} is not in this network ({len(extra)} unexpected); "
                      f"{ADVICE}.")
  for kind, name in mods:  # the identity attention blocks before each level's last
    if kind == "AttnBlock" and name.startswith("up_blocks."):
      prefix, last = name.rsplit(".", 1)
      width = out[f"{name}.to_out.0.bias"].shape[0]
      for j in range(int(last)):
        at = f"{prefix}.{j}"
        out.update({f"{at}.group_norm.weight": np.ones(width, np.float32),
                    f"{at}.group_norm.bias": np.zeros(width, np.float32)})
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
          out[f"{at}.{proj}.weight"] = np.zeros((width, width), np.float32)
          out[f"{at}.{proj}.bias"] = np.zeros(width, np.float32)
  return out
