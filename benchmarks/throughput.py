"""Training and sampling throughput of the U-Net on whatever devices exist, as JSON lines.

  python benchmarks/throughput.py --config configs/cifar10_ddpm.py --batch 128 --steps 20

Each line: {"what": "train"|"sample", "config", "devices", "platform", "batch", "dtype",
"img_per_sec", "step_ms", "tflops_per_step" (XLA cost analysis), "mfu" (if the peak is known)}.
Timing starts after compilation and one warm-up call and blocks on the result.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax import builders, parallel  # noqa: E402

PEAK_TFLOPS = {"bfloat16": {"H100": 989.0, "H200": 989.0}, "float32": {"H100": 67.0, "H200": 67.0}}


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _mfu(tflops_per_sec: float, dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_TFLOPS.get(dtype, {}).items() if k in kind), None)
  return None if peak is None else tflops_per_sec / (peak * jax.device_count())


def _image_shape(config):
  size = config.data.image_size
  return (size, size, 1 if config.data.dataset in ("digits", "mnist", "fashion_mnist") else 3)


def bench_train(config, steps: int) -> dict:
  mesh = parallel.make_mesh()
  bs = config.training.batch_size
  shape = _image_shape(config)
  model = builders.build_model(config, shape[-1])
  state = parallel.replicate(builders.init_state(config, model, shape), mesh)
  step = builders.make_step(config, model, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({"image": rng.uniform(-1, 1, (bs,) + shape).astype(np.float32),
                                "label": np.zeros(bs, np.int32)}, mesh)
  compiled = step.lower(state, batch).compile()
  flops = _flops(compiled)
  state, m = step(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - start) / steps
  return {"what": "train", "img_per_sec": bs / dt, "step_ms": 1e3 * dt, "batch": bs,
          "tflops_per_step": flops / 1e12, "mfu": _mfu(flops / dt / 1e12, config.model.dtype)}


def bench_sample(config) -> dict:
  """DDIM with config.sampling.num_steps steps, one batch of sampling.batch_size."""
  mesh = parallel.make_mesh()
  bs = config.sampling.batch_size
  shape = _image_shape(config)
  model = builders.build_model(config, shape[-1])
  params = builders.init_state(config, model, shape).params
  sample_fn = builders.make_sampler(config, model, shape, mesh)
  jax.block_until_ready(sample_fn(params, jax.random.key(0), bs)[0])
  start = time.perf_counter()
  jax.block_until_ready(sample_fn(params, jax.random.key(1), bs)[0])
  dt = time.perf_counter() - start
  return {"what": "sample", "sampler": f"ddim{config.sampling.num_steps}", "img_per_sec": bs / dt,
          "batch": bs, "seconds": dt}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--config", default="configs/cifar10_ddpm.py")
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--dtype", default=None, choices=(None, "float32", "bfloat16"))
  p.add_argument("--sample_steps", type=int, default=0, help="also time DDIM with this many steps")
  args = p.parse_args()
  config = load_config(args.config)
  if args.batch:
    config.training.batch_size = config.sampling.batch_size = args.batch
  if args.dtype:
    config.model.dtype = args.dtype
  if args.sample_steps:
    config.sampling.method, config.sampling.num_steps = "ddim", args.sample_steps
  builders.validate(config)
  info = {"config": os.path.basename(args.config), "devices": jax.device_count(),
          "platform": jax.devices()[0].device_kind, "dtype": config.model.dtype}
  print(json.dumps({**info, **bench_train(config, args.steps)}), flush=True)
  if args.sample_steps:
    print(json.dumps({**info, **bench_sample(config)}), flush=True)


if __name__ == "__main__":
  main()
