"""Datasets as random-access sources of uint8 images (and integer labels). No model code here.

Sources give random access to uint8 images [H, W, C] (and integer labels):
  - "digits": embedded in the package, no download: the 1,797 8×8 handwritten digits of the
    UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak,
    CC BY 4.0; the copy bundled with scikit-learn), pixel counts 0..16 scaled to 0..255;
  - "npz": an .npz file with an `images` array [N, H, W, C] or [N, H, W] uint8 and optional
    `labels` [N] (read with allow_pickle=False);
  - "folder": a directory of PNG/JPEG files, labels from sub-folder names if there are any;
    for both, a `{split}` in the path is replaced by the split ("train", "test", …);
  - "pairs": reflow's coupled pairs (--mode reflow): a folder of chunk_*.npz files with
    float32 `image` [n, H, W, C] in [−1, 1], the `noise` [n, H, W, C] it was sampled from and
    optional `label` [n] (`PairSource`: batches carry the noise, and training keeps the
    coupling);
  - any other name: a tfds dataset read through `tfds.data_source` (array_record; no
    TensorFlow needed), prepared beforehand in `data_dir`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.resources
import os

import numpy as np
from PIL import Image

from ddpm_jax.infra import files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GRAYSCALE = ("digits", "mnist", "fashion_mnist")  # datasets of one channel (the rest: RGB)


class ArraySource:
  """Random access to in-memory uint8 images [N, H, W, C] and labels [N] (or None)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def get(self, indices) -> tuple[np.ndarray, np.ndarray | None]:
    labels = None if self.labels is None else self.labels[indices]
    return self.images[indices], labels


class PairSource:
  """In-memory (noise, sample) pairs of a flow model: float32 images and noise [N, H, W, C]
  and labels [N] (or None)."""

  def __init__(self, images: np.ndarray, noise: np.ndarray, labels: np.ndarray | None = None):
    self.images, self.noise, self.labels = images, noise, labels

  def __len__(self) -> int:
    return len(self.images)

  def get(self, indices) -> tuple[np.ndarray, np.ndarray | None]:
    return self.images[indices], None if self.labels is None else self.labels[indices]


def load_pairs(path: str) -> PairSource:
  """The pairs in folder `path` (its chunk_*.npz, in name order), each file checked."""
  names = sorted(n for n in files.names(path) if n.startswith("chunk_") and n.endswith(".npz"))
  if not names:
    raise FileNotFoundError(f"No chunk_*.npz pairs in {path!r}; set data.path to the folder "
                            f"--mode reflow wrote (WORKDIR/reflow/…).")
  parts = [files.load_npz(os.path.join(path, n)) for n in names]
  for name, part in zip(names, parts):
    image, noise = part.get("image"), part.get("noise")
    if image is None or noise is None or image.shape != noise.shape or image.ndim != 4 or (
        image.dtype != np.float32):
      raise ValueError(f"{os.path.join(path, name)} is not a reflow chunk (float32 'image' and "
                       f"'noise' of one shape [n, H, W, C]); draw the pairs with --mode reflow.")
  labels = [p.get("label") for p in parts]
  return PairSource(np.concatenate([p["image"] for p in parts]),
                    np.concatenate([p["noise"] for p in parts]),
                    None if any(v is None for v in labels) else
                    np.concatenate(labels).astype(np.int32))


class TfdsSource:
  """Random access to a prepared tfds dataset through `tfds.data_source`."""

  def __init__(self, source):
    self.source = source
    self.has_labels = "label" in source.dataset_info.features

  def __len__(self) -> int:
    return len(self.source)

  def get(self, indices):
    records = [self.source[int(i)] for i in indices]
    images = [np.asarray(r["image"]) for r in records]
    labels = np.array([r["label"] for r in records], np.int32) if self.has_labels else None
    return images, labels


def num_label_values(source) -> int | None:
  """1 + the largest label a source can hold (tfds: its declared class count); None for
  unlabelled data."""
  if isinstance(source, (ArraySource, PairSource)):
    return None if source.labels is None else int(source.labels.max()) + 1
  if not source.has_labels:
    return None
  return int(source.source.dataset_info.features["label"].num_classes)


def load_embedded_digits() -> tuple[np.ndarray, np.ndarray]:
  """(images [1797, 8, 8, 1] uint8 in 0..255, labels [1797] int32)."""
  with importlib.resources.files("ddpm_jax").joinpath("assets/digits_8x8.npz").open("rb") as f:
    with np.load(f, allow_pickle=False) as z:
      images, labels = z["images"], z["labels"]
  return np.round(images.astype(np.float32) * (255.0 / 16.0)).astype(np.uint8), labels.astype(np.int32)


def checked_source(images: np.ndarray, labels, where: str) -> ArraySource:
  """An ArraySource of uint8 images [N, H, W] or [N, H, W, C] with C in {1, 3} and integer
  labels [N] (or None), with a one-line error naming `where` (the file) otherwise."""
  if images.dtype != np.uint8:
    raise ValueError(f"{where}: 'images' must be uint8 in 0..255, got {images.dtype}.")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape:
    raise ValueError(f"{where}: 'images' has shape {images.shape}; it must be [N, H, W] or "
                     f"[N, H, W, C] with C 1 or 3.")
  if labels is not None:
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"{where}: 'labels' ({labels.dtype}, shape {labels.shape}) must be "
                       f"integers, one per image ({len(images)}).")
    if labels.min() < 0:
      raise ValueError(f"{where}: 'labels' holds {labels.min()}; labels must be 0 or more.")
    labels = labels.astype(np.int32)
  return ArraySource(images, labels)


