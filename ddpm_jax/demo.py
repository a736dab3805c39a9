"""Demo: sample the closed-form denoiser of the embedded digits and write a PNG grid.

The model is the exact E[ε | x_t] of the data distribution Σ_i δ(x − x_i) smoothed by a small
Gaussian (analytic.mixture_eps_model), so no training is needed; DDIM or DDPM sampling then
draws digits that lie near the dataset's images.

  python -m ddpm_jax.demo --out demo_samples.png
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from ddpm_jax import analytic, data, images, parallel, schedules
from ddpm_jax.samplers import ddim, ddpm


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="demo_samples.png", help="PNG grid to write")
  parser.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
  parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
  parser.add_argument("--num", type=int, default=64, help="number of samples")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  train_images, _ = data.load_embedded_digits()
  sched = schedules.make_schedule(schedules.beta_schedule("linear", 1000))
  model = analytic.mixture_eps_model(sched, train_images, stds=0.05)
  mesh = parallel.make_mesh()
  num = -(-args.num // mesh.size) * mesh.size
  start = time.time()
  key = jax.random.key(args.seed)
  shape = (num,) + train_images.shape[1:]
  if args.sampler == "ddim":
    samples = ddim.ddim_sample(model, sched, key, shape, num_steps=args.steps, mesh=mesh)
  else:
    samples = ddpm.ddpm_sample(model, sched, key, shape, mesh=mesh)
  samples = np.asarray(samples)[:args.num]
  path = images.save_grid(args.out, samples, scale=4)
  print(f"{args.num} samples ({args.sampler}) in {time.time() - start:.1f}s on {mesh.size} "
        f"device(s) -> {path}")
  return path


if __name__ == "__main__":
  main()
