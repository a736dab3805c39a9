"""Throughput of the FID Inception-v3 forward (resize to 299×299 + pool3), as JSON lines.

  python benchmarks/inception_speed.py --batch 64 --iters 5 [--weights ../shared/weights/inception_fid.npz]

Without --weights the network runs on zero-initialised parameters: the arithmetic, and so
the speed, is the same. Timing starts after compilation and one warm-up call; each line
blocks on the result. Input is 32×32×3 uint8, as for CIFAR-10 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.evaluation import inception
from ddpm_jax.infra import parallel
from ddpm_jax.modes import evaluate  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--iters", type=int, default=5)
  p.add_argument("--size", type=int, default=32, help="input resolution before the resize")
  p.add_argument("--weights", default="")
  args = p.parse_args()
  mesh = parallel.make_mesh()
  shape = (args.batch, args.size, args.size, 3)
  if args.weights:
    params = inception.load_params(args.weights)
  else:
    params = inception.InceptionV3().init(jax.random.key(0), np.zeros((1, 299, 299, 3)))
  imgs = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  features = evaluate.make_inception_features(params, mesh, args.batch)
  read = lambda rows: imgs[rows]  # noqa: E731
  features(read, len(imgs))  # compile + warm-up
  start = time.perf_counter()
  for _ in range(args.iters):
    feats = features(read, len(imgs))
  dt = (time.perf_counter() - start) / args.iters
  print(json.dumps({"what": "inception_pool3", "devices": jax.device_count(),
                    "platform": jax.devices()[0].device_kind, "batch": args.batch,
                    "input": f"{args.size}x{args.size}x3", "img_per_sec": args.batch / dt,
                    "batch_ms": 1e3 * dt, "finite": bool(np.isfinite(feats).all())}), flush=True)


if __name__ == "__main__":
  main()
