"""Named tensors in and out: reading weight files without running code from them, PyTorch's
layouts ↔ Flax's, and a name table ↔ a parameter tree with every tensor checked by name.

Files: .safetensors (safetensors' numpy API), .npz (numpy with allow_pickle=False) and
msgpack (flax.serialization) are data only. Pickles (.pkl, .pt, .pth, .bin, .ckpt) can run
code when unpickled: they are refused with the reason and a recipe, except PyTorch's files
(zip and legacy) where a format reads them (interop/torch_files.py: an allow-listed unpickler that
admits tensors and containers only).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from flax import traverse_util

from ddpm_jax.infra import files

PICKLES = (".pkl", ".pt", ".pth", ".bin", ".ckpt")


class FormatError(ValueError):
  """A file that is not the format it claims, or whose tensors do not fit the network."""


def read(path: str, pickle_advice: str = "") -> dict[str, np.ndarray]:
  """{name: array} of a .safetensors or .npz file; a pickle is refused with `pickle_advice`."""
  if os.path.isdir(path):
    raise FormatError(f"{path} is a folder; pass the weights file itself (.safetensors or "
                      f".npz).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No weights file {path!r}; check the path.")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".safetensors":
    from safetensors.numpy import load_file
    try:
      return load_file(path)
    except Exception as e:  # noqa: BLE001 (safetensors raises its own types)
      raise FormatError(f"{path} is not a readable safetensors file ({e}).") from None
  if suffix == ".npz":
    try:
      return files.load_npz(path)
    except ValueError as e:  # not a zip, cut short, or pickled objects (never loaded)
      raise FormatError(f"{e}; save plain arrays with np.savez.") from None
  if suffix in PICKLES:
    raise FormatError(f"{path} is a Python pickle, which can run code when loaded, so it is "
                      f"not read. {pickle_advice}".rstrip())
  raise FormatError(f"{path}: unknown weights format {suffix!r}; use .safetensors or .npz.")


def finite(state: Mapping[str, np.ndarray], where: str) -> None:
  """A one-line FormatError naming the first tensor of `state` with a NaN or an infinity
  (weights that would make every sample one flat value)."""
  for key, value in state.items():
    value = np.asarray(value)
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
      bad = int(np.size(value) - np.isfinite(value).sum())
      raise FormatError(f"{where}: tensor {key} holds {bad} NaN or infinite values; these "
                        f"weights are damaged (or from a diverged run): use another file.")


def to_tree(a: np.ndarray, layout: str) -> np.ndarray:
  """A PyTorch tensor in Flax's layout: conv OIHW → HWIO, Linear (out, in) → (in, out), a
  1×1 conv (out, in, 1, 1) → a Dense kernel (in, out)."""
  a = np.asarray(a, np.float32)
  if layout == "conv":
    return a.transpose(2, 3, 1, 0)
  if layout == "linear":
    return a.T
  if layout == "conv1x1":
    return a[:, :, 0, 0].T
  return a


def from_tree(a, layout: str) -> np.ndarray:
  """The inverse of to_tree."""
  a = np.asarray(a, np.float32)
  if layout == "conv":
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
  if layout == "linear":
    return np.ascontiguousarray(a.T)
  if layout == "conv1x1":
    return np.ascontiguousarray(a.T[:, :, None, None])
  return a


def flat_shapes(template) -> dict[str, tuple]:
  """{'a/b/kernel': shape} of a parameter tree (arrays or ShapeDtypeStructs)."""
  return {"/".join(p): tuple(np.shape(v)) for p, v in traverse_util.flatten_dict(template).items()}


def tree_from_state_dict(state: Mapping[str, np.ndarray], names: Sequence[tuple[str, str, str]],
                         template, where: str, advice: str) -> dict:
  """The parameter tree of `state` under `names` ((key, tree path, layout) rows; the rows
  whose path the template lacks are skipped), every tensor present, none extra, each of the
  template's shape, every value finite; otherwise one line naming the first offending tensor
  and `advice`."""
  want = flat_shapes(template)
  rows = [(k, p, layout) for k, p, layout in names if p in want]
  unmapped = sorted(set(want) - {p for _, p, _ in rows})
  if unmapped:  # the table does not cover the network: a bug here, not in the file
    raise AssertionError(f"no state-dict name for {unmapped[:3]}")
  missing = [k for k, _, _ in rows if k not in state]
  extra = sorted(set(state) - {k for k, _, _ in rows})
  if missing or extra:
    first = (f"tensor {missing[0]} is missing" if missing else f"tensor {extra[0]} is not in "
             f"this network")
    raise FormatError(f"{where}: {first} ({len(missing)} missing, {len(extra)} unexpected in "
                      f"all); {advice}")
  tree = {}
  for key, path, layout in rows:
    value = to_tree(state[key], layout)
    if value.shape != want[path]:
      raise FormatError(f"{where}: tensor {key} has shape {tuple(np.shape(state[key]))}, and "
                        f"this network's {path} needs {want[path]} (in Flax's layout); {advice}")
    tree[tuple(path.split("/"))] = value
  finite({k: state[k] for k, _, _ in rows}, where)
  return traverse_util.unflatten_dict(tree)


def state_dict_from_tree(params, names: Sequence[tuple[str, str, str]]) -> dict[str, np.ndarray]:
  """The state dict of a parameter tree under `names` (the rows whose path it holds)."""
  flat = {"/".join(p): v for p, v in traverse_util.flatten_dict(params).items()}
  out = {k: from_tree(flat[p], layout) for k, p, layout in names if p in flat}
  if len(out) != len(flat):
    raise AssertionError(f"unnamed tensors: {sorted(set(flat) - {p for _, p, _ in names})[:3]}")
  return out
