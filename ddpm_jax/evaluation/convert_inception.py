"""Converts pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` to the .npz that
`inception.load_params` reads (the FID Inception weights every published FID uses).

  pip install torch   # only for this conversion
  python -m ddpm_jax.evaluation.convert_inception pt_inception-2015-12-05-6726825d.pth [OUT.npz]

OUT defaults to ~/.cache/ddpm_jax/inception_fid.npz, where fid.inception_weights points.

The .pth is read with `torch.load(weights_only=True)`, which unpickles tensors only and
never executes code from the file. Names follow torchvision's Inception-v3
(`Mixed_5b.branch5x5_2.conv.weight`, `….bn.running_var`) and become the graph's names
(`mixed.tower.conv_1.weight`, `….var`). The BatchNorm scale γ is folded exactly into the
convolution: γ(w∗x − m)/√(v + ε) + β = (γw∗x − γm)/√(v + ε) + β, so w ← γw, m ← γm. The
1008-way classifier `fc` (the graph's softmax/logits, which the Inception Score reads) is kept
as `logits.weight` and `logits.bias`.
"""

from __future__ import annotations

import argparse
import os
from typing import Mapping

import numpy as np

from ddpm_jax.evaluation import inception
from ddpm_jax.infra import files

_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
      "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
      "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
      "branch3x3dbl_3": "tower.conv_2"}
_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
      "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
      "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
      "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
      "branch_pool": "tower_2.conv"}
_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
      "branch7x7x3_1": "tower_1.conv", "branch7x7x3_2": "tower_1.conv_1",
      "branch7x7x3_3": "tower_1.conv_2", "branch7x7x3_4": "tower_1.conv_3"}
_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
      "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
      "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
      "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_BLOCKS = {"Mixed_5b": ("mixed", _A), "Mixed_5c": ("mixed_1", _A), "Mixed_5d": ("mixed_2", _A),
           "Mixed_6a": ("mixed_3", _B), "Mixed_6b": ("mixed_4", _C), "Mixed_6c": ("mixed_5", _C),
           "Mixed_6d": ("mixed_6", _C), "Mixed_6e": ("mixed_7", _C), "Mixed_7a": ("mixed_8", _D),
           "Mixed_7b": ("mixed_9", _E), "Mixed_7c": ("mixed_10", _E)}
_UNUSED = ("AuxLogits.",)  # the auxiliary head of training; fc is kept (logits)


def conv_names() -> dict[str, str]:
  """torchvision BasicConv2d prefix → the graph's conv prefix, for all 94 convolutions."""
  names = dict(_STEM)
  for block, (ours, branches) in _BLOCKS.items():
    names.update({f"{block}.{b}": f"{ours}.{o}" for b, o in branches.items()})
  return names


def convert_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid state dict (numpy arrays) → {name: float32 array} as in inception_fid.npz."""
  names = conv_names()
  used = {f"{t}.{s}" for t in names for s in ("conv.weight", "bn.weight", "bn.bias",
                                               "bn.running_mean", "bn.running_var",
                                               "bn.num_batches_tracked")}
  used |= {"fc.weight", "fc.bias"}
  unknown = sorted(k for k in state if k not in used and not k.startswith(_UNUSED))
  missing = sorted(k for k in used if k not in state
                   and not k.endswith("num_batches_tracked") and not k.startswith("fc."))
  if unknown or missing:
    raise ValueError(f"Not pytorch-fid's FID Inception state dict: unknown {unknown[:3]}, "
                     f"missing {missing[:3]}; pass pt_inception-2015-12-05-6726825d.pth.")
  out = {}
  for theirs, ours in names.items():
    gamma = np.asarray(state[f"{theirs}.bn.weight"], np.float64)
    w = np.asarray(state[f"{theirs}.conv.weight"], np.float64)
    out[f"{ours}.weight"] = (w * gamma[:, None, None, None]).astype(np.float32)
    out[f"{ours}.beta"] = np.asarray(state[f"{theirs}.bn.bias"], np.float32)
    out[f"{ours}.mean"] = (np.asarray(state[f"{theirs}.bn.running_mean"], np.float64)
                           * gamma).astype(np.float32)
    out[f"{ours}.var"] = np.asarray(state[f"{theirs}.bn.running_var"], np.float32)
  if "fc.weight" in state:
    out["logits.weight"] = np.asarray(state["fc.weight"], np.float32)
    out["logits.bias"] = np.asarray(state["fc.bias"], np.float32)
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth from the pytorch-fid release")
  p.add_argument("out", nargs="?", default=inception.DEFAULT_WEIGHTS,
                 help=f"the .npz to write (default {inception.DEFAULT_WEIGHTS}, where "
                      f"fid.inception_weights points by default)")
  args = p.parse_args()
  try:
    import torch
  except ImportError:
    raise SystemExit("Converting a .pth needs PyTorch once: `pip install torch`, then run "
                     "this again.") from None
  state = torch.load(args.pth, map_location="cpu", weights_only=True)
  arrays = convert_state_dict({k: v.numpy() for k, v in state.items()})
  out = os.path.expanduser(args.out)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  files.save_npz(out, **arrays)
  print(f"{len(arrays)} arrays -> {out} (sha256 {files.sha256(out)})")


if __name__ == "__main__":
  main()
