"""score_sde checkpoints (Song et al. 2021) → NCSN++/DDPM++ parameters (models/ncsnpp.py).

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

from ddpm_jax.interop.tensors import FormatError, flat_shapes, tree_from_state_dict

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


def ema_state_dict(checkpoint: Mapping, order: list[str]) -> dict[str, np.ndarray]:
  """The model state dict of a score_sde_pytorch checkpoint with the EMA values put in: the
  shadow parameters, in order, replace each entry that requires a gradient (and the buffers
  go: the `sigmas` table is the config's)."""
  if "model" not in checkpoint or "ema" not in checkpoint:
    raise FormatError(f"not a score_sde_pytorch checkpoint (it holds {sorted(checkpoint)[:6]}); "
                      f"pass its checkpoint_N.pth.")
  model = dict(checkpoint["model"])
  fixed = {k for k, p, _ in torch_names(list(model), order)
           if p.split("/")[0].startswith("GaussianFourierProjection")}
  trained = [k for k in model if _MODULE.match(k) and k not in fixed]
  shadow = list(checkpoint["ema"]["shadow_params"])
  if len(shadow) != len(trained):
    raise FormatError(f"the checkpoint's EMA holds {len(shadow)} tensors for {len(trained)} "
                      f"trained parameters; it is not a score_sde_pytorch NCSNpp checkpoint.")
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
