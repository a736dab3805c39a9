"""Datasets as numpy batches. No model code here.

The embedded dataset ships inside the package, so the demo needs no download: the 1,797
8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test set
(E. Alpaydin and C. Kaynak, CC BY 4.0; the copy bundled with scikit-learn), pixel counts 0..16.
"""

from __future__ import annotations

import importlib.resources

import numpy as np


def load_embedded_digits() -> tuple[np.ndarray, np.ndarray]:
  """(images [1797, 8, 8, 1] float32 in [−1, 1], labels [1797] int32)."""
  with importlib.resources.files("ddpm_jax").joinpath("assets/digits_8x8.npz").open("rb") as f:
    with np.load(f, allow_pickle=False) as z:
      images, labels = z["images"], z["labels"]
  return (images.astype(np.float32) / 16.0 * 2.0 - 1.0), labels.astype(np.int32)
