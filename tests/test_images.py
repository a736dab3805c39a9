"""The embedded dataset and image grids."""

import numpy as np

from ddpm_jax.data import sources
from ddpm_jax.infra import images


def test_embedded_digits():
  x, y = sources.load_embedded_digits()
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.uint8
  assert x.min() == 0 and x.max() == 255
  assert np.all(np.bincount(y) > 170)


def test_grid_layout_and_scaling():
  imgs = np.stack([np.full((4, 5, 3), v) for v in (-1.0, 0.0, 1.0)])
  grid = images.make_grid(imgs, ncol=2, pad=1, scale=2)
  assert grid.shape == (2 * 9 + 1, 2 * 11 + 1, 3)
  assert grid[1, 1, 0] == 0 and grid[1, 12, 0] == 128 and grid[10, 1, 0] == 255
  assert images.to_uint8(np.array([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]
