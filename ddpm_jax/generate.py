"""`--mode sample`: load the latest checkpoint and write samples as a PNG grid and an .npz."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from ddpm_jax import builders, files, images, parallel, runs
from ddpm_jax.metrics_writer import log


def sample_from_checkpoint(config, workdir: str) -> tuple[str, str]:
  """Samples config.sampling.num_samples images in batches of sampling.batch_size with the
  configured sampler (EMA weights unless sampling.use_ema is False). Returns (png, npz)."""
  run, params, step = runs.load_run(config, workdir, batch_field="sampling.batch_size")
  s = config.sampling
  sample_fn = builders.make_sampler(config, run.model, run.shape, run.mesh)
  key = jax.random.key(s.seed)
  chunks, start = [], time.time()
  for i in range(0, s.num_samples, s.batch_size):
    x, nfe = sample_fn(params, jax.random.fold_in(key, i), s.batch_size, first_index=i)
    chunks.append(images.to_uint8(parallel.to_host(x)))
    done = min(i + s.batch_size, s.num_samples)
    log(f"sampled {done}/{s.num_samples} ({done / (time.time() - start):.1f} img/s, "
        f"{nfe:.0f} network evaluations each)")
  samples = np.concatenate(chunks)[:s.num_samples]
  stem = os.path.join(run.workdir, "samples",
                      f"{s.method}_{s.num_steps if s.method == 'ddim' else 'full'}_step{step}")
  png, npz = stem + ".png", stem + ".npz"
  if parallel.is_main_process():
    images.save_png(png, images.make_grid(samples[:256] / 127.5 - 1.0,
                                          scale=max(1, 64 // run.shape[0])))
    files.save_npz(npz, images=samples)
  log(f"{s.num_samples} samples -> {png}, {npz}")
  return png, npz
