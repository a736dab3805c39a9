"""The FID Inception-v3 (TensorFlow graph 2015-12-05, as every published FID uses) in Flax.

Convolutions without bias, each followed by BatchNorm without scale (ε = 1e-3) and ReLU; the
average pools inside the blocks exclude padding; the last block's pool branch is a max pool;
the output is the 2048-d global average ("pool3"), and with `logits` also the graph's
1008-way classifier on it (`softmax/logits`, pytorch-fid's `fc`; the Inception Score's).
Input: images in [0, 255], any size, resized to 299×299 as the chosen tool resizes
(`resize`), then mapped to x/128 − 1:

  bilinear       half-pixel centres (x_src = (x + ½)·in/out − ½, clamped): PyTorch's
                 F.interpolate(align_corners=False), as pytorch-fid and StyleGAN's/EDM's
                 TorchScript Inception do (jax.image.resize; exact for upsampling)
  tf1_bilinear   TensorFlow 1's resize_bilinear (align_corners=False, no half-pixel centres:
                 x_src = x·in/out), as TF-GAN's and the original FID code do (DDPM, score_sde)
  clean_bicubic  PIL's bicubic on float32 images, clipped to [0, 255] (clean-fid)

Weights come from an .npz of named float32 arrays (`conv.weight` OIHW, `conv.beta`,
`conv.mean`, `conv.var`, `mixed.tower.conv_1.weight`, …, and `logits.weight` [1008, 2048],
`logits.bias` where the converted file kept them), read with allow_pickle=False.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ddpm_jax.infra import files

BN_EPS = 1e-3
DEFAULT_WEIGHTS = "~/.cache/ddpm_jax/inception_fid.npz"  # where convert_inception writes them
RESIZES = ("bilinear", "tf1_bilinear", "clean_bicubic")
SIZE = 299
FEATURES = 2048  # pool3


def _tf1_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of TF1 resize_bilinear along one axis: x_src = x·n_in/n_out,
  interpolating floor(x_src) and min(floor(x_src) + 1, n_in − 1)."""
  src = np.arange(n_out) * (n_in / n_out)
  lo = np.floor(src).astype(int)
  hi, frac = np.minimum(lo + 1, n_in - 1), src - lo
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m.astype(np.float32)


def resize(x, method: str, size: int = SIZE):
  """Images [B, H, W, C] (float, [0, 255]) to size×size as `method` (module docstring)."""
  b, h, w, c = x.shape
  if method == "bilinear":
    return jax.image.resize(x, (b, size, size, c), "bilinear")
  if method == "tf1_bilinear":
    mh, mw = jnp.asarray(_tf1_matrix(h, size)), jnp.asarray(_tf1_matrix(w, size))
    return jnp.einsum("yh,bhwc,xw->byxc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)
  if method == "clean_bicubic":
    return jnp.clip(jax.image.resize(x, (b, size, size, c), "bicubic"), 0, 255)
  raise ValueError(f"Unknown resize {method!r}; use one of {RESIZES}.")


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
  """images [B, H, W, C] in [0, 255] (C = 1 is repeated to 3) → pool3 features [B, 2048], or
  with `logits` (pool3 [B, 2048], logits [B, 1008])."""
  resize: str = "bilinear"
  logits: bool = False

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (SIZE, SIZE):
      x = resize(x, self.resize)
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
    pool = jnp.mean(x, axis=(1, 2))
    if not self.logits:
      return pool
    return pool, nn.Dense(1008, precision=jax.lax.Precision.HIGHEST, name="logits")(pool)


def has_logits(params) -> bool:
  """Whether converted weights kept the 1008-way classifier (the Inception Score needs it)."""
  return "logits" in params["params"]


def weights_path(path: str) -> str:
  """The weights file `path` (~ expanded), or a one-line error saying how to make it."""
  path = os.path.expanduser(path)
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"No Inception weights at {path!r}; convert pytorch-fid's "
                            f"pt_inception-2015-12-05-6726825d.pth there with `python -m "
                            f"ddpm_jax.evaluation.convert_inception PTH {path}` (see "
                            f"docs/command_line.md) or set fid.inception_weights to the "
                            f"converted .npz.")
  return path


def load_weights(path: str):
  """(Inception params, sha256 of the file) of the .npz at `path` (~ expanded), checked to be
  the FID Inception-v3's (every array's name and shape; one-line ValueError otherwise)."""
  path = weights_path(path)
  advice = ("convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with `python -m "
            "ddpm_jax.evaluation.convert_inception` (see docs/command_line.md)")
  try:
    params = load_params(path)
  except (OSError, ValueError) as e:
    why = (str(e) or type(e).__name__).splitlines()[0]
    raise ValueError(f"fid.inception_weights: {why}; {advice}.") from None
  problems = _mismatches(params)
  if problems:
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise ValueError(f"fid.inception_weights={path} holds other weights than the FID "
                     f"Inception-v3's ({'; '.join(problems[:3])}{more}); {advice}.")
  return params, files.sha256(path)


def _shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(p, simple=True, separator="."): tuple(np.shape(v))
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@functools.lru_cache(maxsize=2)
def _network_shapes(logits: bool) -> dict[str, tuple]:
  net = InceptionV3(logits=logits)
  return _shapes(jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3))))


def _mismatches(params) -> list[str]:
  """'name: file (shape) vs network (shape)' and the arrays only one of the two has."""
  got, want = _shapes(params), _network_shapes(has_logits(params))
  return ([f"{k}: file {got[k]} vs network {want[k]}" for k in sorted(got.keys() & want.keys())
           if got[k] != want[k]] + [f"{k}: missing" for k in sorted(want.keys() - got.keys())]
          + [f"{k}: not in the network" for k in sorted(got.keys() - want.keys())])


def load_params(path: str) -> dict:
  """The Flax parameter tree from the named .npz (no code is executed: allow_pickle=False).

  `a.b.c.weight` (OIHW) → params[a][b][c]["kernel"] (HWIO); beta/mean/var likewise;
  `logits.weight` [1008, 2048] → params["logits"]["kernel"] [2048, 1008].
  """
  params: dict = {}
  for name, value in files.load_npz(path).items():
    *path_parts, leaf = name.split(".")
    value = np.asarray(value, np.float32)
    if leaf == "weight":
      leaf, value = "kernel", value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
    node = params
    for part in path_parts:
      node = node.setdefault(part, {})
    node[leaf] = jnp.asarray(value)
  return {"params": params}
