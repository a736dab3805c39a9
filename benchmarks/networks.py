"""The published networks' size and cost, and what model.remat saves, as JSON lines.

  python benchmarks/networks.py                         # every published config
  python benchmarks/networks.py --configs configs/cifar10_edm_ddpmpp.py \
      --memory configs/cifar10_ncsnpp_deep_ve.py --memory_batch 8

Lines:
  {"what": "network", "config", "network", "parameters", "gflop_per_image"}: the forward
    FLOPs of one image counted from the program (ddpm_jax.infra.flops), the same on every
    backend.
  {"what": "memory", "config", "batch", "remat", "temp_mib", "argument_mib", "output_mib",
    "peak_mib"}: compiled.memory_analysis() of the data-parallel training step on this
    backend (XLA's buffer assignment: temp is the activations and scratch the step keeps
    live, peak = temp + arguments + outputs − aliased), with model.remat off and on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.config import build, load, schema
from ddpm_jax.infra import flops, parallel

PUBLISHED = ("cifar10_ddpm", "cifar10_ncsnpp_ve", "cifar10_ncsnpp_deep_ve", "cifar10_ddpmpp_vp",
             "cifar10_ddpmpp_deep_vp", "cifar10_ddpmpp_deep_subvp", "cifar10_edm_ddpmpp",
             "cifar10_edm_ncsnpp", "cifar10_edm_ddpmpp_cond", "imagenet64_edm_adm")
MIB = 2.0**20


def _inputs(config, batch: int):
  size = config.data.image_size
  y = jnp.zeros((batch,), jnp.int32) if config.model.conditional else None
  return jnp.zeros((batch, size, size, 3)), jnp.full((batch,), 0.5), y


def network_row(config, name: str) -> dict:
  model = build.model(config, 3)
  x, t, y = _inputs(config, 1)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, y))["params"]
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return {"what": "network", "config": name, "network": config.model.name,
          "parameters": sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)),
          "gflop_per_image": flops.count(lambda p: model.apply({"params": p}, x, t, y),
                                         params) / 1e9}


def memory_row(config, name: str, batch: int, remat: bool) -> dict:
  config.model.remat = remat
  config.training.batch_size = batch
  mesh = parallel.make_mesh()
  size = config.data.image_size
  model = build.model(config, 3)
  state = build.train_state(config, model, (size, size, 3), abstract=True)
  step = build.train_step(config, model, mesh)
  batch_arrays = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
                  "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}
  m = step.lower(state, batch_arrays).compile().memory_analysis()
  peak = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes)
  return {"what": "memory", "config": name, "batch": batch, "remat": remat,
          "devices": mesh.size, "platform": jax.devices()[0].platform,
          "temp_mib": m.temp_size_in_bytes / MIB, "argument_mib": m.argument_size_in_bytes / MIB,
          "output_mib": m.output_size_in_bytes / MIB, "peak_mib": peak / MIB}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--configs", nargs="*", default=[f"configs/{n}.py" for n in PUBLISHED])
  p.add_argument("--memory", default="", help="a config whose training step's memory to "
                 "measure with and without model.remat")
  p.add_argument("--memory_batch", type=int, default=8)
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
  args = p.parse_args()
  for path in args.configs:
    config = load.load(path)
    load.override(config, args.set)
    schema.check(config)
    print(json.dumps(network_row(config, os.path.basename(path))), flush=True)
  if args.memory:
    for remat in (False, True):
      config = load.load(args.memory)
      load.override(config, args.set)
      print(json.dumps(memory_row(config, os.path.basename(args.memory), args.memory_batch,
                                  remat)), flush=True)


if __name__ == "__main__":
  main()
