"""Classifier-free guidance (Ho & Salimans 2022): ε̃ = (1 + w) ε(x, t, y) − w ε(x, t, ∅).

The same combination applies to scores, x̂_0 or v, since each is affine in ε at fixed x, t.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def classifier_free_guidance(model: Callable, weight: float, null_label: int
                             ) -> jax.tree_util.Partial:
  """model(x, t, y) → the guided model (x, t, y); `null_label` is the label the model was
  trained with for "no class" (the U-Net's num_classes). weight 0 is plain conditioning. The
  model is a child of the returned Partial, so its bound arrays stay program arguments."""
  return jax.tree_util.Partial(_guided, model, jnp.float32(weight), jnp.int32(null_label))


def _guided(model, weight, null_label, x, t, y):
  both = model(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
               jnp.concatenate([y, jnp.full_like(y, null_label)]))
  cond, uncond = jnp.split(both, 2)
  return (1 + weight) * cond - weight * uncond
