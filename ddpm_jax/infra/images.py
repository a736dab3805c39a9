"""Image grids for samples: [B, H, W, C] in [−1, 1] → one uint8 PNG."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ddpm_jax.infra import files


def to_uint8(images) -> np.ndarray:
  """[−1, 1] → {0..255}: round((x + 1) · 127.5), clipped; NaN (a diverged sample) → 128."""
  x = np.nan_to_num(np.asarray(images, np.float32), nan=0.0)
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images, ncol: int | None = None, pad: int = 2, scale: int = 1,
              pad_value: int = 128) -> np.ndarray:
  """Tiles [B, H, W, C] images row-major into one [rows·(H+pad)+pad, …, C] uint8 array on a
  grey background, each image upscaled by `scale` (nearest neighbour)."""
  imgs = to_uint8(images)
  if scale > 1:
    imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
  b, h, w, c = imgs.shape
  ncol = ncol or math.ceil(math.sqrt(b))
  nrow = math.ceil(b / ncol)
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
  for i, img in enumerate(imgs):
    r, col = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return grid


def save_png(path: str, grid: np.ndarray) -> str:
  """Writes a uint8 [H, W, C] array as PNG atomically (temporary file, then rename)."""
  with files.atomic_open(path) as f:
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
  return path
