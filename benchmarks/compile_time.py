"""The first training step's time with JAX's persistent compilation cache cold and warm, as
JSON lines: each config is trained for `--steps` steps twice in fresh processes (fresh
workdirs) sharing one new cache directory; the first run compiles and fills the cache, the
second loads from it.

  python benchmarks/compile_time.py --configs configs/demo.py,configs/cifar10_ddpm.py \
      [--set data.dataset=digits --set data.image_size=32 --set training.batch_size=8]

Each line: {"config", "run": "cold"|"warm", "first_step_s" (what the run logs as "Step N
compiled and ran in"), "process_s" (the whole command, start-up and exit included),
"cache_files"}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(config: str, workdir: str, cache: str, steps: int, sets) -> tuple[float, float]:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  args = [sys.executable, "-m", "ddpm_jax.main", f"--config={config}", f"--workdir={workdir}",
          f"--config.compilation_cache={cache}", f"--config.training.num_train_steps={steps}",
          f"--config.training.log_every={steps}", f"--config.training.checkpoint_every={steps}",
          "--config.training.sample_every=0", "--config.sampling.num_samples=1",
          *[f"--config.{s}" for s in sets]]
  start = time.perf_counter()
  out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
  took = time.perf_counter() - start
  match = re.search(r"compiled and ran in ([0-9.]+)s", out.stdout)
  return float(match.group(1)), took


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default="configs/demo.py")
  p.add_argument("--steps", type=int, default=1)
  p.add_argument("--set", action="append", default=[], help="a config override a.b=value")
  args = p.parse_args(argv)
  rows = []
  for config in args.configs.split(","):
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "cache")
      for run in ("cold", "warm"):
        first, total = _train(config, os.path.join(tmp, run), cache, args.steps, args.set)
        files = sum(len(f) for _, _, f in os.walk(cache))
        rows.append({"config": config, "run": run, "first_step_s": first, "process_s": total,
                     "cache_files": files, "set": args.set})
        print(json.dumps(rows[-1]), flush=True)
  return rows


if __name__ == "__main__":
  main()
