"""EDM's non-leaking augmentation (Karras et al. 2022, App. F.2; NVlabs/edm training/augment.py,
after ADA, Karras et al. 2020) with the transformations EDM trains CIFAR-10 with: x-flip
(always drawn: 50 %), and with probability p each of y-flip, isotropic scaling 2^{0.2 N},
rotation U(−π, π), anisotropic scaling 2^{±0.2 N} along a random axis (half the time
rotated) and translation 0.125·N of the image size; with `color`, also ADA's colour
transformations, each with probability p: brightness + 0.2 N, contrast 2^{0.5 N}, luma flip,
hue rotation U(−π, π) about the luma axis, saturation 2^{N}. The network sees the numbers
that describe them (9 augment labels, 15 with colour, through its augment_dim mapping) and
learns to undo nothing: at sampling time the labels are zero, the identity.

The geometric part is the reference's, per example: reflect-pad by the margin the
transformed image needs, upsample ×2 with the sym6 wavelet, sample bilinearly along the
inverse transform (zeros outside), filter and downsample ×2 with sym6, crop. The margin
depends on the draw, so here the image is reflect-padded by the most any draw can need
(H − 1, W − 1) and the pixels beyond the draw's own margin are zeroed before and after the
upsampling: the same arithmetic at a static shape. Randomness: one key per example.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SYM6 = np.array([0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
                 -0.048311742585633, 0.4910559419267466, 0.787641141030194,
                 0.3379294217276218, -0.07263752278646252, -0.021060292512300564,
                 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148], np.float32)
HZ_PAD = len(SYM6) // 4
LABEL_DIM = 9  # xflip, yflip, scale, rotation (cos − 1, sin), anisotropy (2), translation (2)
COLOR_LABEL_DIM = 6  # brightness, contrast, luma flip, hue (cos − 1, sin), saturation


class Draw(NamedTuple):
  """One example's transformation (zeros: the identity). Flips are 0/1; scale and aniso are
  N(0, 1) draws w of 2^{0.2 w}; rotate and aniso_angle are angles; tx, ty are N(0, 1) draws
  of 0.125·size translations; brightness, contrast and saturation N(0, 1) draws, lumaflip
  0/1, hue an angle (the colour part, zero without `color`)."""
  xflip: jnp.ndarray
  yflip: jnp.ndarray
  scale: jnp.ndarray
  rotate: jnp.ndarray
  aniso: jnp.ndarray
  aniso_angle: jnp.ndarray
  tx: jnp.ndarray
  ty: jnp.ndarray
  brightness: jnp.ndarray = 0.0
  contrast: jnp.ndarray = 0.0
  lumaflip: jnp.ndarray = 0
  hue: jnp.ndarray = 0.0
  saturation: jnp.ndarray = 0.0


def draw(key, p: float, color: bool = False) -> Draw:
  """One example's draw, as the reference draws it with probability multiplier p."""
  k = jax.random.split(key, 24)
  u = lambda i: jax.random.uniform(k[i])  # noqa: E731
  n = lambda i: jax.random.normal(k[i])  # noqa: E731
  on = lambda i, v: jnp.where(u(i) < p, v, jnp.zeros_like(v))  # noqa: E731
  angle = lambda i: (2 * u(i) - 1) * math.pi  # noqa: E731
  d = Draw(
      xflip=jax.random.bernoulli(k[0]).astype(jnp.int32),  # xflip multiplier 1e8: always
      yflip=on(1, jax.random.bernoulli(k[2]).astype(jnp.int32)),
      scale=on(3, n(4)),
      rotate=on(5, angle(6)),
      aniso=on(7, n(8)),
      aniso_angle=jnp.where(u(9) < 0.5, angle(10), 0.0),
      tx=on(11, n(12)), ty=on(11, n(13)))
  if not color:
    return d
  return d._replace(brightness=on(14, n(15)), contrast=on(16, n(17)),
                    lumaflip=on(18, jax.random.bernoulli(k[19]).astype(jnp.int32)),
                    hue=on(20, angle(21)), saturation=on(22, n(23)))


