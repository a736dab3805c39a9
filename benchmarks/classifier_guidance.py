"""The wall time classifier guidance adds per sampling step, as JSON lines: the configured
sampler on the model of --config, unguided and guided by a classifier of --classifier (both
with random weights: the cost does not depend on them), on whatever devices exist.

  python benchmarks/classifier_guidance.py --config configs/demo.py \
      --classifier configs/digits_classifier.py --batch 64 --steps 20 [--repeats 3]

Each line: {"what": "unguided"|"guided", "config", "classifier", "method", "num_steps",
"batch", "devices", "platform", "seconds" (per sampling call, the best of --repeats after a
warm-up call), "ms_per_step", "evaluations_per_sample"}, then {"what": "added", "ms_per_step",
"ratio"}: the guided step's time over the unguided one's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.config import build, load, sampler
from ddpm_jax.data import sources
from ddpm_jax.infra import parallel


def _best(fn, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/demo.py")
  p.add_argument("--classifier", default="configs/digits_classifier.py")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=20, help="sampling.num_steps")
  p.add_argument("--method", default="ddim")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  config, clf = load.load(args.config), load.load(args.classifier)
  config.sampling.method, config.sampling.num_steps = args.method, args.steps
  config.sampling.classifier_scale = 1.0
  src = sources.at_size(build.source(config), config.data.image_size)
  shape, mesh = build.image_shape(config, src), parallel.make_mesh()
  net, classifier = build.model(config, shape[-1]), build.model(clf, shape[-1])
  params = parallel.replicate(build.train_state(config, net, shape).params, mesh)
  clf_params = parallel.replicate(build.train_state(clf, classifier, shape).params, mesh)
  rows, key = [], jax.random.key(0)
  base = {"config": args.config, "classifier": args.classifier, "method": args.method,
          "num_steps": args.steps, "batch": args.batch, "devices": jax.device_count(),
          "platform": jax.devices()[0].platform}
  for what, module, arguments in (("unguided", None, params),
                                  ("guided", classifier, (params, clf_params))):
    sample_fn = sampler.make_sampler(config, net, shape, mesh, module)
    nfe = sampler.nfe_per_sample(config, module is not None)
    seconds = _best(lambda: sample_fn(arguments, key, args.batch)[0], args.repeats)  # noqa: B023
    rows.append({"what": what, **base, "seconds": seconds,
                 "ms_per_step": 1e3 * seconds / args.steps, "evaluations_per_sample": nfe})
  added = rows[1]["ms_per_step"] - rows[0]["ms_per_step"]
  rows.append({"what": "added", **base, "ms_per_step": added,
               "ratio": rows[1]["ms_per_step"] / rows[0]["ms_per_step"]})
  for row in rows:
    print(json.dumps(row), flush=True)
  return rows


if __name__ == "__main__":
  main()
