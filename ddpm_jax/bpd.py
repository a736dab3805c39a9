"""`--mode bpd`: bits/dim of a dataset split under the latest checkpoint.

Discrete DDPM models report the variational bound (losses.vlb_bpd: Σ_t L_t + L_prior over all
T steps); score-based models ("dsm") the exact NLL by the probability-flow ODE on uniformly
dequantized data (likelihood.ode_log_likelihood). The result, with its standard error, goes
to WORKDIR/bpd_<split>_step<N>.json.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import builders, data, files, likelihood, losses, parallel, train
from ddpm_jax.metrics_writer import log


def _vlb_device(replicated, batched, *, mean_type, var_type):
  net, schedule = replicated
  key, x = batched
  total, _, _ = losses.vlb_bpd(net, schedule, x, key[0], mean_type=mean_type, var_type=var_type)
  return total


def evaluate_bpd(config, workdir: str) -> dict:
  """Bits/dim over config.eval.split (config.eval.num_examples, 0 = all) in batches of
  config.eval.batch_size, data-parallel; EMA weights unless sampling.use_ema is False."""
  workdir = train.prepare_workdir(workdir)
  builders.validate(config)
  e = config.eval
  if config.training.objective == "ncsn":
    raise ValueError("NCSN has no likelihood; use training.objective 'ddpm' or 'dsm'.")
  mesh = parallel.make_mesh()
  parallel.check_divisible(e.batch_size, mesh, "eval.batch_size")
  source, shape, model, state = builders.load_trained(config, workdir, e.split)
  net = builders.make_model_fn(model, state.ema_params if config.sampling.use_ema else state.params)
  total = len(source) if e.num_examples <= 0 else min(e.num_examples, len(source))
  key = jax.random.key(e.seed)
  values, start = [], time.time()
  for i, first in enumerate(range(0, total - e.batch_size + 1, e.batch_size)):
    idx = np.arange(first, first + e.batch_size)
    images, _ = source.get(idx)
    x = jnp.asarray(data.preprocess(images, config.data.image_size, np.zeros(len(idx), bool)))
    k = jax.random.fold_in(key, i)
    if config.training.objective == "ddpm":
      fn = functools.partial(_vlb_device, mean_type=config.model.mean_type,
                             var_type=config.model.var_type)
      keys = jnp.broadcast_to(k, (x.shape[0],))  # one noise stream per shard, as vlb_bpd draws
      bpd = parallel.run_batched(fn, (net, builders.build_schedule(config)), (keys, x), mesh)
    else:
      deq_key, probe_key = jax.random.split(k)
      logp, _ = likelihood.ode_log_likelihood(
          builders.score_fn_of(config, net), builders.build_sde(config),
          likelihood.dequantize(deq_key, x), probe_key, method=e.divergence,
          rtol=e.rtol, atol=e.atol, mesh=mesh)
      bpd = likelihood.bits_per_dim(logp, int(np.prod(shape)))
    values.append(np.asarray(bpd))
    done = first + e.batch_size
    rate = done / (time.time() - start)
    log(f"bpd {done}/{total}: running mean {np.concatenate(values).mean():.4f} | "
        f"{rate:.1f} img/s | ETA {(total - done) / rate:.0f}s")
  if not values:
    raise ValueError(f"eval.batch_size={e.batch_size} exceeds the {total} examples; lower it.")
  v = np.concatenate(values)
  result = {"bpd": float(v.mean()), "stderr": float(v.std() / np.sqrt(len(v))),
            "num_examples": int(len(v)), "split": e.split, "step": int(state.step),
            "objective": config.training.objective,
            "method": "vlb" if config.training.objective == "ddpm" else f"pf_ode_{e.divergence}",
            "seconds": time.time() - start}
  path = os.path.join(workdir, f"bpd_{e.split}_step{int(state.step)}.json")
  files.save_json(path, result)
  log(f"bits/dim {result['bpd']:.4f} ± {result['stderr']:.4f} -> {path}")
  return result
