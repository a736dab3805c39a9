"""`--mode bpd`: bits/dim of a dataset split under the latest checkpoint.

Discrete DDPM models report the variational bound (objectives/ddpm.py vlb_bpd: Σ_t L_t + L_prior over all
T steps); score-based models ("dsm", "edm") the exact NLL by the probability-flow ODE on
uniformly dequantized data (samplers/likelihood.py); config/build.py `bpd` builds either. The
result, with its standard error, goes to WORKDIR/bpd_<split>_<ema|raw>_step<N>.json.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from ddpm_jax.data import batches
from ddpm_jax.infra import files, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs


# The fields this mode reads besides those its build reads (config/reads.py).
READS = ("eval.split", "eval.num_examples", "eval.seed", "eval.batch_size", "data.image_size",
         "sampling.use_ema")


def evaluate_bpd(config, workdir: str, overrides=None) -> dict:
  """Bits/dim over config.eval.split (config.eval.num_examples, 0 = all) in batches of
  config.eval.batch_size, data-parallel; EMA weights unless sampling.use_ema is False."""
  e = config.eval
  run = runs.start_run(config, workdir, "bpd", overrides, READS)
  bpd_fn, source = run.plan.bpd_fn, run.plan.source
  params, step = runs.restore_params(config, run)
  total = len(source) if e.num_examples <= 0 else min(e.num_examples, len(source))
  key = jax.random.key(e.seed)
  values, start = [], time.time()
  for i, first in enumerate(range(0, total - e.batch_size + 1, e.batch_size)):
    idx = np.arange(first, first + e.batch_size)[parallel.local_rows(e.batch_size)]
    images, _ = source.get(idx)  # this process's rows of the batch
    x = batches.preprocess(images, config.data.image_size, np.zeros(len(idx), bool))
    x = parallel.shard_batch(x, run.mesh)
    values.append(parallel.to_host(bpd_fn(params, jax.random.fold_in(key, i), x)))
    done = first + e.batch_size
    rate = done / (time.time() - start)
    log(f"bpd {done}/{total}: running mean {np.concatenate(values).mean():.4f} | "
        f"{rate:.1f} img/s | ETA {(total - done) / rate:.0f}s")
  if not values:
    raise ValueError(f"eval.batch_size={e.batch_size} exceeds the {total} examples; lower it.")
  v = np.concatenate(values)
  result = {"bpd": float(v.mean()), "stderr": float(v.std() / np.sqrt(len(v))),
            "num_examples": int(len(v)), "split": e.split, "step": step,
            "use_ema": config.sampling.use_ema, "objective": config.training.objective,
            "method": "vlb" if config.training.objective == "ddpm" else f"pf_ode_{e.divergence}",
            "seconds": time.time() - start}
  weights = "ema" if config.sampling.use_ema else "raw"
  path = os.path.join(run.workdir, f"bpd_{e.split}_{weights}_step{step}.json")
  if parallel.is_main_process():
    files.save_json(path, result)
  log(f"bits/dim {result['bpd']:.4f} ± {result['stderr']:.4f} -> {path}")
  return result
