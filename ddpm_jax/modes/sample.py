"""`--mode sample`: load the latest checkpoint and write samples as a PNG grid and an .npz."""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from etils import epath

from ddpm_jax.infra import files, images, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs


# The fields this mode reads besides those its sampler's build reads (config/reads.py).
READS = ("sampling.seed", "sampling.num_samples", "sampling.batch_size", "sampling.use_ema")


def sample_from_checkpoint(config, workdir: str, overrides=None) -> tuple[str, str]:
  """Samples config.sampling.num_samples images in batches of sampling.batch_size with the
  configured sampler (EMA weights unless sampling.use_ema is False) to
  WORKDIR/samples/<runs.results_name>.png and .npz. Each batch is kept on disk until those are
  written, so a killed run resumes at its first missing batch with the same result (batch i
  uses key fold_in(seed, i·batch_size)). Returns (png, npz)."""
  run, params, step = runs.load_run(config, workdir, "sample", overrides, READS)
  s, sample_fn = config.sampling, run.plan.sample_fn
  key = jax.random.key(s.seed)
  stem = os.path.join(run.workdir, "samples", runs.results_name(config, run.plan.reads, step, params)[0])
  num_chunks, start, made = -(-s.num_samples // s.batch_size), time.time(), [0]

  def make(i):
    x, nfe = sample_fn(params, jax.random.fold_in(key, i * s.batch_size), s.batch_size,
                       first_index=i * s.batch_size)
    done = min((i + 1) * s.batch_size, s.num_samples)
    made[0] += s.batch_size  # by this run (a resumed run reads the earlier batches)
    rate = made[0] / max(time.time() - start, 1e-9)
    log(f"sampled {done}/{s.num_samples} ({rate:.1f} img/s, {nfe:.0f} evaluations each, "
        f"ETA {(s.num_samples - done) / rate:.0f}s)")
    return {"images": images.to_uint8(parallel.to_host(x))}
  chunk_dir = stem + "_chunks"
  chunks = runs.resumable_chunks(chunk_dir, num_chunks, make)
  samples = np.concatenate([c["images"] for c in chunks])[:s.num_samples]
  png, npz = stem + ".png", stem + ".npz"
  if parallel.is_main_process():
    images.save_png(png, images.make_grid(samples[:256] / 127.5 - 1.0,
                                          scale=max(1, 64 // run.shape[0])))
    files.save_npz(npz, images=samples)
    epath.Path(chunk_dir).rmtree()  # the .npz holds them all now
  log(f"{s.num_samples} samples -> {png}, {npz}")
  return png, npz
