"""Per-example randomness of the losses: example i's timestep (or noise level) and noise come
from its own key, so a loss does not depend on how the batch is split over devices."""

from __future__ import annotations

from typing import Sequence

import jax


def split(keys):
  """Two [B] key arrays from per-example keys [B] (each example's key split in two)."""
  return tuple(jax.vmap(jax.random.split, out_axes=1)(keys))


def normal(keys, shape: Sequence[int], dtype):
  """z ~ N(0, I) of `shape` per example."""
  return jax.vmap(lambda k: jax.random.normal(k, tuple(shape), dtype))(keys)


def uniform(keys):
  """u ~ U[0, 1) per example."""
  return jax.vmap(lambda k: jax.random.uniform(k, ()))(keys)