def labels(d: Draw, color: bool = False) -> jnp.ndarray:
  """The augment labels of a draw (9, or 15 with `color`), in the reference's order."""
  out = [d.xflip, d.yflip, d.scale, jnp.cos(d.rotate) - 1, jnp.sin(d.rotate),
         d.aniso * jnp.cos(d.aniso_angle), d.aniso * jnp.sin(d.aniso_angle), d.tx, d.ty]
  if color:
    out += [d.brightness, d.contrast, d.lumaflip, jnp.cos(d.hue) - 1, jnp.sin(d.hue),
            d.saturation]
  return jnp.stack([jnp.asarray(v, jnp.float32) for v in out])


def _rotate(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _scale(sx, sy):
  return jnp.diag(jnp.array([sx, sy, 1.0]))


def inverse_transform(d: Draw, height: int, width: int) -> jnp.ndarray:
  """G⁻¹ (3 × 3, pixel units about the image centre) of the geometric part."""
  s = jnp.exp2(0.2 * d.scale)
  a = jnp.exp2(0.2 * d.aniso)
  r = d.aniso_angle
  g = _scale(1 / s, 1 / s) @ _rotate(d.rotate)
  g = g @ _rotate(-r) @ _scale(1 / a, a) @ _rotate(r)
  shift = jnp.eye(3).at[0, 2].set(-d.tx * width * 0.125).at[1, 2].set(-d.ty * height * 0.125)
  return g @ shift


def _margins(g, height: int, width: int):
  """The reference's reflect-padding (left, top, right, bottom) for G⁻¹: the transformed
  corners' extent plus twice the filter's half-width, clipped to [0, size − 1], rounded up."""
  cx, cy = (width - 1) / 2, (height - 1) / 2
  corners = jnp.array([[-cx, -cy, 1.0], [cx, -cy, 1.0], [cx, cy, 1.0], [-cx, cy, 1.0]]).T
  p = g @ corners
  m = jnp.concatenate([jnp.max(-p[:2], axis=1), jnp.max(p[:2], axis=1)])
  m = m + jnp.array([2 * HZ_PAD - cx, 2 * HZ_PAD - cy] * 2)
  m = jnp.clip(m, 0, jnp.array([width - 1, height - 1] * 2))
  return jnp.ceil(m).astype(jnp.int32)


def _filter(x, taps, axis: int, *, stride: int = 1, dilation: int = 1, pad: int = 0):
  """Correlation of each channel of HWC x with `taps` along axis 0 (H) or 1 (W)."""
  k = taps.reshape((-1, 1) if axis == 0 else (1, -1))
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(k[None, None], (c, 1, 1, 1)), x.dtype)
  strides = (stride, 1) if axis == 0 else (1, stride)
  dil = (dilation, 1) if axis == 0 else (1, dilation)
  padding = [(pad, pad), (0, 0)] if axis == 0 else [(0, 0), (pad, pad)]
  return jax.lax.conv_general_dilated(x[None], kernel, strides, padding, lhs_dilation=dil,
                                      dimension_numbers=("NHWC", "OIHW", "NHWC"),
                                      feature_group_count=c)[0]


def _window(size: int, start, stop):
  i = jnp.arange(size)
  return (i >= start) & (i < stop)


