"""Gradient checkpointing per block: a network with remat=True calls each residual block
through `call`, so that the block's activations are recomputed in the backward pass instead
of stored (nn.remat of the call; the parameter tree and the values are unchanged)."""

from __future__ import annotations

from flax import linen as nn


def call(module, *args, remat: bool = False, **static):
  """module(*args, **static); with remat, under nn.remat (keywords are static: e.g. train)."""
  if not remat:
    return module(*args, **static)
  return nn.remat(lambda mdl, *a: mdl(*a, **static))(module, *args)
