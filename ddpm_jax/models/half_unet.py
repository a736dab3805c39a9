"""A noise-conditional classifier p_φ(y | x_t): the DDPM U-Net's encoder half (Dhariwal & Nichol
2021's "half U-Net", EncoderUNetModel with its "adaptive" pooling) — the U-Net's residual and
attention blocks down to the lowest resolution and its middle block, then GroupNorm, swish,
a global average pool and a zero-initialized linear layer to the class logits.

(x [B, H, W, C], noise input [B]) -> logits [B, num_classes], the noise input embedded as the
U-Net embeds it (positional for a timestep index, Fourier for log σ or c_noise).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

from ddpm_jax.models.layers import default_init, noise_embedding, norm
from ddpm_jax.models.unet import encode


class HalfUNet(nn.Module):
  """Keyword arguments as the U-Net's (models/unet.py), num_classes the logits."""
  num_classes: int
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.0
  resamp_with_conv: bool = True
  embedding: str = "positional"
  fourier_scale: float = 16.0
  dtype: Any = jnp.float32
  attention: str = "einsum"
  remat: bool = False
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x, t, y=None, train: bool = False):
    del y  # the labels are what it predicts
    temb = noise_embedding(t, self.ch, self.embedding, self.fourier_scale, self.dtype)
    h, _ = encode(self, x, temb, train)
    h = nn.swish(norm(self.dtype, self.norm_groups, name="norm_out")(h))
    pooled = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=default_init(0.0), name="logits")(pooled)
