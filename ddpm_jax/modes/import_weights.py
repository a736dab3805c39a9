"""`--mode import --import_from=FORMAT:PATH`: published weights (interop/) as this run's
checkpoint, so that --mode sample, eval and bpd, and further training, run on them as on a
model trained here.

The config gate runs first, then the source is read and checked against the network the
config builds (a mismatch is one line naming the field or tensor); only then is the workdir
touched: a workdir that already holds checkpoints is refused, and the import is written as
step 0 (the weights as both the parameters and the EMA parameters, a fresh optimizer state)
with checksums, beside config.json and imported.json (the source and each file's sha256).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ddpm_jax.config import build, validate, weights
from ddpm_jax.infra import files, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs
from ddpm_jax.training import checkpoint


# The fields a format's reader reads besides the network's (the config gate's record).
READS = {"adm": ("model.use_new_attention_order",)}


def import_weights(config, workdir: str, overrides=None, *, source: str) -> str:
  """Writes the weights of `source` ('diffusers:FOLDER', 'score_sde:FILE', 'edm:FILE',
  'adm:FILE', 'ncsnv2:FILE') as WORKDIR's step-0 checkpoint; returns the checkpoint folder."""
  fmt, _ = weights.parse_source(source)
  plan = validate.validate(config, "import", overrides, mode_reads=READS.get(fmt, ()))
  params = weights.import_params(config, source, plan.shape[-1])
  provenance = {"source": source, "files": weights.source_digest(source)}
  run = runs.Run(runs.prepare_workdir(workdir), plan)
  with runs.one_writer(run.workdir):
    _write(config, run, params, provenance, source)
  return run.checkpoint_dir


def _write(config, run, params, provenance: dict, source: str) -> None:
  plan = run.plan
  manager = checkpoint.make_manager(run.checkpoint_dir)
  if manager.all_steps():
    raise ValueError(f"{run.checkpoint_dir} already holds checkpoints (steps "
                     f"{sorted(manager.all_steps())}); import into a new --workdir (nothing was "
                     f"changed).")
  state = build.train_state(config, plan.model, plan.shape)
  imported = jax.tree.map(lambda t, p: np.asarray(p, t.dtype), state.params, params)
  state = state.replace(params=imported, ema_params=jax.tree.map(np.copy, imported))
  # The record first, the checkpoint last (it appears whole or not at all): an import cut
  # short leaves no checkpoint, and the same command run again completes it.
  if parallel.is_main_process():
    files.save_text(os.path.join(run.workdir, "config.json"),
                    config.to_json_best_effort(indent=2))
    files.save_json(os.path.join(run.workdir, "imported.json"),
                    {**provenance, "digest": checkpoint.digest(imported)})
  checkpoint.save(manager, state)
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(imported))
  log(f"Imported {n / 1e6:.2f}M parameters from {source} as step 0 in {run.checkpoint_dir}")
