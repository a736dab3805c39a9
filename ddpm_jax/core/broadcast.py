"""Per-example values against batches: the one broadcasting helper of the library."""

from __future__ import annotations

import jax.numpy as jnp


def per_example(v, x):
  """v of shape [B] (or any prefix of x's shape, or a scalar) reshaped to [B, 1, …, 1] so that
  it broadcasts against x of shape [B, ...]."""
  return jnp.reshape(v, jnp.shape(v) + (1,) * (jnp.ndim(x) - jnp.ndim(v)))
