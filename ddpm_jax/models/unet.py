"""The DDPM U-Net (Ho et al. 2020, appendix B): an ε/x_0/v/score network (x, t[, y]) -> output.

CIFAR-10: ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
dropout=0.1 → 35.7M parameters.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

from ddpm_jax.models.layers import (
  AttnBlock,
  Downsample,
  ResnetBlock,
  Upsample,
  default_init,
  noise_embedding,
)
from ddpm_jax.models.remat import call


class UNet(nn.Module):
  """Keyword arguments only. t: [B] integer or real timesteps, embedded as given: "positional"
  for a timestep index (real-valued for continuous VP models, t·(N−1)), "fourier" for e.g.
  log σ. y: [B] labels in [0, num_classes], where num_classes is the null label of
  classifier-free guidance. Parameters are float32; `dtype` is the compute dtype (GroupNorm
statistics and the attention softmax stay float32); `attention` picks layers.AttnBlock's
implementation."""
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.0
  out_ch: int | None = None
  resamp_with_conv: bool = True
  num_classes: int | None = None
  embedding: str = "positional"
  fourier_scale: float = 16.0
  dtype: Any = jnp.float32
  attention: str = "einsum"
  remat: bool = False

  @nn.compact
  def __call__(self, x, t, y=None, train: bool = False):
    b, height, width, in_ch = x.shape
    num_res = len(self.ch_mult)
    factor = 2**(num_res - 1)
    if height % factor or width % factor:
      raise ValueError(f"Image size {height}x{width} must be divisible by {factor} "
                       f"(2^(len(ch_mult)-1) for ch_mult={tuple(self.ch_mult)}); resize the "
                       f"data or use fewer levels.")
    temb = noise_embedding(t, self.ch, self.embedding, self.fourier_scale, self.dtype)
    if self.num_classes is not None:
      if y is None:
        raise ValueError("This U-Net is class-conditional: pass labels y (num_classes for none).")
      temb = temb + nn.Embed(self.num_classes + 1, self.ch * 4, dtype=self.dtype, name="label_emb")(y)

    def res(h, mult):
      return call(ResnetBlock(self.ch * mult, self.dropout, dtype=self.dtype), h, temb,
                  remat=self.remat, train=train)

    hs = [nn.Conv(self.ch, (3, 3), dtype=self.dtype, kernel_init=default_init(), name="conv_in")(x.astype(self.dtype))]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = res(hs[-1], mult)
        if h.shape[1] in self.attn_resolutions:
          h = AttnBlock(self.dtype, self.attention)(h)
        hs.append(h)
      if level != num_res - 1:
        hs.append(Downsample(self.resamp_with_conv, self.dtype)(hs[-1]))

    h = res(hs[-1], self.ch_mult[-1])
    h = AttnBlock(self.dtype, self.attention)(h)
    h = res(h, self.ch_mult[-1])

    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = res(jnp.concatenate([h, hs.pop()], axis=-1), mult)
        if h.shape[1] in self.attn_resolutions:
          h = AttnBlock(self.dtype, self.attention)(h)
      if level != 0:
        h = Upsample(self.resamp_with_conv, self.dtype)(h)
    assert not hs

    h = nn.swish(nn.GroupNorm(32, epsilon=1e-6, dtype=self.dtype, name="norm_out")(h))
    out = nn.Conv(self.out_ch or in_ch, (3, 3), dtype=self.dtype, kernel_init=default_init(0.0),
                  name="conv_out")(h)
    return out.astype(jnp.float32)
