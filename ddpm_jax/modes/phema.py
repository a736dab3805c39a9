"""`--mode phema`: the EMA of length phema.sigma_rel at snapshot step phema.step, reconstructed
after training from the post-hoc EMA snapshots (training/snapshots.py), written as a new
workdir that every mode reads: its step-N checkpoint holds the reconstruction as both the
parameters and the EMA parameters (a fresh optimizer state, as an import), beside
config.json and phema.json (the snapshots used, their weights and the profile's fit).

  python -m ddpm_jax.main --config C --workdir RUN --mode phema --config.phema.sigma_rel=0.08
  python -m ddpm_jax.main --config C --workdir RUN/phema/sigma_rel0.08_step200000 --mode eval
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ddpm_jax.config import build, validate
from ddpm_jax.infra import files, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs
from ddpm_jax.training import checkpoint, snapshots


def output_dir(workdir: str, sigma_rel: float, step: int) -> str:
  return os.path.join(workdir, "phema", f"sigma_rel{sigma_rel:g}_step{step}")


PROFILE_ERROR_MAX = 0.1  # ‖p − p_σ‖/‖p_σ‖ of the reconstructed profile (power_ema.profile_error)


def reconstruct_ema(config, workdir: str, overrides=None) -> str:
  """Writes the reconstructed EMA as a workdir (phema.output, default
  WORKDIR/phema/sigma_rel<σ>_step<N>); returns it."""
  plan = validate.validate(config, "phema", overrides, ("phema",))
  rels, p = config.training.phema_sigma_rels, config.phema
  workdir = files.resolve(workdir)
  snapshot_dir = os.path.join(workdir, snapshots.FOLDER)
  if not files.exists(snapshot_dir):
    raise FileNotFoundError(f"No post-hoc EMA snapshots in {snapshot_dir}; train with "
                            f"training.phema_sigma_rels={tuple(rels)} on --workdir first.")
  manager = snapshots.make_manager(workdir)
  recon = snapshots.plan(manager, rels, p.sigma_rel, p.step)
  if recon.profile_error > PROFILE_ERROR_MAX:
    raise ValueError(f"phema.sigma_rel={p.sigma_rel:g} is not what the snapshots of σ_rel "
                     f"{tuple(rels)} can make at step {recon.step}: the closest average's "
                     f"profile is off by {recon.profile_error:.2f} (relative; at most "
                     f"{PROFILE_ERROR_MAX} is taken); choose a σ_rel near those tracked, or "
                     f"track it in training (training.phema_sigma_rels).")
  target = files.resolve(p.output or output_dir(workdir, p.sigma_rel, recon.step))
  existing = os.path.join(target, "checkpoints")
  if files.exists(existing) and checkpoint.make_manager(existing).all_steps():
    raise ValueError(f"{existing} already holds checkpoints; give another phema.output "
                     f"(nothing was changed).")
  log(f"Reconstructing σ_rel={p.sigma_rel:g} at step {recon.step} from {len(recon.steps)} "
      f"snapshots × {len(rels)} profiles (profile error {recon.profile_error:.2e})")
  state = build.train_state(config, plan.model, plan.shape)
  params = snapshots.reconstruct(manager, state.params, recon)  # before anything is written
  out = runs.Run(runs.prepare_workdir(target), plan)
  with runs.one_writer(out.workdir):
    _write(config, out, state, params, recon, snapshot_dir)
  log(f"Wrote the σ_rel={p.sigma_rel:g} EMA as step {recon.step} of {out.workdir}; use it with "
      f"--workdir={out.workdir} in any mode")
  return out.workdir


def _write(config, out: runs.Run, state, params, recon: snapshots.Reconstruction,
           snapshot_dir: str) -> None:
  """The reconstruction as the parameters, EMA and every profile of `out`'s checkpoint at the
  snapshot's step, with config.json and phema.json."""
  copies = lambda: jax.tree.map(np.copy, params)  # noqa: E731
  state = state.replace(step=recon.step, params=params, ema_params=copies(),
                        phema_params=tuple(copies() for _ in recon.sigma_rels))
  checkpoint.save(checkpoint.make_manager(out.checkpoint_dir), state)
  if parallel.is_main_process():
    files.save_text(os.path.join(out.workdir, "config.json"),
                    config.to_json_best_effort(indent=2))
    files.save_json(os.path.join(out.workdir, "phema.json"),
                    {**recon.to_json(), "source": snapshot_dir,
                     "digest": checkpoint.digest(params)})
