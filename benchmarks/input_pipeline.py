"""Loader throughput alone (no model): host batches per second from a source, per worker count,
as JSON lines.

  python benchmarks/input_pipeline.py --dataset fashion_mnist \
      --data_dir ../shared/tfds_array_record --image_size 32 --batch 128 --workers 0,1,2
  python benchmarks/input_pipeline.py --dataset synthetic --shape 50000,32,32,3 --batch 512
  python benchmarks/input_pipeline.py --dataset npz --path /tmp/fm/fashion_mnist_train.npz \
      --image_size 32

Each line: {"dataset", "source" (in-memory or per-image), "image_size", "batch", "workers",
"setup_s" (open + resize in memory), "img_per_sec", "batches"}. The first batch (worker
start-up) is not timed. The training loop logs the fraction of time it waits for data
(`data_wait_fraction` in metrics.jsonl) to compare with the step rate on an accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.data import batches, sources  # noqa: E402


def open_source(args):
  if args.dataset == "synthetic":
    shape = tuple(int(v) for v in args.shape.split(","))
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    return sources.ArraySource(images, np.zeros(shape[0], np.int32))
  return sources.open_source(args.dataset, args.split, args.data_dir, args.path)


def measure(args, workers: int) -> dict:
  start = time.perf_counter()
  source = sources.at_size(open_source(args), args.image_size)
  setup = time.perf_counter() - start
  it = batches.iterate_batches(source, 0, num_workers=workers, prefetch=max(2, workers),
                            global_batch=args.batch, image_size=args.image_size, seed=0,
                            random_flip=True)
  try:
    next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    seconds = time.perf_counter() - start
  finally:
    it.close()
  in_memory = isinstance(source, sources.ArraySource)
  return {"dataset": args.dataset, "source": "in-memory" if in_memory else "per-image",
          "image_size": args.image_size, "batch": args.batch,
          "workers": 0 if in_memory else workers, "setup_s": round(setup, 3),
          "img_per_sec": round(args.batch * args.batches / seconds, 1), "batches": args.batches}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--dataset", default="digits")
  p.add_argument("--split", default="train")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--path", default=None)
  p.add_argument("--shape", default="50000,32,32,3", help="synthetic: N,H,W,C")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--batches", type=int, default=50)
  p.add_argument("--workers", default="0", help="comma-separated worker counts")
  args = p.parse_args()
  for workers in (int(w) for w in args.workers.split(",")):
    print(json.dumps(measure(args, workers)), flush=True)


if __name__ == "__main__":
  main()
