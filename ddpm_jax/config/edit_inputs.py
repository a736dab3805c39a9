"""What `--mode edit` edits: the images of edit.input (an .npz with an `images` array and
optional `labels`, or a folder of images; read as data are, nothing in them runs), at the
model's image size and channels, and the mask of edit.mask (1 = keep the pixel: inpainting),
read and checked by the config gate before anything is written.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ddpm_jax.data import batches, sources
from ddpm_jax.infra import files

MASK_EXTENSIONS = (".npz",) + sources.IMAGE_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Inputs:
  images: np.ndarray              # [N, S, S, C] float32 in [−1, 1]
  labels: np.ndarray | None       # [N] int32 from the .npz, or None
  mask: np.ndarray | None         # [N, S, S, C] float32 in [0, 1] (1 = known), or None


def inputs(config, shape) -> Inputs:
  """The images (resized as the data are, grey where the model has one channel) and mask of
  config.edit; one-line errors for a missing or unreadable file, a channel count the model
  cannot take, or a mask of another size or outside [0, 1]."""
  e = config.edit
  if not e.input:
    raise ValueError("--mode edit needs images: set edit.input to an .npz with an 'images' "
                     "array or to a folder of images.")
  path = os.path.expanduser(e.input)
  source = (sources.load_folder(path) if os.path.isdir(path) else sources.load_npz(path))
  uint8, labels = source.get(np.arange(len(source)))
  images = batches.preprocess(_channels(np.stack(
      [sources.fit(im, shape[0]) for im in uint8]), shape[-1], e.input), shape[0],
      np.zeros(len(source), bool))
  mask = _mask(os.path.expanduser(e.mask), images.shape) if e.mask else None
  return Inputs(images, None if labels is None else np.asarray(labels, np.int32), mask)


def _channels(images: np.ndarray, channels: int, where: str) -> np.ndarray:
  if images.shape[-1] == channels:
    return images
  if channels == 1 and images.shape[-1] == 3:  # a grey model: the luminance (ITU-R 601)
    grey = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(grey)[..., None].astype(np.uint8)
  raise ValueError(f"edit.input={where!r} has {images.shape[-1]}-channel images; the model "
                   f"takes {channels}: convert them first.")


def _mask(path: str, shape) -> np.ndarray:
  """The mask broadcast to the images [N, S, S, C]: an .npz 'mask' array ([S, S], [S, S, C]
  or [N, S, S(, C)]) or an image file (white = known, black = to fill)."""
  if not os.path.isfile(path) or not path.lower().endswith(MASK_EXTENSIONS):
    raise FileNotFoundError(f"No mask at edit.mask={path!r}; give an .npz with a 'mask' array "
                            f"or an image file ({', '.join(sources.IMAGE_EXTENSIONS)}).")
  if path.lower().endswith(".npz"):
    try:
      arrays = files.load_npz(path)
    except ValueError as e:
      raise ValueError(f"edit.mask: {e}; save the mask with numpy.savez(PATH, mask=…).") from None
    if "mask" not in arrays:
      raise ValueError(f"{path} has no 'mask' array (it has {sorted(arrays)}).")
    mask = np.asarray(arrays["mask"], np.float32)
  else:
    mask = sources.read_image(path).mean(-1, dtype=np.float32) / 255.0
  n, size, _, channels = shape
  if mask.ndim == 2 or (mask.ndim == 3 and mask.shape[0] == n and mask.shape[1:] == (size, size)):
    mask = mask[..., None]
  try:
    mask = np.broadcast_to(mask, shape).astype(np.float32)
  except ValueError:
    raise ValueError(f"edit.mask {path} has shape {mask.shape}; the images are {shape[1:]} "
                     f"({n} of them): give a [{size}, {size}] mask or one per image.") from None
  if not np.all((mask >= 0) & (mask <= 1)):
    raise ValueError(f"edit.mask {path} has values outside [0, 1]; 1 keeps a pixel, 0 fills "
                     f"it.")
  return mask
