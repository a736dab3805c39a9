"""`--mode edit`: SDEdit (Meng et al. 2022) and inpainting of given images with any sampler.

Each image of edit.input is noised to t₀ = edit.t_start·T of the model's process and denoised
by the configured sampler from there (guidance as configured); with edit.mask, the pixels
where the mask is 1 are kept (inpainting: core/denoiser.py) — from the prior when
edit.t_start is 1, so that only the kept pixels inform the rest. Writes
WORKDIR/edits/<name>.png (rows of inputs, the kept pixels where masked, above their edits)
and .npz (images, inputs, mask), resumable per batch as --mode sample is.
"""

from __future__ import annotations

import hashlib
import os
import time

import jax
import numpy as np
from etils import epath

from ddpm_jax.infra import files, images, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs

GRID_COLUMNS = 8


# The fields this mode reads besides those its sampler's build reads (config/reads.py).
READS = ("edit", "sampling.seed", "sampling.batch_size", "sampling.use_ema")


def edit_images(config, workdir: str, overrides=None) -> tuple[str, str]:
  """Edits every image of edit.input in batches of sampling.batch_size; returns (png, npz)."""
  run, params, step = runs.load_run(config, workdir, "edit", overrides, READS)
  inputs, s, b = run.plan.edit, config.sampling, config.sampling.batch_size
  digest = hashlib.sha256(inputs.images.tobytes() + (
      b"" if inputs.mask is None else inputs.mask.tobytes())).hexdigest()[:12]
  stem = os.path.join(run.workdir, "edits", runs.results_name(
      config, run.plan.reads, step, params, inputs=digest, t_start=config.edit.t_start)[0])
  n, key, start = len(inputs.images), jax.random.key(s.seed), time.time()
  from_prior = inputs.mask is not None and config.edit.t_start == 1.0

  def make(i):
    idx = np.minimum(np.arange(i * b, (i + 1) * b), n - 1)  # the last batch padded
    x = inputs.images[idx]
    known = None if inputs.mask is None else (x, inputs.mask[idx])
    labels = None if inputs.labels is None else inputs.labels[idx]
    out, nfe = run.plan.sample_fn(params, jax.random.fold_in(key, i * b), b, first_index=i * b,
                                  x=None if from_prior else x, known=known, labels=labels)
    done = min((i + 1) * b, n)
    log(f"edited {done}/{n} ({done / (time.time() - start):.1f} img/s, {nfe:.0f} "
        f"evaluations each)")
    return {"images": images.to_uint8(parallel.to_host(out))}
  chunk_dir = stem + "_chunks"
  chunks = runs.resumable_chunks(chunk_dir, -(-n // b), make)
  edited = np.concatenate([c["images"] for c in chunks])[:n]
  png, npz = stem + ".png", stem + ".npz"
  if parallel.is_main_process():
    shown = inputs.images if inputs.mask is None else inputs.images * inputs.mask
    images.save_png(png, images.make_grid(_pairs(shown, edited / 127.5 - 1.0), GRID_COLUMNS,
                                          scale=max(1, 64 // run.shape[0])))
    arrays = {"images": edited, "inputs": images.to_uint8(inputs.images)}
    if inputs.mask is not None:
      arrays["mask"] = inputs.mask
    files.save_npz(npz, **arrays)
    epath.Path(chunk_dir).rmtree()
  log(f"{n} edits -> {png}, {npz}")
  return png, npz


def _pairs(inputs, edited, limit: int = 64) -> np.ndarray:
  """Rows of GRID_COLUMNS inputs, each above the row of their edits (the first `limit`)."""
  rows = []
  for i in range(0, min(len(inputs), limit), GRID_COLUMNS):
    top, bottom = inputs[i:i + GRID_COLUMNS], edited[i:i + GRID_COLUMNS]
    pad = GRID_COLUMNS - len(top)
    blank = np.zeros((pad,) + top.shape[1:], np.float32)
    rows += [np.concatenate([top, blank]), np.concatenate([bottom, blank])]
  return np.concatenate(rows)
