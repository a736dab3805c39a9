"""score_sde's NCSN++ and DDPM++ (Song et al. 2021, yang-song/score_sde models/ncsnpp.py): one
network whose options give both. NCSN++ (VE): Fourier embedding of log σ, FIR [1, 3, 3, 1],
BigGAN blocks, progressive_input "residual", scale_by_sigma. DDPM++ (VP, sub-VP): positional
embedding of t·999, no FIR, BigGAN blocks, no progressive paths, ε output. The "deep"
variants have num_res_blocks 8 instead of 4.

The tree is score_sde's Flax tree (models/ncsnpp_layers.py): a published Flax checkpoint's
`params` load as they are. The noise input is this library's: log σ for the Fourier
embedding (the reference takes σ and takes its log), the timestep for the positional one.
Inputs are data in [−1, 1] (score_sde's data.centered = True; its uncentered VE models map
x ∈ [0, 1] to 2x − 1 first, which the weight import accounts for).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ddpm_jax.models import ncsnpp_layers as L
from ddpm_jax.models.layers import (
  GaussianFourierProjection,
  default_init,
  timestep_embedding,
)
from ddpm_jax.models.remat import call

RESBLOCKS = ("biggan", "ddpm")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDINGS = ("fourier", "positional")


class NCSNpp(nn.Module):
  """Keyword arguments as score_sde's config.model (nf ↔ ch elsewhere in this library;
  noise_conditional is its `conditional`). __call__(x [B, H, W, C], noise_labels [B], y
  (unused; must be None), train)."""
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  noise_conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = "biggan"
  progressive: str = "none"
  progressive_input: str = "residual"
  progressive_combine: str = "sum"
  embedding_type: str = "fourier"
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  scale_by_sigma: bool = True
  nonlinearity: str = "swish"
  remat: bool = False

  def _check(self):
    for name, value, choices in (
        ("resblock_type", self.resblock_type, RESBLOCKS),
        ("progressive", self.progressive, PROGRESSIVE),
        ("progressive_input", self.progressive_input, PROGRESSIVE_INPUT),
        ("progressive_combine", self.progressive_combine, L.COMBINES),
        ("embedding_type", self.embedding_type, EMBEDDINGS),
        ("nonlinearity", self.nonlinearity, tuple(L.ACTIVATIONS))):
      if value not in choices:
        raise ValueError(f"Unknown NCSN++ {name} {value!r}; use one of {choices}.")
    if self.scale_by_sigma and self.embedding_type != "fourier":
      raise ValueError("NCSN++ scale_by_sigma divides by σ = exp(the noise input), which "
                       "the Fourier embedding of log σ receives; use embedding_type 'fourier' "
                       "or scale_by_sigma=False.")

  @nn.compact
  def __call__(self, x, noise_labels, y=None, train: bool = False):
    self._check()
    if y is not None:
      raise ValueError("NCSN++ is not class-conditional; set model.conditional=False.")
    act, nf, num_levels = L.ACTIVATIONS[self.nonlinearity], self.nf, len(self.ch_mult)
    fir = dict(fir=self.fir, fir_kernel=tuple(self.fir_kernel))
    res = self._residual_block(self._embedding(noise_labels, act), act, fir, train)

    # Downsampling.
    pyramid_in = x if self.progressive_input != "none" else None
    hs = [L.conv3x3(x, nf)]
    for level in range(num_levels):
      for _ in range(self.num_res_blocks):
        h = res(hs[-1], out_ch=nf * self.ch_mult[level])
        hs.append(self._attention(h) if h.shape[1] in self.attn_resolutions else h)
      if level != num_levels - 1:
        if self.resblock_type == "ddpm":
          h = L.Downsample(with_conv=self.resamp_with_conv, **fir)(hs[-1])
        else:
          h = res(hs[-1], down=True)
        pyramid_in, h = self._pyramid_input(pyramid_in, h, fir)
        hs.append(h)
    h = res(self._attention(res(hs[-1])))

    # Upsampling.
    pyramid = None
    for level in reversed(range(num_levels)):
      for _ in range(self.num_res_blocks + 1):
        h = res(jnp.concatenate([h, hs.pop()], axis=-1), out_ch=nf * self.ch_mult[level])
      if h.shape[1] in self.attn_resolutions:
        h = self._attention(h)
      if self.progressive != "none":
        pyramid, h = self._progressive(pyramid, h, level == num_levels - 1, x.shape[-1], act,
                                       fir)
      if level != 0:
        if self.resblock_type == "ddpm":
          h = L.Upsample(with_conv=self.resamp_with_conv, **fir)(h)
        else:
          h = res(h, up=True)
    assert not hs

    if self.progressive == "output_skip":
      h = pyramid
    else:
      h = L.conv3x3(act(L.group_norm(h)), x.shape[-1], init_scale=self.init_scale)
    if self.scale_by_sigma:
      h = h / jnp.exp(noise_labels).reshape(-1, 1, 1, 1)
    return h

  def _embedding(self, noise_labels, act):
    """The noise embedding (Fourier features of log σ, or sinusoids of t) through two dense
    layers; None for a network that is not noise-conditional."""
    nf = self.nf
    if self.embedding_type == "fourier":
      temb = GaussianFourierProjection(2 * nf, self.fourier_scale)(noise_labels)
    else:
      temb = timestep_embedding(noise_labels, nf)
    if not self.noise_conditional:
      return None
    temb = nn.Dense(nf * 4, kernel_init=default_init())(temb)
    return nn.Dense(nf * 4, kernel_init=default_init())(act(temb))

  def _residual_block(self, temb, act, fir, train):
    """h, **options ↦ the configured residual block (BigGAN or DDPM) of h, rematerialized
    with self.remat."""
    common = dict(act=act, dropout=self.dropout, init_scale=self.init_scale,
                  skip_rescale=self.skip_rescale)

    def res(h, **kw):
      if self.resblock_type == "ddpm":
        block = L.ResnetBlockDDPMpp(**common, **kw)
      else:
        block = L.ResnetBlockBigGANpp(**common, **fir, **kw)
      return call(block, h, temb, remat=self.remat, train=train)
    return res

  def _attention(self, h):
    return L.AttnBlockpp(init_scale=self.init_scale, skip_rescale=self.skip_rescale)(h)

  def _pyramid_input(self, pyramid_in, h, fir):
    """The input pyramid at a downsampling: (pyramid, h) for progressive_input."""
    if self.progressive_input == "input_skip":
      pyramid_in = L.Downsample(with_conv=False, **fir)(pyramid_in)
      return pyramid_in, L.Combine(method=self.progressive_combine)(pyramid_in, h)
    if self.progressive_input == "residual":
      pyramid_in = L.Downsample(out_ch=h.shape[-1], with_conv=True, **fir)(pyramid_in)
      pyramid_in = (pyramid_in + h) / np.sqrt(2.0) if self.skip_rescale else pyramid_in + h
      return pyramid_in, pyramid_in
    return pyramid_in, h

  def _progressive(self, pyramid, h, first: bool, channels: int, act, fir):
    """The output pyramid at one level: (pyramid, h)."""
    if self.progressive == "output_skip":
      out = L.conv3x3(act(L.group_norm(h)), channels, init_scale=self.init_scale)
      if first:
        return out, h
      return L.Upsample(with_conv=False, **fir)(pyramid) + out, h
    if first:
      return L.conv3x3(act(L.group_norm(h)), h.shape[-1]), h
    pyramid = L.Upsample(out_ch=h.shape[-1], with_conv=True, **fir)(pyramid)
    pyramid = (pyramid + h) / np.sqrt(2.0) if self.skip_rescale else pyramid + h
    return pyramid, pyramid