def load_npz(path: str) -> ArraySource:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No .npz file at {path!r}; set data.path to an .npz with an "
                            f"'images' array.")
  try:
    arrays = files.load_npz(path)
  except ValueError as e:
    raise ValueError(f"{e}; save plain uint8 arrays with numpy.savez.") from None
  if "images" not in arrays:
    raise ValueError(f"{path} has no 'images' array (it has {sorted(arrays)}); save the "
                     f"images under the key 'images'.")
  images, labels = arrays["images"], arrays.get("labels")
  return checked_source(images, labels, path)


def load_folder(path: str) -> ArraySource:
  """Every image file under `path`; with sub-folders, their sorted names are the classes."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No image folder at {path!r}; set data.path to a directory of "
                            f"images.")
  files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {path!r}.")
  classes = sorted({os.path.relpath(os.path.dirname(f), path) for f in files})
  images = [read_image(f) for f in files]
  if len({im.shape for im in images}) > 1:
    raise ValueError(f"Images under {path!r} differ in size; resize them to one size first.")
  labels = (np.array([classes.index(os.path.relpath(os.path.dirname(f), path)) for f in files],
                     np.int32) if classes != ["."] else None)
  return checked_source(np.stack(images), labels, path)


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 RGB [H, W, 3]: 16-bit grayscale scaled from 65535 (not clipped),
  palette and bilevel images through their colours, CMYK by PIL's conversion, an alpha channel
  dropped where every pixel is opaque; transparent pixels and other modes (float) are refused
  naming the file."""
  try:
    with Image.open(path) as image:
      image.load()
      return _to_rgb(image, path)
  except Image.DecompressionBombError:  # PIL's limit: more pixels than an image should hold
    raise ValueError(f"Image {path} claims more than {2 * Image.MAX_IMAGE_PIXELS} pixels (a "
                     f"decompression bomb, or an image far too large to train on); replace or "
                     f"remove it.") from None
  except OSError as e:  # PIL: truncated, not an image, unreadable
    raise ValueError(f"Cannot read image {path} ({e}); replace or remove it.") from None


def _to_rgb(image, path: str) -> np.ndarray:
  mode = image.mode
  if mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    mode = image.mode
  if mode in ("RGBA", "LA", "PA"):
    alpha = np.asarray(image.getchannel("A"))
    if alpha.min() < 255:
      raise ValueError(f"Image {path} has transparent pixels ({mode}); flatten it onto a "
                       f"background (e.g. PIL's Image.alpha_composite) or remove it.")
    image = image.convert("RGB")
  elif mode.startswith("I;16") or mode == "I":  # 16-bit grayscale (PNG): 0..65535
    gray = np.round(np.asarray(image, np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, -1)
  elif mode not in ("RGB", "L", "1", "CMYK", "YCbCr"):
    raise ValueError(f"Image {path} is in PIL mode {mode!r}, which is not read; save it as "
                     f"8-bit RGB or grayscale.")
  return np.asarray(image.convert("RGB"))


def open_source(dataset: str, split: str = "train", data_dir: str | None = None,
                path: str | None = None):
  """The random-access source for a dataset name (see the module docstring)."""
  if dataset == "digits":
    return ArraySource(*load_embedded_digits())
  path = path.replace("{split}", split) if path else path
  if dataset == "npz":
    return load_npz(path or "")
  if dataset == "folder":
    return load_folder(path or "")
  if dataset == "pairs":
    return load_pairs(path or "")
  import tensorflow_datasets as tfds  # imported here: only tfds datasets need it
  try:
    return TfdsSource(tfds.data_source(dataset, split=split, data_dir=data_dir,
                                       download=False))
  except Exception as e:  # tfds raises several types for a missing or unknown dataset
    raise FileNotFoundError(
        f"Cannot open tfds dataset {dataset!r} split {split!r} in data_dir={data_dir!r} "
        f"({type(e).__name__}); prepare it there in array_record format (e.g. `tfds build "
        f"{dataset} --file_format=array_record --data_dir=DIR`) and set data.data_dir, or "
        f"use data.dataset='digits'.") from None


def fit(img: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [H, W, C] (or [H, W]) → [S, S, C]: center crop to a square, bilinear (antialiased)
  resize to S."""
  img = img[..., None] if img.ndim == 2 else img
  h, w = img.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  img = img[top:top + side, left:left + side]
  if side == image_size:
    return img
  pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
  resized = np.asarray(pil.resize((image_size, image_size), Image.BILINEAR))
  return resized[..., None] if resized.ndim == 2 else resized


def fit_all(images, image_size: int, threads: int = 1) -> np.ndarray:
  """`fit` of each image, stacked; PIL releases the GIL while resizing, so threads help."""
  if threads <= 1 or len(images) < 2 * threads:
    return np.stack([fit(img, image_size) for img in images])
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    return np.stack(list(pool.map(functools.partial(fit, image_size=image_size), images,
                                  chunksize=256)))


def at_size(source, image_size: int):
  """An in-memory source with every image cropped and resized to image_size once (in
  threads), so batches need no per-image work; other sources are returned as they are."""
  if not isinstance(source, ArraySource) or source.images.shape[1:3] == (image_size,) * 2:
    return source
  return ArraySource(fit_all(source.images, image_size, os.cpu_count() or 1), source.labels)
