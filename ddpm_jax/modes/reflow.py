"""`--mode reflow` (Liu et al. 2023): (noise, sample) pairs (z, ODE(z)) of a trained flow model,
drawn by its deterministic sampler into a resumable folder of chunks, which trains the next
rectification (data.dataset 'pairs', data.path that folder: the coupling is kept), and how
straight the model's flow is on them:

  straightness  S = E_t ‖(z − x) − v(x_t, t)‖² per dimension, x_t = α x + σ z, t ~ U[0, 1)
                (objectives/flow.py; 0 when every trajectory is straight),
  one_step      the RMS distance per dimension of one Euler step z − v(z, 1) from ODE(z).

Both are written beside the chunks (pairs.json) and logged; run the mode on the next
rectification's workdir for its figures after reflow.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.config import build, sampler
from ddpm_jax.infra import files, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs
from ddpm_jax.objectives import flow
from ddpm_jax.samplers import table

# The fields this mode reads besides those its sampler's build reads (config/reads.py).
READS = ("sampling.seed", "sampling.batch_size", "sampling.use_ema", "reflow.num_pairs")


def draw_pairs(config, workdir: str, overrides=None) -> str:
  """Draws reflow.num_pairs pairs in chunks of sampling.batch_size (pair j's noise from key
  fold_in(seed, j), whatever the batch size: a killed run resumes at its first missing chunk
  with the same pairs) to WORKDIR/reflow/<runs.results_name>/chunk_*.npz and their measures
  to pairs.json there. Returns the folder."""
  run, params, step = runs.load_run(config, workdir, "reflow", overrides, READS)
  s, total = config.sampling, config.reflow.num_pairs
  name, _ = runs.results_name(config, run.plan.reads, step, params, num_pairs=total)
  directory = os.path.join(run.workdir, "reflow", name)
  measure = _measures(config, run.plan.model, run.mesh)
  key, start = jax.random.key(s.seed), time.time()
  measure_key = jax.random.split(key)[1]  # a stream apart from the pairs' fold_in(key, j)
  noise = jax.jit(jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), run.shape)))

  def make(i):
    first = i * s.batch_size
    index = np.arange(first, first + s.batch_size)
    z = np.asarray(noise(index), np.float32)  # pair j's noise from its own key fold_in(seed, j)
    x, nfe = run.plan.sample_fn(params, None, s.batch_size, first_index=first, x=z)
    x = np.asarray(parallel.to_host(x), np.float32)
    labels = index % (build.num_classes(config) or 1)
    straight, one_step = (parallel.to_host(v) for v in measure(
        params, jax.random.fold_in(measure_key, i), x, z, labels))
    count = min(s.batch_size, total - first)
    log(f"pairs {first + count}/{total} ({(first + count) / (time.time() - start):.1f}/s, "
        f"{nfe:.0f} evaluations each)")
    chunk = {"image": x, "noise": z, "straightness": np.asarray(straight),
             "one_step": np.asarray(one_step)}
    if build.num_classes(config):
      chunk["label"] = labels.astype(np.int32)
    return {k: v[:count] for k, v in chunk.items()}

  chunks = runs.resumable_chunks(directory, -(-total // s.batch_size), make)
  report = {"num_pairs": total, "step": step, "checkpoint_workdir": run.workdir}
  for k in ("straightness", "one_step"):
    values = np.concatenate([c[k] for c in chunks]).astype(np.float64)
    mean, stderr = values.mean(), values.std() / np.sqrt(len(values))
    if k == "one_step":  # the RMS and its standard error (delta method)
      mean, stderr = np.sqrt(mean), stderr / (2 * np.sqrt(mean))
    report[k], report[f"{k}_stderr"] = float(mean), float(stderr)
  if parallel.is_main_process():
    files.save_json(os.path.join(directory, "pairs.json"), report)
  log(f"{total} pairs -> {directory}: straightness {report['straightness']:.4g} ± "
      f"{report['straightness_stderr']:.2g}, one Euler step {report['one_step']:.4g} RMS from "
      f"the ODE's end. Train the next rectification with --config.data.dataset=pairs "
      f"--config.data.path={directory}")
  return directory


def _measures(config, net_module, mesh):
  """fn(params, key, x, z, labels) -> (straightness [B], squared one-step error per dimension
  [B]), data-parallel and compiled once, of the velocity the sampler drew the pairs with
  (clipped and guided as it is), at each pair's label."""
  make = sampler.make_denoiser(config, net_module, table.get(config.sampling.method).clips)
  path = build.process(config)

  def device(params, batched):
    keys, x, z, labels = batched
    model = make(params)
    if build.num_classes(config):
      model = model.bind(labels)
    straight = flow.straightness(model.velocity, path, x, z, keys)
    jump = z - model.velocity(z, jnp.ones(x.shape[:1], z.dtype))
    return straight, jnp.mean((jump - x)**2, axis=tuple(range(1, x.ndim)))

  program = parallel.data_parallel(device, mesh)
  return lambda params, key, x, z, labels: program(
      params, (jax.random.split(key, x.shape[0]), x, z, labels))