def geometric(image, g):
  """One HWC image through the inverse transform G⁻¹, as the reference executes it."""
  h, w, _ = image.shape
  ph, pw = h - 1, w - 1  # the most margin any draw can need
  mx0, my0, mx1, my1 = _margins(g, h, w)
  x = jnp.pad(image, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
  rows = _window(h + 2 * ph, ph - my0, ph + h + my1)
  cols = _window(w + 2 * pw, pw - mx0, pw + w + mx1)
  x = x * (rows[:, None, None] & cols[None, :, None])
  # ×2: zeros between the pixels, then the reversed wavelet (a convolution with it)
  up = len(SYM6) // 2
  x = _filter(x, SYM6[::-1], 1, dilation=2, pad=up)
  x = _filter(x, SYM6[::-1], 0, dilation=2, pad=up)
  rows2 = _window(x.shape[0], 2 * (ph - my0), 2 * (ph + h + my1))
  cols2 = _window(x.shape[1], 2 * (pw - mx0), 2 * (pw + w + mx1))
  x = x * (rows2[:, None, None] & cols2[None, :, None])
  # sample the output grid (2(H + 2·pad) × 2(W + 2·pad)) along G⁻¹, bilinear, zeros outside
  ho, wo = 2 * (h + 2 * HZ_PAD), 2 * (w + 2 * HZ_PAD)
  jj, ii = jnp.meshgrid(jnp.arange(wo, dtype=jnp.float32), jnp.arange(ho, dtype=jnp.float32))
  q = jnp.stack([(jj - w - 2 * HZ_PAD + 1) / 2, (ii - h - 2 * HZ_PAD + 1) / 2, jnp.ones_like(jj)])
  gq = jnp.einsum("ij,jhw->ihw", g, q)
  px = 2 * gq[0] + w - 1 + 2 * pw
  py = 2 * gq[1] + h - 1 + 2 * ph
  sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [py, px], order=1,  # noqa: E731
                                                        mode="constant", cval=0.0)
  x = jnp.stack([sample(x[..., c]) for c in range(x.shape[-1])], axis=-1)
  # ÷2: the wavelet, every second pixel, crop the pad
  down = (len(SYM6) - 1) // 2
  x = _filter(x, SYM6, 1, stride=2, pad=down)[:, HZ_PAD:-HZ_PAD]
  return _filter(x, SYM6, 0, stride=2, pad=down)[HZ_PAD:-HZ_PAD]


def color_matrix(d: Draw) -> jnp.ndarray:
  """The 4 × 4 affine colour transform M (RGB and 1), composed in the reference's order:
  brightness, contrast, luma flip, hue, saturation."""
  luma = jnp.array([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)
  luma_outer = jnp.outer(luma, luma)
  eye = jnp.eye(4)
  b = 0.2 * d.brightness
  m = eye.at[:3, 3].set(b)
  m = jnp.diag(jnp.array([1.0, 1.0, 1.0, 0.0]) * jnp.exp2(0.5 * d.contrast)
               + jnp.array([0.0, 0.0, 0.0, 1.0])) @ m
  m = (eye - 2 * luma_outer * d.lumaflip) @ m
  m = _rotate3d(luma, d.hue) @ m
  return (luma_outer + (eye - luma_outer) * jnp.exp2(d.saturation)) @ m


def _rotate3d(v, theta):
  """Rotation by theta about the unit axis v[:3] (Rodrigues), as a 4 × 4 affine matrix."""
  x, y, z = v[0], v[1], v[2]
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc = 1 - c
  return jnp.array([[x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0.0],
                    [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0.0],
                    [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0.0],
                    [0.0, 0.0, 0.0, 1.0]])


def apply_color(image, m):
  """RGB: x ← M₃ₓ₃ x + M[:3, 3]; grey: the mean of M's three colour rows."""
  if image.shape[-1] == 3:
    return image @ m[:3, :3].T + m[:3, 3]
  if image.shape[-1] == 1:
    row = m[:3].mean(axis=0)
    return image * row[:3].sum() + row[3]
  raise ValueError("Colour augmentation needs RGB (3 channels) or grey (1 channel) images.")


def apply(image, d: Draw, color: bool = False):
  """One HWC image augmented by the draw d: flips, the geometric transform, then (with
  `color`) the colour transform."""
  h, w, _ = image.shape
  image = jnp.where(d.xflip == 1, image[:, ::-1], image)
  image = jnp.where(d.yflip == 1, image[::-1], image)
  image = geometric(image, inverse_transform(d, h, w))
  return apply_color(image, color_matrix(d)) if color else image


def augment(keys, images, p: float, color: bool = False):
  """(augmented images, [B, 9 or 15] augment labels) of NHWC images, example i drawn from
  keys[i]."""
  draws = jax.vmap(lambda k: draw(k, p, color))(keys)
  return (jax.vmap(lambda x, d: apply(x, d, color))(images, draws),
          jax.vmap(lambda d: labels(d, color))(draws))
