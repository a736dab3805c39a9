"""The embedded dataset, image grids and the README demo."""

import numpy as np
from PIL import Image

from ddpm_jax import data, demo, images


def test_embedded_digits():
  x, y = data.load_embedded_digits()
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
  assert x.min() == -1.0 and x.max() == 1.0
  assert np.all(np.bincount(y) > 170)


def test_grid_layout_and_scaling():
  imgs = np.stack([np.full((4, 5, 3), v) for v in (-1.0, 0.0, 1.0)])
  grid = images.make_grid(imgs, ncol=2, pad=1, scale=2)
  assert grid.shape == (2 * 9 + 1, 2 * 11 + 1, 3)
  assert grid[1, 1, 0] == 0 and grid[1, 12, 0] == 128 and grid[10, 1, 0] == 255
  assert images.to_uint8(np.array([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]


def test_demo_writes_a_png_of_digits(tmp_path):
  out = tmp_path / "grid.png"
  demo.main(["--out", str(out), "--num", "16", "--steps", "20"])
  img = np.asarray(Image.open(out))
  assert img.shape == (4 * 34 + 2, 4 * 34 + 2)
  # Samples are digit-like: mostly dark background with bright strokes, not noise.
  cell = img[2:34, 2:34]
  assert (cell < 40).mean() > 0.3 and (cell > 200).mean() > 0.05
