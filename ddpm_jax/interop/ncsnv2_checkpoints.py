"""ermongroup/ncsnv2 checkpoints → NCSNv2 parameters (models/ncsnv2.py keeps the reference's
names and layouts: a state-dict key is the tree path joined by ".").

The runner saves `[model state dict, optimizer, epoch, step, EMA shadow]` (torch 1.5: the
legacy torch.save format, interop/torch_files.py): the model's names carry DataParallel's
"module." and its `sigmas` buffer; the EMA shadow (what its sampling uses) has the
parameters under the bare names. A plain state dict (either naming) is read as well.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ddpm_jax.interop.tensors import FormatError


def _tensors(obj) -> bool:
  return isinstance(obj, Mapping) and bool(obj) and all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def state_dict(checkpoint, where: str) -> dict[str, np.ndarray]:
  """The parameters of a checkpoint: the EMA shadow of the runner's list, else its model, else
  the state dict given; "module." and the `sigmas` buffer dropped (σ is the config's)."""
  if isinstance(checkpoint, (list, tuple)):
    tensors = [x for x in checkpoint if _tensors(x)]
    if not tensors:
      raise FormatError(f"{where} holds no state dict; pass ermongroup/ncsnv2's "
                        f"checkpoint_N.pth or a state dict.")
    state = tensors[-1]  # the EMA shadow when the run kept one
  elif _tensors(checkpoint):
    state = checkpoint
  else:
    raise FormatError(f"{where} is not an NCSNv2 checkpoint or state dict; pass "
                      f"ermongroup/ncsnv2's checkpoint_N.pth.")
  state = {k.removeprefix("module."): v for k, v in state.items()}
  return {k: v for k, v in state.items() if k != "sigmas"}
