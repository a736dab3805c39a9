"""NCSNv2 (Song & Ermon 2020, "Improved techniques for training score-based generative
models"; ermongroup/ncsnv2 models/ncsnv2.py): a RefineNet of residual blocks (dilated at the
lowest resolution) and refine blocks, normalized by InstanceNorm++, with ELU; unconditional:
the reference divides its output F(x) by the level's σ, s(x, σ) = F(x)/σ, so the noise
prediction is ε̂ = −σ s = −F(x), which is what this module returns (its noise input is not
used). The reference feeds data in [0, 1] and maps it to 2x − 1 first; this library's data are
already in [−1, 1], so that step is left out (and the σ of its configs doubles).

Variants: "ncsnv2" (CIFAR-10, CelebA), "deeper" (LSUN), "deepest" (FFHQ). Parameters keep
the reference's names and layouts (Conv2d `weight` [out, in, k, k], InstanceNorm++ `alpha`,
`gamma`, `beta`); a state-dict key maps onto the tree by joining each list index to the name
before it ("res1.0.conv1.weight" → res1.0 / conv1 / weight). Activations are NHWC.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ddpm_jax.models.edm_layers import CONV_DIMS, Init

VARIANTS = ("ncsnv2", "deeper", "deepest")
HALVINGS = {"ncsnv2": 1, "deeper": 2, "deepest": 3}  # the mean-pooling blocks of each
INIT = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))


class Conv(Init):
  """A k×k convolution, stride 1, zero padding dilation·(k // 2) (size kept), OIHW weight."""
  features: int = 0
  kernel: int = 3
  dilation: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    c, k, d = x.shape[-1], self.kernel, self.dilation
    w, b = self.weights((self.features, c, k, k), c * k * k, self.features * k * k,
                        self.use_bias)
    pad = d * (k // 2)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), w, (1, 1), [(pad, pad)] * 2,
                                     rhs_dilation=(d, d), dimension_numbers=CONV_DIMS)
    return y if b is None else y + b


def conv(features: int, kernel: int = 3, *, dilation: int = 1, bias: bool = True, dtype=jnp.float32,
         name: str):
  """Conv with the reference's default initialization (PyTorch's)."""
  return Conv(features=features, kernel=kernel, dilation=dilation, use_bias=bias, **INIT,
              dtype=dtype, name=name)


class InstanceNormPlus(nn.Module):
  """InstanceNorm++: γ ((x − μ)/√(s² + 1e-5) + α (μ − m)/√(v + 1e-5)) + β, with μ, s² the
  per-channel mean and (biased) variance over the image, m and v the mean and unbiased
  variance of the channel means."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    near_one = lambda key, shape: 1 + 0.02 * jax.random.normal(key, shape)  # noqa: E731 (the reference's)
    alpha = self.param("alpha", near_one, (c,))
    gamma = self.param("gamma", near_one, (c,))
    beta = self.param("beta", nn.initializers.zeros, (c,))
    x32 = x.astype(jnp.float32)
    mu = jnp.mean(x32, axis=(1, 2), keepdims=True)
    s2 = jnp.var(x32, axis=(1, 2), keepdims=True)
    m = jnp.mean(mu, axis=-1, keepdims=True)
    v = jnp.var(mu, axis=-1, keepdims=True, ddof=1)
    h = (x32 - mu) / jnp.sqrt(s2 + self.eps) + alpha * (mu - m) / jnp.sqrt(v + self.eps)
    return (gamma * h + beta).astype(x.dtype)


def mean_pool(x):
  """2×2 average pooling, stride 2."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ConvMeanPool(nn.Module):
  features: int
  kernel: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return mean_pool(conv(self.features, self.kernel, dtype=self.dtype, name="conv")(x))


class ResidualBlock(nn.Module):
  """x + conv2(ELU(IN++(conv1(ELU(IN++(x)))))), the sum's x through `shortcut` where the width
  or size changes; `down` halves the size (ConvMeanPool) unless dilated, when it only gets the
  shortcut; conv1 of a `down` block keeps the input width."""
  features: int
  down: bool = False
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, d = x.shape[-1], self.dilation
    conv3 = lambda f, name: conv(f, dilation=d, dtype=self.dtype, name=name)  # noqa: E731
    mid = c if self.down else self.features
    h = conv3(mid, "conv1")(nn.elu(InstanceNormPlus(name="normalize1")(x)))
    h = nn.elu(InstanceNormPlus(name="normalize2")(h))
    if self.down and d == 1:
      h = ConvMeanPool(self.features, 3, self.dtype, name="conv2")(h)
      return ConvMeanPool(self.features, 1, self.dtype, name="shortcut")(x) + h
    h = conv3(self.features, "conv2")(h)
    if self.down or c != self.features:
      x = conv3(self.features, "shortcut")(x)
    return x + h


class RCUBlock(nn.Module):
  """Residual conv units: n_blocks times x + conv(ELU(conv(ELU(x)))), 3×3 without bias."""
  n_blocks: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(1, self.n_blocks + 1):
      r = x
      for j in (1, 2):
        x = conv(x.shape[-1], bias=False, dtype=self.dtype, name=f"{i}_{j}_conv")(nn.elu(x))
      x = x + r
    return x


def resize_align_corners(x, size: int):
  """Bilinear resize of NHWC x to size × size with align_corners=True (PyTorch's
  interpolate): output o reads input o (n_in − 1)/(n_out − 1)."""
  for axis in (1, 2):
    n = x.shape[axis]
    src = jnp.arange(size) * ((n - 1) / (size - 1) if size > 1 else 0.0)
    i0 = jnp.floor(src).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, n - 1)
    w = (src - i0).astype(x.dtype).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    x = (1 - w) * jnp.take(x, i0, axis=axis) + w * jnp.take(x, i1, axis=axis)
  return x


