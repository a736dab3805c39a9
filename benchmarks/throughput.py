"""Training, network-forward and sampling throughput of the U-Net on whatever devices exist,
as JSON lines.

  python benchmarks/throughput.py --config configs/cifar10_ddpm.py --batch 128 --steps 50 \
      [--forward_batch 1024] [--sample_steps 50] [--dtype bfloat16] \
      [--set model.attention=cudnn --set training.steps_per_dispatch=4]

Each line: {"what": "train"|"forward"|"sample", "config", "devices", "platform", "batch",
"dtype", "img_per_sec", "step_ms", "gflop_per_image" (ddpm_jax.infra.flops: counted from the
program, so the same on every backend), "tflops" achieved, "peak_tflops" (dense, per device,
for the dtype; None where unknown) and "mfu" = tflops / (peak × devices)}. Timing starts
after compilation and one warm-up call, runs `steps` calls and blocks on the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.config import build, load, sampler, schema
from ddpm_jax.data import sources
from ddpm_jax.infra import flops, parallel


def _rates(flop_per_image: float, images: int, seconds: float, dtype: str) -> dict:
  peak = flops.peak_tflops(jax.devices()[0].device_kind, dtype)
  tflops = flop_per_image * images / seconds / 1e12
  return {"img_per_sec": images / seconds, "gflop_per_image": flop_per_image / 1e9,
          "tflops": tflops, "peak_tflops": peak,
          "mfu": None if peak is None else tflops / (peak * jax.device_count())}


def _timed(fn, steps: int) -> float:
  """Seconds per call of fn() (which returns arrays) after one warm-up call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def _image_shape(config):
  """The shape the config gate would find, from a one-image stand-in for the data (the
  benchmark feeds random images, so it runs where the dataset is not prepared)."""
  size = config.data.image_size
  channels = 1 if config.data.dataset in sources.GRAYSCALE else 3
  return build.image_shape(config, sources.ArraySource(np.zeros((1, size, size, channels),
                                                                np.uint8)))


def bench_train(config, steps: int) -> dict:
  """One dispatch = training.steps_per_dispatch steps of training.batch_size each."""
  mesh = parallel.make_mesh()
  bs, k = config.training.batch_size, config.training.steps_per_dispatch
  lead = (bs,) if k == 1 else (k, bs)
  shape = _image_shape(config)
  model = build.model(config, shape[-1])
  state = parallel.replicate(build.train_state(config, model, shape), mesh)
  step = build.train_step(config, model, mesh)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch({"image": rng.uniform(-1, 1, lead + shape).astype(np.float32),
                                "label": np.zeros(lead, np.int32)}, mesh, k)
  flop = flops.count(step, state, batch) * mesh.size / (bs * k)  # the count is per device

  def run():
    nonlocal state
    state, metrics = step(state, batch)
    return metrics
  dt = _timed(run, steps) / k
  return {"what": "train", "batch": bs, "steps_per_dispatch": k, "step_ms": 1e3 * dt,
          **_rates(flop, bs, dt, config.model.dtype)}


def bench_forward(config, batch: int, steps: int) -> dict:
  """The network alone (what a sampler step costs) on `batch` images, data-parallel."""
  mesh = parallel.make_mesh()
  shape = _image_shape(config)
  model = build.model(config, shape[-1])
  params = build.train_state(config, model, shape).params
  y = jnp.zeros((batch,), jnp.int32) if config.model.conditional else None
  forward = parallel.data_parallel(
      lambda p, xt: model.apply({"params": p}, xt[0], xt[1], xt[2]), mesh)
  x = jax.random.normal(jax.random.key(0), (batch,) + shape)
  t = jnp.full((batch,), 500.0)
  flop = flops.count(lambda p: model.apply({"params": p}, x, t, y), params) / batch
  dt = _timed(lambda: forward(params, (x, t, y)), steps)
  return {"what": "forward", "batch": batch, "step_ms": 1e3 * dt,
          **_rates(flop, batch, dt, config.model.dtype)}


def bench_sample(config) -> dict:
  """config.sampling.method with its steps, one batch of sampling.batch_size."""
  mesh = parallel.make_mesh()
  bs = config.sampling.batch_size
  shape = _image_shape(config)
  model = build.model(config, shape[-1])
  params = build.train_state(config, model, shape).params
  sample_fn = sampler.make_sampler(config, model, shape, mesh)
  x, t = jnp.zeros((bs,) + shape), jnp.zeros((bs,))
  y = jnp.zeros((bs,), jnp.int32) if config.model.conditional else None
  forward = flops.count(lambda p: model.apply({"params": p}, x, t, y), params) / bs
  _, nfe = sample_fn(params, jax.random.key(0), bs)
  dt = _timed(lambda: sample_fn(params, jax.random.key(1), bs)[0], 1)
  return {"what": "sample", "sampler": f"{config.sampling.method}{config.sampling.num_steps}",
          "batch": bs, "seconds": dt, "nfe": nfe,
          **_rates(forward * nfe, bs, dt, config.model.dtype)}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--config", default="configs/cifar10_ddpm.py")
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--dtype", default=None, choices=(None, "float32", "bfloat16"))
  p.add_argument("--forward_batch", type=int, default=0, help="also time the network forward")
  p.add_argument("--sample_steps", type=int, default=0, help="also time DDIM with this many steps")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="a config override, e.g. model.attention=cudnn (repeatable)")
  args = p.parse_args()
  config = load.load(args.config)
  load.override(config, args.set)
  if args.batch:
    config.training.batch_size = config.sampling.batch_size = args.batch
  if args.dtype:
    config.model.dtype = args.dtype
  if args.sample_steps:
    config.sampling.method, config.sampling.num_steps = "ddim", args.sample_steps
  schema.check(config)
  info = {"config": os.path.basename(args.config), "devices": jax.device_count(),
          "platform": jax.devices()[0].device_kind, "dtype": config.model.dtype,
          "set": args.set, "xla_flags": os.environ.get("XLA_FLAGS", "")}
  print(json.dumps({**info, **bench_train(config, args.steps)}), flush=True)
  if args.forward_batch:
    print(json.dumps({**info, **bench_forward(config, args.forward_batch, args.steps)}),
          flush=True)
  if args.sample_steps:
    print(json.dumps({**info, **bench_sample(config)}), flush=True)


if __name__ == "__main__":
  main()
