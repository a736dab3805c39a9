"""The FID Inception-v3 (TensorFlow graph 2015-12-05, as every published FID uses) in Flax.

Convolutions without bias, each followed by BatchNorm without scale (ε = 1e-3) and ReLU; the
average pools inside the blocks exclude padding; the last block's pool branch is a max pool;
the output is the 2048-d global average ("pool3"). Input: images in [0, 255], any size,
resized bilinearly to 299×299 and mapped to x/128 − 1.

Weights come from an .npz of named float32 arrays (`conv.weight` OIHW, `conv.beta`,
`conv.mean`, `conv.var`, `mixed.tower.conv_1.weight`, …), read with allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

BN_EPS = 1e-3
DEFAULT_WEIGHTS = "~/.cache/ddpm_jax/inception_fid.npz"  # where convert_inception writes them


class ConvBN(nn.Module):
  """relu(BN(conv(x))) with BN = (· − mean)/√(var + ε) + beta."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    w = self.param("kernel", nn.initializers.zeros, (kh, kw, x.shape[-1], self.features))
    beta = self.param("beta", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), ((ph, ph), (pw, pw)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def max_pool(x, window=3, stride=2, pad=0):
  return nn.max_pool(x, (window, window), (stride, stride), ((pad, pad), (pad, pad)))


def avg_pool_exclude_pad(x, window=3, stride=1, pad=1):
  """Average over the window's in-image pixels only (count_include_pad=False)."""
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, padding)
  count = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add, dims, strides, padding)
  return total / count


class Tower(nn.Module):
  """A named chain of ConvBN layers conv, conv_1, …; `pool_first` adds the avg pool."""
  specs: tuple
  pool_first: bool = False

  @nn.compact
  def __call__(self, x):
    if self.pool_first:
      x = avg_pool_exclude_pad(x)
    for i, (features, kernel, stride, padding) in enumerate(self.specs):
      x = ConvBN(features, kernel, stride, padding, name="conv" if i == 0 else f"conv_{i}")(x)
    return x


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(64, (1, 1), name="conv")(x),
        Tower(((48, (1, 1), 1, (0, 0)), (64, (5, 5), 1, (2, 2))), name="tower")(x),
        Tower(((64, (1, 1), 1, (0, 0)), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 1, (1, 1))),
              name="tower_1")(x),
        Tower(((self.pool_features, (1, 1), 1, (0, 0)),), pool_first=True, name="tower_2")(x),
    ], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        ConvBN(384, (3, 3), 2, name="conv")(x),
        Tower(((64, (1, 1), 1, (0, 0)), (96, (3, 3), 1, (1, 1)), (96, (3, 3), 2, (0, 0))),
              name="tower")(x),
        max_pool(x),
    ], axis=-1)


class InceptionC(nn.Module):
  ch7: int

  @nn.compact
  def __call__(self, x):
    c = self.ch7
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))
    return jnp.concatenate([
        ConvBN(192, (1, 1), name="conv")(x),
        Tower(((c, (1, 1), 1, (0, 0)), (c, *row[0:1], 1, row[1]), (192, col[0], 1, col[1])),
              name="tower")(x),
        Tower(((c, (1, 1), 1, (0, 0)), (c, col[0], 1, col[1]), (c, row[0], 1, row[1]),
               (c, col[0], 1, col[1]), (192, row[0], 1, row[1])), name="tower_1")(x),
        Tower(((192, (1, 1), 1, (0, 0)),), pool_first=True, name="tower_2")(x),
    ], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        Tower(((192, (1, 1), 1, (0, 0)), (320, (3, 3), 2, (0, 0))), name="tower")(x),
        Tower(((192, (1, 1), 1, (0, 0)), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
               (192, (3, 3), 2, (0, 0))), name="tower_1")(x),
        max_pool(x),
    ], axis=-1)


class InceptionE(nn.Module):
  """The FID graph's last block uses a max pool in its pool branch (`max_pool_branch`)."""
  max_pool_branch: bool = False

  @nn.compact
  def __call__(self, x):
    a = ConvBN(384, (1, 1), name="tower_conv")(x)
    b = ConvBN(448, (1, 1), name="tower_1_conv")(x)
    b = ConvBN(384, (3, 3), 1, (1, 1), name="tower_1_conv_1")(b)
    pooled = max_pool(x, 3, 1, 1) if self.max_pool_branch else avg_pool_exclude_pad(x)
    return jnp.concatenate([
        ConvBN(320, (1, 1), name="conv")(x),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_mixed_conv")(a),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_mixed_conv_1")(a),
        ConvBN(384, (1, 3), 1, (0, 1), name="tower_1_mixed_conv")(b),
        ConvBN(384, (3, 1), 1, (1, 0), name="tower_1_mixed_conv_1")(b),
        ConvBN(192, (1, 1), name="tower_2_conv")(pooled),
    ], axis=-1)


class InceptionV3(nn.Module):
  """images [B, H, W, C] in [0, 255] (C = 1 is repeated to 3) → pool3 features [B, 2048]."""

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (299, 299):
      x = jax.image.resize(x, (x.shape[0], 299, 299, 3), "bilinear")
    x = x / 128.0 - 1.0
    x = ConvBN(32, (3, 3), 2, name="conv")(x)
    x = ConvBN(32, (3, 3), name="conv_1")(x)
    x = ConvBN(64, (3, 3), 1, (1, 1), name="conv_2")(x)
    x = max_pool(x)
    x = ConvBN(80, (1, 1), name="conv_3")(x)
    x = ConvBN(192, (3, 3), name="conv_4")(x)
    x = max_pool(x)
    x = InceptionA(32, name="mixed")(x)
    x = InceptionA(64, name="mixed_1")(x)
    x = InceptionA(64, name="mixed_2")(x)
    x = InceptionB(name="mixed_3")(x)
    x = InceptionC(128, name="mixed_4")(x)
    x = InceptionC(160, name="mixed_5")(x)
    x = InceptionC(160, name="mixed_6")(x)
    x = InceptionC(192, name="mixed_7")(x)
    x = InceptionD(name="mixed_8")(x)
    x = InceptionE(name="mixed_9")(x)
    x = InceptionE(max_pool_branch=True, name="mixed_10")(x)
    return jnp.mean(x, axis=(1, 2))


def weights_path(path: str) -> str:
  """The weights file `path` (~ expanded), or a one-line error saying how to make it."""
  path = os.path.expanduser(path)
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"No Inception weights at {path!r}; convert pytorch-fid's "
                            f"pt_inception-2015-12-05-6726825d.pth there with `python -m "
                            f"ddpm_jax.evaluation.convert_inception PTH {path}` (see the "
                            f"README) or set fid.inception_weights to the converted .npz.")
  return path


def load_weights(path: str):
  """(Inception params, sha256 of the file) of the .npz at `path` (~ expanded)."""
  path = weights_path(path)
  return load_params(path), file_sha256(path)


def load_params(path: str) -> dict:
  """The Flax parameter tree from the named .npz (no code is executed: allow_pickle=False).

  `a.b.c.weight` (OIHW) → params[a][b][c]["kernel"] (HWIO); beta/mean/var likewise.
  """
  params: dict = {}
  with np.load(path, allow_pickle=False) as z:
    for name in z.files:
      *path_parts, leaf = name.split(".")
      value = np.asarray(z[name], np.float32)
      if leaf == "weight":
        leaf, value = "kernel", value.transpose(2, 3, 1, 0)
      node = params
      for part in path_parts:
        node = node.setdefault(part, {})
      node[leaf] = jnp.asarray(value)
  return {"params": params}


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