class RefineBlock(nn.Module):
  """RCU on each input → fusion (3×3 conv, then bilinear resize to the first input's size,
  summed) → chained residual pooling (ELU; twice: max pool 5×5 stride 1, 3×3 conv without
  bias, added) → RCU (3 units at the end, else 1)."""
  features: int
  end: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs):
    hs = [RCUBlock(2, self.dtype, name=f"adapt_convs.{i}")(x) for i, x in enumerate(xs)]
    if len(hs) > 1:
      size = hs[0].shape[1]
      h = sum(resize_align_corners(
          conv(self.features, dtype=self.dtype, name=f"msf.convs.{i}")(h), size)
          for i, h in enumerate(hs))
    else:
      h = hs[0]
    h = path = nn.elu(h)
    for i in range(2):
      path = nn.max_pool(path, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))
      path = conv(self.features, bias=False, dtype=self.dtype, name=f"crp.convs.{i}")(path)
      h = path + h
    return RCUBlock(3 if self.end else 1, self.dtype, name="output_convs")(h)


class NCSNv2(nn.Module):
  """__call__(x [B, H, W, C] in [−1, 1] plus noise, noise_input (unused), y=None, train) →
  ε̂ = −F(x) (see the module docstring)."""
  ngf: int = 128
  variant: str = "ncsnv2"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, noise_input=None, y=None, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f"Unknown NCSNv2 variant {self.variant!r}; use one of {VARIANTS}.")
    f, dt = self.ngf, self.dtype
    rb = lambda feat, name, **kw: ResidualBlock(feat, **kw, dtype=dt, name=name)  # noqa: E731
    h = conv(f, dtype=dt, name="begin_conv")(x)
    l1 = rb(f, "res1.1")(rb(f, "res1.0")(h))
    l2 = rb(2 * f, "res2.1")(rb(2 * f, "res2.0", down=True)(l1))
    deep = self.variant != "ncsnv2"
    low = 4 * f if deep else 2 * f
    if deep:
      l3 = rb(2 * f, "res3.1")(rb(2 * f, "res3.0", down=True)(l2))
      l31 = (rb(2 * f, "res31.1")(rb(2 * f, "res31.0", down=True)(l3))
             if self.variant == "deepest" else l3)
      l4 = rb(low, "res4.1", dilation=2)(rb(low, "res4.0", down=True, dilation=2)(l31))
    else:
      l3 = rb(low, "res3.1", dilation=2)(rb(low, "res3.0", down=True, dilation=2)(l2))
      l4 = l3
    l5 = rb(low, f"res{5 if deep else 4}.1", dilation=4)(
        rb(low, f"res{5 if deep else 4}.0", down=True, dilation=4)(l4))
    refine = lambda feat, name, xs, end=False: RefineBlock(feat, end, dt, name=name)(xs)  # noqa: E731
    if deep:
      r = refine(low, "refine1", [l5])
      r = refine(2 * f, "refine2", [l4, r])
      if self.variant == "deepest":
        r = refine(2 * f, "refine31", [l31, r])
      r = refine(2 * f, "refine3", [l3, r])
      r = refine(f, "refine4", [l2, r])
      out = refine(f, "refine5", [l1, r], end=True)
    else:
      r = refine(low, "refine1", [l5])
      r = refine(2 * f, "refine2", [l3, r])
      r = refine(f, "refine3", [l2, r])
      out = refine(f, "refine4", [l1, r], end=True)
    out = nn.elu(InstanceNormPlus(name="normalizer")(out))
    out = conv(x.shape[-1], dtype=dt, name="end_conv")(out)
    return -out.astype(jnp.float32)
