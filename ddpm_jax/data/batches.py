"""Host batches of a source (data/sources.py), deterministic in (seed, step).

The batch of global step s is a pure function of (seed, s): epoch e = ⌊s / steps_per_epoch⌋
is a fixed permutation of the examples, so the data position is the training step and resumes
with it. Each host reads only its slice of the global batch.

Speed: in-memory sources are cropped and resized to data.image_size once (`at_size`, in
threads), so a batch is a vectorized gather and flip; sources read per batch (tfds) are
decoded and resized in grain worker processes (`iterate_batches`).
"""

from __future__ import annotations

import functools
import sys
from typing import Iterator

import grain
import numpy as np
from absl import flags

from ddpm_jax.data import sources


def preprocess(images, image_size: int, flips: np.ndarray) -> np.ndarray:
  """uint8 images → float32 [B, S, S, C] in [−1, 1]: center crop to a square, bilinear
  (antialiased) resize to S, horizontal flip where `flips`. `images` is a list of [H, W, C]
  or an array [B, H, W, C]; one already at [B, S, S, C] takes no per-image work."""
  if not (isinstance(images, np.ndarray) and images.shape[1:3] == (image_size,) * 2):
    images = sources.fit_all(images, image_size)
  flips = np.asarray(flips, bool)
  if flips.any():
    images = images.copy()
    images[flips] = images[flips][:, :, ::-1]
  out = np.divide(images, np.float32(127.5), dtype=np.float32)  # one pass, then in place
  out -= np.float32(1.0)
  return out


def batch_indices(num_examples: int, global_batch: int, step: int, seed: int) -> np.ndarray:
  """The example indices of global batch `step`: slice of epoch ⌊step / steps_per_epoch⌋'s
  permutation (the last partial batch of each epoch is dropped)."""
  steps_per_epoch = num_examples // global_batch
  if steps_per_epoch == 0:
    raise ValueError(f"The dataset has {num_examples} examples, fewer than the batch size "
                     f"{global_batch}; lower training.batch_size.")
  epoch, i = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return perm[i * global_batch:(i + 1) * global_batch]


def get_batch(source, step: int, *, global_batch: int, image_size: int, seed: int,
              random_flip: bool = False, process_index: int = 0,
              process_count: int = 1) -> dict[str, np.ndarray]:
  """This host's part of global batch `step`: {"image": [b, S, S, C] float32 in [−1, 1],
  "label": [b] int32 (zeros for unlabeled data)}, and from reflow's pairs (a PairSource, not
  flipped) "noise": the images' own [b, S, S, C]."""
  idx = batch_indices(len(source), global_batch, step, seed)
  per_host = global_batch // process_count
  idx = idx[process_index * per_host:(process_index + 1) * per_host]
  images, labels = source.get(idx)
  labels = np.zeros(len(idx), np.int32) if labels is None else np.asarray(labels, np.int32)
  if isinstance(source, sources.PairSource):
    return {"image": images, "label": labels, "noise": source.noise[idx]}
  flips = (np.random.default_rng([seed, step, 1]).random(global_batch) < 0.5
           if random_flip else np.zeros(global_batch, bool))
  flips = flips[process_index * per_host:(process_index + 1) * per_host]
  return {"image": preprocess(images, image_size, flips), "label": labels}


def iterate_batches(source, start_step: int, *, num_workers: int = 0, prefetch: int = 2,
                    steps_per_item: int = 1, **batch_kwargs) -> Iterator[dict[str, np.ndarray]]:
  """`get_batch` for steps start_step, start_step + 1, … read ahead by grain: `num_workers`
  processes (0: a thread) each making whole batches, delivered in step order. In-memory
  sources (a gather per batch) always use the thread. With steps_per_item = k each item
  stacks k consecutive batches on a leading axis."""
  ds = grain.MapDataset.range(start_step, sys.maxsize).map(
      functools.partial(get_batch, source, **batch_kwargs))
  if steps_per_item > 1:
    ds = ds.batch(steps_per_item)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))
  if num_workers > 0 and not isinstance(source, (sources.ArraySource, sources.PairSource)):
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults suffice)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=prefetch))
  iterator = iter(it)
  try:
    yield from iterator
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
