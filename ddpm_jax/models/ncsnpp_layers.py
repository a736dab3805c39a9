"""The layers of score_sde's NCSN++ / DDPM++ (Song et al. 2021, yang-song/score_sde models/
layerspp.py, layers.py, up_or_down_sampling.py), in Flax Linen.

Class names, the order in which each layer creates its sub-layers, and parameter names are
the reference's, so Flax gives the same automatic names (`ResnetBlockBigGANpp_3/Conv_1/kernel`)
and a score_sde Flax checkpoint's parameter tree is this tree, leaf for leaf. Initializers
are DDPM's (models/layers.default_init): variance_scaling(scale, fan_avg, uniform), biases 0.

FIR resampling is StyleGAN2's upfirdn with the separable filter k kᵀ / (Σk)² (gain 4 when
up-sampling), padded as the reference pads it; the fused FIR convolutions keep the
reference's order of operations.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ddpm_jax.models import edm_layers
from ddpm_jax.models.layers import default_init

ACTIVATIONS = {"swish": nn.swish, "elu": nn.elu, "relu": nn.relu,
               "lrelu": lambda x: nn.leaky_relu(x, 0.2)}
COMBINES = ("cat", "sum")


def conv3x3(x, features: int, stride: int = 1, init_scale: float = 1.0):
  return nn.Conv(features, (3, 3), (stride, stride), padding="SAME",
                 kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros)(x)


def conv1x1(x, features: int, init_scale: float = 1.0):
  return nn.Conv(features, (1, 1), padding="SAME", kernel_init=default_init(init_scale),
                 bias_init=nn.initializers.zeros)(x)


def group_norm(x):
  """GroupNorm with min(C/4, 32) groups (ε = 1e-6, Flax's default)."""
  return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32))(x)


def naive_upsample(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def naive_downsample(x):
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _fir(x, k, pad0: int, pad1: int, up: int = 1):
  """upfirdn: insert up − 1 zeros after each pixel, zero-pad (pad0, pad1), correlate each
  channel with the flipped filter k."""
  return edm_layers.depthwise(x, k[::-1, ::-1], padding=(pad0, pad1 + up - 1), dilation=up)


def fir_upsample(x, taps: Sequence[int]):
  """upsample_2d: ×2 with the filter 4 k kᵀ/(Σk)², padded ((p+1)//2 + 1, p//2),
  p = |k| − 2."""
  k = edm_layers.resample_kernel(taps)
  p = k.shape[0] - 2
  return _fir(x, 4 * k, (p + 1) // 2 + 1, p // 2, up=2)


def fir_downsample(x, taps: Sequence[int]):
  """downsample_2d: the filter k kᵀ/(Σk)² padded ((p+1)//2, p//2), then every second pixel."""
  k = edm_layers.resample_kernel(taps)
  p = k.shape[0] - 2
  return _fir(x, k, (p + 1) // 2, p // 2)[:, ::2, ::2]


class NIN(nn.Module):
  """A per-pixel dense layer x W + b (W [C_in, C_out], DDPM's init at init_scale)."""
  num_units: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x):
    w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
    b = self.param("b", nn.initializers.zeros, (self.num_units,))
    return jnp.tensordot(x, w, 1) + b


class Conv2d(nn.Module):
  """A k×k convolution fused with FIR ×2 up-sampling (transposed convolution, then the
  filter) or down-sampling (the filter, then a strided convolution); kernel `weight` HWIO."""
  fmaps: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Callable | None = None

  @nn.compact
  def __call__(self, x):
    w = self.param("weight", self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    k = edm_layers.resample_kernel(self.resample_kernel)
    taps, conv = k.shape[0], self.kernel
    if self.up:
      # transposed convolution with w (the reference's flip and transpose of w, undone by
      # transpose_kernel), then the filter × 4
      wt = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
      x = jax.lax.conv_transpose(x, wt, (2, 2), "VALID", transpose_kernel=True,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
      p = (taps - 2) - (conv - 1)
      x = _fir(x, 4 * k, (p + 1) // 2 + 1, p // 2 + 1)
    elif self.down:
      p = (taps - 2) + (conv - 1)
      x = _fir(x, k, (p + 1) // 2, p // 2)
      x = jax.lax.conv_general_dilated(x, w, (2, 2), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return x


class Combine(nn.Module):
  """A skip connection: conv1x1(x) to y's channels, concatenated with y or added to it."""
  method: str = "cat"

  @nn.compact
  def __call__(self, x, y):
    h = conv1x1(x, y.shape[-1])
    if self.method == "cat":
      return jnp.concatenate([h, y], axis=-1)
    if self.method == "sum":
      return h + y
    raise ValueError(f"Unknown progressive_combine {self.method!r}; use one of {COMBINES}.")


class AttnBlockpp(nn.Module):
  """x + NIN(softmax(q kᵀ/√C) v) over the H·W positions (one head); ÷√2 with
  skip_rescale."""
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = group_norm(x)
    q, k, v = NIN(c)(y), NIN(c)(y), NIN(c)(y)
    logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k).reshape(b, h, w, h * w) * (c ** -0.5)
    weights = jax.nn.softmax(logits, axis=-1).reshape(b, h, w, h, w)
    y = NIN(c, init_scale=self.init_scale)(jnp.einsum("bhwHW,bHWc->bhwc", weights, v))
    return (x + y) / np.sqrt(2.0) if self.skip_rescale else x + y


class Upsample(nn.Module):
  """×2: nearest (+ conv3x3), or FIR (fused with a 3×3 convolution when with_conv)."""
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      h = naive_upsample(x)
      return conv3x3(h, out_ch) if self.with_conv else h
    if not self.with_conv:
      return fir_upsample(x, self.fir_kernel)
    return Conv2d(out_ch, 3, up=True, resample_kernel=tuple(self.fir_kernel),
                  kernel_init=default_init())(x)


class Downsample(nn.Module):
  """÷2: strided conv3x3 ("SAME") or 2×2 average, or FIR (fused with a 3×3 convolution)."""
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      return conv3x3(x, out_ch, stride=2) if self.with_conv else naive_downsample(x)
    if not self.with_conv:
      return fir_downsample(x, self.fir_kernel)
    return Conv2d(out_ch, 3, down=True, resample_kernel=tuple(self.fir_kernel),
                  kernel_init=default_init())(x)


class ResnetBlockDDPMpp(nn.Module):
  """DDPM's residual block: x + conv(drop(act(GN(conv(act(GN(x))) + Dense(act(temb)))))), a
  NIN (or conv3x3) shortcut when the channels change, ÷√2 with skip_rescale."""
  act: Any
  out_ch: int | None = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train: bool = True):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = conv3x3(self.act(group_norm(x)), out_ch)
    if temb is not None:
      h += nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if c != out_ch:
      x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN's residual block: resampling (FIR or naive) inside the branch and on the
  shortcut, which becomes a conv1x1 when the channels change or it resamples."""
  act: Any
  up: bool = False
  down: bool = False
  out_ch: int | None = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train: bool = True):
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = self.act(group_norm(x))
    if self.up or self.down:
      if self.fir:
        resample = fir_upsample if self.up else fir_downsample
        h, x = resample(h, self.fir_kernel), resample(x, self.fir_kernel)
      else:
        resample = naive_upsample if self.up else naive_downsample
        h, x = resample(h), resample(x)
    h = conv3x3(h, out_ch)
    if temb is not None:
      h += nn.Dense(out_ch, kernel_init=default_init())(self.act(temb))[:, None, None, :]
    h = self.act(group_norm(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if c != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h
