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
  norm,
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
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x, t, y=None, train: bool = False):
    in_ch = x.shape[-1]
    temb = noise_embedding(t, self.ch, self.embedding, self.fourier_scale, self.dtype)
    if self.num_classes is not None:
      if y is None:
        raise ValueError("This U-Net is class-conditional: pass labels y (num_classes for none).")
      temb = temb + nn.Embed(self.num_classes + 1, self.ch * 4, dtype=self.dtype, name="label_emb")(y)

    h, hs = encode(self, x, temb, train)
    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = _res(self, jnp.concatenate([h, hs.pop()], axis=-1), temb, mult, train)
        if h.shape[1] in self.attn_resolutions:
          h = AttnBlock(self.dtype, self.attention, self.norm_groups)(h)
      if level != 0:
        h = Upsample(self.resamp_with_conv, self.dtype)(h)
    assert not hs

    h = nn.swish(norm(self.dtype, self.norm_groups, name="norm_out")(h))
    out = nn.Conv(self.out_ch or in_ch, (3, 3), dtype=self.dtype, kernel_init=default_init(0.0),
                  name="conv_out")(h)
    return out.astype(jnp.float32)


def encode(net, x, temb, train: bool):
  """The U-Net's downsampling path and middle block, called inside the compact method of
  `net` (a UNet or its classifier half, models/half_unet.py: the same fields), whose layers
  they are: (the middle block's output, the skips: conv_in's and every block's outputs)."""
  height, width = x.shape[1:3]
  factor = 2**(len(net.ch_mult) - 1)
  if height % factor or width % factor:
    raise ValueError(f"Image size {height}x{width} must be divisible by {factor} "
                     f"(2^(len(ch_mult)-1) for ch_mult={tuple(net.ch_mult)}); resize the "
                     f"data or use fewer levels.")
  hs = [nn.Conv(net.ch, (3, 3), dtype=net.dtype, kernel_init=default_init(),
                name="conv_in")(x.astype(net.dtype))]
  for level, mult in enumerate(net.ch_mult):
    for _ in range(net.num_res_blocks):
      h = _res(net, hs[-1], temb, mult, train)
      if h.shape[1] in net.attn_resolutions:
        h = AttnBlock(net.dtype, net.attention, net.norm_groups)(h)
      hs.append(h)
    if level != len(net.ch_mult) - 1:
      hs.append(Downsample(net.resamp_with_conv, net.dtype)(hs[-1]))
  h = _res(net, hs[-1], temb, net.ch_mult[-1], train)
  h = AttnBlock(net.dtype, net.attention, net.norm_groups)(h)
  return _res(net, h, temb, net.ch_mult[-1], train), hs


def _res(net, h, temb, mult: int, train: bool):
  """One residual block of ch·mult channels (rematerialized with net.remat)."""
  return call(ResnetBlock(net.ch * mult, net.dropout, dtype=net.dtype, groups=net.norm_groups), h, temb,
              remat=net.remat, train=train)
