"""Weights in and out: published checkpoints ↔ this library's parameter trees, by name; no
code from a file ever runs (interop/weights.py)."""

from ddpm_jax.interop.tensors import FormatError  # noqa: F401
from ddpm_jax.interop.weights import (  # noqa: F401
  export,
  load_diffusers,
  load_edm,
  load_score_sde,
  network_fn,
  save_diffusers,
)
