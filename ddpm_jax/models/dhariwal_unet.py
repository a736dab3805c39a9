"""EDM's DhariwalUNet (NVlabs/edm training/networks.py): ADM (Dhariwal & Nichol 2021) as EDM
ships it — adaptive scale-shift GroupNorm in every residual block, multi-head attention (64
channels per head) at several resolutions, a label embedding added to the time embedding.
Parameter names follow the reference's state dict (models/edm_layers.py).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

from ddpm_jax.models.edm_layers import (
  Conv2d,
  GroupNorm,
  Linear,
  UNetBlock,
  positional_embedding,
)
from ddpm_jax.models.remat import call
from ddpm_jax.models.song_unet import one_hot_labels


class DhariwalUNet(nn.Module):
  """Keyword arguments as the reference's. __call__(x [B, H, W, C], noise_labels [B], y [B]
  labels or None, augment [B, augment_dim] or None (zeros), train)."""
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.10
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, noise_labels, y=None, augment=None, train: bool = False):
    b, resolution, _, _ = x.shape
    mc, emb_channels = self.model_channels, self.model_channels * self.channel_mult_emb
    init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3),
                init_bias=math.sqrt(1 / 3))
    init_zero = dict(init_mode="kaiming_uniform", init_weight=0.0, init_bias=0.0)
    block = dict(channels_per_head=64, dropout=self.dropout, init_args=init,
                 init_zero=init_zero, dtype=self.dtype)
    init = dict(init, dtype=self.dtype)

    # Mapping.
    emb = positional_embedding(noise_labels, mc)
    if self.augment_dim:
      augment = jnp.zeros((b, self.augment_dim)) if augment is None else augment
      emb = emb + Linear(features=mc, use_bias=False, **init_zero, dtype=self.dtype,
                         name="map_augment")(augment)
    emb = nn.silu(Linear(features=emb_channels, **init, name="map_layer0")(emb))
    emb = Linear(features=emb_channels, **init, name="map_layer1")(emb)
    if self.label_dim:
      emb = emb + Linear(features=emb_channels, use_bias=False, init_mode="kaiming_normal",
                         init_weight=math.sqrt(self.label_dim), dtype=self.dtype,
                         name="map_label")(one_hot_labels(y, self.label_dim, b))
    emb = nn.silu(emb)

    def run(block, x):  # one residual block, rematerialized with self.remat
      return call(block, x, emb, remat=self.remat, train=train)

    # Encoder.
    skips = []
    for level, mult in enumerate(self.channel_mult):
      res = resolution >> level
      at = f"enc.{res}x{res}"
      if level == 0:
        x = Conv2d(features=mc * mult, kernel=3, **init, name=f"{at}_conv")(x)
      else:
        x = run(UNetBlock(x.shape[-1], down=True, **block, name=f"{at}_down"), x)
      skips.append(x)
      for idx in range(self.num_blocks):
        x = run(UNetBlock(mc * mult, attention=res in self.attn_resolutions, **block,
                      name=f"{at}_block{idx}"), x)
        skips.append(x)

    # Decoder.
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = resolution >> level
      at = f"dec.{res}x{res}"
      if level == len(self.channel_mult) - 1:
        x = run(UNetBlock(x.shape[-1], attention=True, **block, name=f"{at}_in0"), x)
        x = run(UNetBlock(x.shape[-1], **block, name=f"{at}_in1"), x)
      else:
        x = run(UNetBlock(x.shape[-1], up=True, **block, name=f"{at}_up"), x)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = run(UNetBlock(mc * mult, attention=res in self.attn_resolutions, **block,
                      name=f"{at}_block{idx}"), x)
    x = nn.silu(GroupNorm(name="out_norm")(x))
    x = Conv2d(features=self.out_channels, kernel=3, **init_zero, dtype=self.dtype,
               name="out_conv")(x)
    return x.astype(jnp.float32)
