"""Layers of the DDPM U-Net (Ho et al. 2020, diffusion_tf/models/unet.py), in Flax Linen.

Initializers follow the DDPM code: variance_scaling(scale, "fan_avg", "uniform"), with scale
1e-10 ("zero") on the last convolution of each residual and attention branch.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any


def default_init(scale: float = 1.0):
  return nn.initializers.variance_scaling(max(scale, 1e-10), "fan_avg", "uniform")


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
  """Sinusoidal embedding [sin(t ω_k), cos(t ω_k)], ω_k = max_period^{−k/(dim/2 − 1)} (DDPM);
  t may be fractional (continuous-time models)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class GaussianFourierProjection(nn.Module):
  """[sin(2π W log σ), cos(2π W log σ)] with fixed random W ~ N(0, scale²) (NCSN++)."""
  dim: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x):
    w = self.param("W", nn.initializers.normal(self.scale), (self.dim // 2,))
    proj = jnp.asarray(x, jnp.float32)[:, None] * jax.lax.stop_gradient(w)[None] * 2 * np.pi
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


EMBEDDINGS = ("positional", "fourier")


def noise_embedding(t, ch: int, embedding: str, fourier_scale: float, dtype):
  """The U-Net's noise embedding, Dense(4ch) ∘ swish ∘ Dense(4ch) of the positional embedding
  of a timestep index or the Fourier features of e.g. log σ; called inside a network's
  compact method, its layers (temb_dense0/1) are that network's."""
  if embedding == "positional":
    temb = timestep_embedding(t, ch)
  elif embedding == "fourier":
    temb = GaussianFourierProjection(ch, fourier_scale)(t)
  else:
    raise ValueError(f"Unknown embedding {embedding!r}; use one of {EMBEDDINGS}.")
  temb = nn.Dense(ch * 4, dtype=dtype, kernel_init=default_init(), name="temb_dense0")(temb)
  return nn.Dense(ch * 4, dtype=dtype, kernel_init=default_init(), name="temb_dense1")(
      nn.swish(temb))


def _conv(features, dtype, kernel=3, stride=1, init_scale=1.0, name=None):
  pad = "SAME" if stride == 1 else ((0, 1), (0, 1))  # TF "SAME" for stride 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=pad, dtype=dtype,
                 kernel_init=default_init(init_scale), name=name)


def norm(dtype, groups: int = 32, name=None):
  """GroupNorm of `groups` groups (DDPM's 32; diffusers' norm_num_groups), ε = 1e-6."""
  return nn.GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """x + conv(drop(swish(GN(conv(swish(GN(x))) + Dense(swish(temb)))))), with a 1×1
  projection (Dense over channels) of x when the channel count changes."""
  out_ch: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  groups: int = 32

  @nn.compact
  def __call__(self, x, temb, train: bool):
    h = _conv(self.out_ch, self.dtype)(nn.swish(norm(self.dtype, self.groups)(x)))
    h = h + nn.Dense(self.out_ch, dtype=self.dtype, kernel_init=default_init())(nn.swish(temb))[:, None, None]
    h = nn.swish(norm(self.dtype, self.groups)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = _conv(self.out_ch, self.dtype, init_scale=0.0)(h)
    if x.shape[-1] != self.out_ch:
      x = nn.Dense(self.out_ch, dtype=self.dtype, kernel_init=default_init())(x)
    return x + h


ATTENTION = ("einsum", "xla", "cudnn")


class AttnBlock(nn.Module):
  """x + W_o softmax(q kᵀ/√C) v over the H·W positions, single head (DDPM). `attention`:
  "einsum" (two einsums, softmax in float32) or jax.nn.dot_product_attention with
  implementation "xla" or "cudnn" (fused; GPU only)."""
  dtype: Dtype = jnp.float32
  attention: str = "einsum"
  groups: int = 32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = norm(self.dtype, self.groups)(x)
    dense = lambda name, scale=1.0: nn.Dense(c, dtype=self.dtype, kernel_init=default_init(scale), name=name)  # noqa: E731
    q, k, v = (dense(n)(y).reshape(b, h * w, 1, c) for n in ("q", "k", "v"))
    if self.attention == "einsum":
      logits = jnp.einsum("bqhc,bkhc->bqk", q, k) * (c**-0.5)
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
      y = jnp.einsum("bqk,bkhc->bqhc", weights, v)
    elif self.attention in ATTENTION:
      y = jax.nn.dot_product_attention(q, k, v, implementation=self.attention)
    else:
      raise ValueError(f"Unknown model.attention {self.attention!r}; use one of {ATTENTION}.")
    return x + dense("proj_out", 0.0)(y.reshape(b, h, w, c))


class Downsample(nn.Module):
  with_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.with_conv:
      return _conv(x.shape[-1], self.dtype, stride=2)(x)
    return nn.avg_pool(x, (2, 2), (2, 2))


class Upsample(nn.Module):
  with_conv: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
    return _conv(c, self.dtype)(x) if self.with_conv else x
