"""The layers of EDM's networks (Karras et al. 2022, NVlabs/edm training/networks.py), in Flax
Linen, shared by SongUNet (DDPM++/NCSN++) and DhariwalUNet (ADM).

Parameters keep the reference's names and layouts — Linear `weight` [out, in] and `bias`
[out], Conv2d `weight` [out, in, k, k], GroupNorm `weight`/`bias` — so that a state dict maps
onto the parameter tree name by name with no transposes: the PyTorch key
`enc.32x32_block0.conv0.weight` is the leaf params["enc.32x32_block0"]["conv0"]["weight"]
(the ModuleDict and its entry make one Flax name). Activations are NHWC; the convolutions
read OIHW kernels. FourierEmbedding's frequencies, a buffer in the reference, are a
parameter here under stop_gradient (they are random and must be loaded).

Initializers are the reference's weight_init modes, scaled by init_weight / init_bias:
xavier_uniform √(6/(fan_in+fan_out)) U(−1, 1), xavier_normal √(2/(fan_in+fan_out)) N,
kaiming_uniform √(3/fan_in) U(−1, 1), kaiming_normal √(1/fan_in) N; the bias draws with the
weight's fans.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any
INIT_MODES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
CONV_DIMS = ("NHWC", "OIHW", "NHWC")


def weight_init(mode: str, fan_in: int, fan_out: int, scale: float = 1.0):
  """The reference's weight_init(shape, mode, fan_in, fan_out) × scale, as a Flax initializer."""
  def init(key, shape, dtype=jnp.float32):
    uniform = lambda: jax.random.uniform(key, shape, dtype, -1, 1)  # noqa: E731
    if mode == "xavier_uniform":
      return scale * math.sqrt(6 / (fan_in + fan_out)) * uniform()
    if mode == "xavier_normal":
      return scale * math.sqrt(2 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)
    if mode == "kaiming_uniform":
      return scale * math.sqrt(3 / fan_in) * uniform()
    if mode == "kaiming_normal":
      return scale * math.sqrt(1 / fan_in) * jax.random.normal(key, shape, dtype)
    raise ValueError(f"Unknown init mode {mode!r}; use one of {INIT_MODES}.")
  return init


class Init(nn.Module):
  """Base of the layers with weights: the reference's init keyword arguments."""
  init_mode: str = "kaiming_normal"
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Dtype = jnp.float32

  def weights(self, shape, fan_in: int, fan_out: int, bias: bool):
    w = self.param("weight", weight_init(self.init_mode, fan_in, fan_out, self.init_weight), shape)
    b = (self.param("bias", weight_init(self.init_mode, fan_in, fan_out, self.init_bias),
                    (shape[0],)) if bias else None)
    return w.astype(self.dtype), None if b is None else b.astype(self.dtype)


class Linear(Init):
  """y = x Wᵀ + b."""
  features: int = 0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    w, b = self.weights((self.features, x.shape[-1]), x.shape[-1], self.features, self.use_bias)
    y = x.astype(self.dtype) @ w.T
    return y if b is None else y + b


def resample_kernel(taps: Sequence[int]) -> np.ndarray:
  """The separable filter f fᵀ / (Σf)² of the reference's resample_filter."""
  f = np.asarray(taps, np.float32)
  return np.outer(f, f) / f.sum()**2


def depthwise(x, kernel, *, stride=1, padding=(0, 0), dilation=1):
  """The 2-D filter `kernel` correlated with each channel of NHWC x (groups = channels),
  zero-padded by padding = (before, after) on both axes, the input dilated by `dilation`."""
  c = x.shape[-1]
  k = jnp.asarray(np.tile(kernel[None, None], (c, 1, 1, 1)), x.dtype)
  return jax.lax.conv_general_dilated(
      x, k, (stride, stride), [tuple(padding)] * 2, lhs_dilation=(dilation, dilation),
      dimension_numbers=CONV_DIMS, feature_group_count=c)


def upsample(x, taps: Sequence[int]):
  """×2 by the reference's conv_transpose2d(x, 4 f, stride 2, padding (k−1)/2 floor)."""
  f = resample_kernel(taps)
  pad = (f.shape[0] - 1) // 2
  return depthwise(x, 4 * f[::-1, ::-1], padding=(f.shape[0] - 1 - pad,) * 2, dilation=2)


def downsample(x, taps: Sequence[int], padding: int | None = None):
  """÷2 by the reference's conv2d(x, f, stride 2, padding (k−1)/2 floor)."""
  f = resample_kernel(taps)
  pad = (f.shape[0] - 1) // 2 if padding is None else padding
  return depthwise(x, f, stride=2, padding=(pad, pad))


