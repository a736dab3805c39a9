"""EDM's DhariwalUNet (NVlabs/edm training/networks.py): ADM (Dhariwal & Nichol 2021) as EDM
ships it — adaptive scale-shift GroupNorm in every residual block, multi-head attention (64
channels per head, or `num_heads` heads at every width as guided-diffusion's --num_heads
gives) at several resolutions, a label embedding added to the time embedding.
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
  num_heads: int = 0  # 0: channels ÷ 64
  dtype: Any = jnp.float32
  remat: bool = False

  # The reference's initializers (kaiming-uniform at √(1/3); zero for the output layers).
  INIT = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
  INIT_ZERO = dict(init_mode="kaiming_uniform", init_weight=0.0, init_bias=0.0)

  @nn.compact
  def __call__(self, x, noise_labels, y=None, augment=None, train: bool = False):
    emb = self._embedding(noise_labels, y, augment, x.shape[0])
    block = dict(channels_per_head=64, num_heads=self.num_heads or None, dropout=self.dropout, init_args=self.INIT,
                 init_zero=self.INIT_ZERO, dtype=self.dtype)

    def run(name, channels, h, **kw):  # one residual block, rematerialized with self.remat
      return call(UNetBlock(channels, **block, **kw, name=name), h, emb, remat=self.remat,
                  train=train)

    mc, resolution, last = self.model_channels, x.shape[1], len(self.channel_mult) - 1
    skips = []
    for level, mult in enumerate(self.channel_mult):
      res = resolution >> level
      at = f"enc.{res}x{res}"
      if level == 0:
        x = Conv2d(features=mc * mult, kernel=3, **self.INIT, dtype=self.dtype,
                   name=f"{at}_conv")(x)
      else:
        x = run(f"{at}_down", x.shape[-1], x, down=True)
      skips.append(x)
      for idx in range(self.num_blocks):
        x = run(f"{at}_block{idx}", mc * mult, x, attention=res in self.attn_resolutions)
        skips.append(x)
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = resolution >> level
      at = f"dec.{res}x{res}"
      if level == last:
        x = run(f"{at}_in0", x.shape[-1], x, attention=True)
        x = run(f"{at}_in1", x.shape[-1], x)
      else:
        x = run(f"{at}_up", x.shape[-1], x, up=True)
      for idx in range(self.num_blocks + 1):
        x = run(f"{at}_block{idx}", mc * mult, jnp.concatenate([x, skips.pop()], axis=-1),
                attention=res in self.attn_resolutions)
    x = nn.silu(GroupNorm(name="out_norm")(x))
    x = Conv2d(features=self.out_channels, kernel=3, **self.INIT_ZERO, dtype=self.dtype,
               name="out_conv")(x)
    return x.astype(jnp.float32)

  def _embedding(self, noise_labels, y, augment, b):
    """silu(map_layer1(silu(map_layer0(positional + augmentation))) + labels)."""
    mc, width = self.model_channels, self.model_channels * self.channel_mult_emb
    init = dict(self.INIT, dtype=self.dtype)
    emb = positional_embedding(noise_labels, mc)
    if self.augment_dim:
      augment = jnp.zeros((b, self.augment_dim)) if augment is None else augment
      emb = emb + Linear(features=mc, use_bias=False, **self.INIT_ZERO, dtype=self.dtype,
                         name="map_augment")(augment)
    emb = nn.silu(Linear(features=width, **init, name="map_layer0")(emb))
    emb = Linear(features=width, **init, name="map_layer1")(emb)
    if self.label_dim:
      emb = emb + Linear(features=width, use_bias=False, init_mode="kaiming_normal",
                         init_weight=math.sqrt(self.label_dim), dtype=self.dtype,
                         name="map_label")(one_hot_labels(y, self.label_dim, b))
    return nn.silu(emb)