class Conv2d(Init):
  """A k×k convolution (k = 0: none, only the resampling) with optional ×2 up- or
  down-sampling by the filter `resample_filter`, before the convolution, or fused with it
  for `fused_resample` down-sampling (convolution padded by both halves, then the filter
  with no padding), as the reference orders them."""
  features: int = 0
  kernel: int = 3
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: Sequence[int] = (1, 1)
  fused_resample: bool = False

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ValueError("Conv2d resamples up or down, not both.")
    if self.fused_resample and self.up:
      raise ValueError("fused_resample is implemented for down-sampling only.")
    c, k = x.shape[-1], self.kernel
    x = x.astype(self.dtype)
    w = b = None
    if k:
      w, b = self.weights((self.features, c, k, k), c * k * k, self.features * k * k,
                          self.use_bias)
    conv = lambda x, pad: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), [(pad, pad)] * 2, dimension_numbers=CONV_DIMS)
    if self.fused_resample and self.down and w is not None:
      f_pad = (len(self.resample_filter) - 1) // 2
      x = downsample(conv(x, k // 2 + f_pad), self.resample_filter, padding=0)
    else:
      if self.up:
        x = upsample(x, self.resample_filter)
      if self.down:
        x = downsample(x, self.resample_filter)
      if w is not None:
        x = conv(x, k // 2)
    return x if b is None else x + b


class GroupNorm(nn.Module):
  """torch.nn.functional.group_norm with min(num_groups, C // min_channels_per_group) groups
  of consecutive channels; statistics in float32."""
  num_groups: int = 32
  min_channels_per_group: int = 4
  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    groups = min(self.num_groups, c // self.min_channels_per_group)
    weight = self.param("weight", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    y = x.astype(jnp.float32).reshape(*x.shape[:-1], groups, c // groups)
    axes = tuple(range(1, y.ndim - 2)) + (y.ndim - 1,)
    mean = y.mean(axes, keepdims=True)
    var = jnp.square(y - mean).mean(axes, keepdims=True)
    y = ((y - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    return (y * weight + bias).astype(self.dtype)


class UNetBlock(nn.Module):
  """The reference's unified residual block: GN → SiLU → conv (resampling) → + embedding
  (as a shift, or adaptive scale-shift (1 + s)·GN(x) + b) → SiLU → dropout → conv, plus the
  skip path, times skip_scale; then optional multi-head self-attention (q, k, v from one 1×1
  convolution whose channels are laid out (head, channel, q/k/v) as the reference reshapes
  them), again times skip_scale."""
  out_channels: int
  attention: bool = False
  num_heads: int | None = None
  channels_per_head: int = 64
  up: bool = False
  down: bool = False
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: Sequence[int] = (1, 1)
  resample_proj: bool = False
  adaptive_scale: bool = True
  init_args: dict | None = None  # the reference's init= (Module.init is Flax's)
  init_zero: dict | None = None
  init_attn: dict | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool = False):
    init = dict(self.init_args or {}, dtype=self.dtype)
    init_zero = dict(self.init_zero if self.init_zero is not None else {"init_weight": 0},
                     dtype=self.dtype)
    init_attn = init if self.init_attn is None else dict(self.init_attn, dtype=self.dtype)
    c_in, c_out = x.shape[-1], self.out_channels
    resample = dict(up=self.up, down=self.down, resample_filter=self.resample_filter)
    orig = x
    x = Conv2d(features=c_out, kernel=3, **resample, **init, name="conv0")(
        nn.silu(GroupNorm(eps=self.eps, name="norm0")(x)))
    params = Linear(features=c_out * (2 if self.adaptive_scale else 1), **init,
                    name="affine")(emb)[:, None, None, :].astype(x.dtype)
    norm1 = GroupNorm(eps=self.eps, dtype=self.dtype, name="norm1")
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      x = nn.silu(shift + norm1(x) * (scale + 1))
    else:
      x = nn.silu(norm1(x + params))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = Conv2d(features=c_out, kernel=3, **init_zero, name="conv1")(x)
    if c_out != c_in or self.up or self.down:
      kernel = 1 if self.resample_proj or c_out != c_in else 0
      orig = Conv2d(features=c_out, kernel=kernel, **resample, **init, name="skip")(orig)
    x = (x + orig) * self.skip_scale
    heads = (0 if not self.attention else self.num_heads if self.num_heads is not None
             else c_out // self.channels_per_head)
    if heads:
      b, h, w, c = x.shape
      qkv = Conv2d(features=3 * c, kernel=1, **init_attn, name="qkv")(
          GroupNorm(eps=self.eps, name="norm2")(x))
      qkv = qkv.reshape(b, h * w, heads, c // heads, 3)
      q, k, v = (qkv[..., i] for i in range(3))
      logits = jnp.einsum("bqnc,bknc->bnqk", q.astype(jnp.float32),
                          k.astype(jnp.float32) / math.sqrt(c // heads))
      weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
      a = jnp.einsum("bnqk,bknc->bqnc", weights, v).reshape(b, h, w, c)
      x = (Conv2d(features=c, kernel=1, **init_zero, name="proj")(a) + x) * self.skip_scale
    return x


def positional_embedding(x, num_channels: int, max_positions: int = 10_000,
                         endpoint: bool = False):
  """[cos(x ω_k), sin(x ω_k)], ω_k = (1/max_positions)^{k/(C/2 − endpoint)}, k < C/2."""
  half = num_channels // 2
  freqs = (1 / max_positions) ** (np.arange(half, dtype=np.float32) / (half - int(endpoint)))
  x = jnp.asarray(x, jnp.float32)[:, None] * jnp.asarray(freqs, jnp.float32)[None]
  return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
  """[cos(2π x f_k), sin(2π x f_k)] with fixed random frequencies f ~ N(0, scale²)."""
  num_channels: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x):
    freqs = self.param("freqs", nn.initializers.normal(self.scale), (self.num_channels // 2,))
    x = jnp.asarray(x, jnp.float32)[:, None] * (2 * np.pi * jax.lax.stop_gradient(freqs))[None]
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)
