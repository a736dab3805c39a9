"""Post-hoc EMA snapshots: the TrainState's power-function EMAs saved every
training.phema_every steps (and at the end) as WORKDIR/phema_snapshots/<step>/, each written
atomically with the CRC-32 of every array and its σ_rels (orbax, like the checkpoints; all
kept), and the EMA of any length reconstructed from them (training/power_ema.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from ddpm_jax.training import checkpoint, power_ema

FOLDER = "phema_snapshots"


def make_manager(workdir: str) -> ocp.CheckpointManager:
  return checkpoint.make_manager(os.path.join(workdir, FOLDER), max_to_keep=None)


def save(manager: ocp.CheckpointManager, state, sigma_rels) -> int:
  """Writes the state's power-function EMAs at its step (a no-op if that step is saved)."""
  step = int(jax.device_get(state.step))
  checkpoint.save_tree(manager, step, {"ema": state.phema_params},
                       sigma_rels=[float(s) for s in sigma_rels])
  return step


def forget_after(manager: ocp.CheckpointManager, step: int) -> list[int]:
  """Deletes the snapshots newer than `step` (a resumed run trains those steps afresh and
  writes them again); returns their steps."""
  newer = sorted(s for s in manager.all_steps() if s > step)
  for s in newer:
    manager.delete(s)
  if newer:
    logging.warning("Post-hoc EMA snapshots %s are newer than the checkpoint resumed from "
                    "(step %d); deleted, they are written again as training redoes them.",
                    newer, step)
  return newer


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """How an EMA was reconstructed: the target, the snapshots used with each profile's weight
  (weights[i, j]: snapshot steps[i], profile sigma_rels[j]) and the relative L2 distance of
  the reconstructed profile from the target's."""
  sigma_rel: float
  step: int
  steps: tuple[int, ...]
  sigma_rels: tuple[float, ...]
  weights: np.ndarray
  profile_error: float

  def to_json(self) -> dict:
    return {"sigma_rel": self.sigma_rel,
            "gamma": float(power_ema.sigma_rel_to_gamma(self.sigma_rel)),
            "step": self.step, "profile_error": self.profile_error,
            "snapshots": [{"step": s, "weights": dict(zip(map(str, self.sigma_rels),
                                                          map(float, w)))}
                          for s, w in zip(self.steps, self.weights)]}


def plan(manager: ocp.CheckpointManager, sigma_rels, sigma_rel: float, step: int = 0
         ) -> Reconstruction:
  """The weights of the snapshots up to `step` (0: the newest) whose sum is the EMA of length
  `sigma_rel` at that step; checks that every snapshot holds the profiles `sigma_rels`."""
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"No post-hoc EMA snapshots in {manager.directory}; train with "
                            f"training.phema_sigma_rels set (e.g. (0.05, 0.10)) first.")
  step = step or steps[-1]
  if step not in steps:
    raise ValueError(f"phema.step={step} is not a snapshot's step; the snapshots in "
                     f"{manager.directory} are at steps {_ranges(steps)}.")
  steps = [s for s in steps if s <= step]
  sigma_rels = tuple(float(s) for s in sigma_rels)
  for s in steps:
    saved = (manager.metadata(s).custom_metadata or {}).get("sigma_rels")
    if saved is None or tuple(saved) != sigma_rels:
      raise ValueError(f"Snapshot step {s} in {manager.directory} holds the EMA lengths "
                       f"{saved}, not training.phema_sigma_rels={sigma_rels}; run with the "
                       f"config that trained it.")
  gammas = power_ema.sigma_rel_to_gamma(sigma_rels)
  all_steps = np.repeat(steps, len(gammas))
  all_gammas = np.tile(gammas, len(steps))
  target = float(power_ema.sigma_rel_to_gamma(sigma_rel))
  x = power_ema.coefficients(all_steps, all_gammas, step, target)
  return Reconstruction(float(sigma_rel), step, tuple(steps), sigma_rels,
                        x.reshape(len(steps), len(gammas)),
                        power_ema.profile_error(all_steps, all_gammas, x, step, target))


def reconstruct(manager: ocp.CheckpointManager, params_template, recon: Reconstruction):
  """Σ_i Σ_j weights[i, j] θ̂_{i,j} over the snapshots of `recon`, summed in float64 one
  snapshot at a time (each verified against its checksums), cast to the template's dtypes."""
  template = {"ema": tuple(params_template for _ in recon.sigma_rels)}
  total = None
  for step, weights in zip(recon.steps, recon.weights):
    try:
      ema = checkpoint.restore(manager, step, template)["ema"]
    except checkpoint.CheckpointMismatchError as e:
      raise checkpoint.CheckpointMismatchError(str(e).replace("Checkpoint", "Snapshot", 1)) \
          from None
    except Exception as e:  # noqa: BLE001 (orbax raises many types for a damaged folder)
      raise checkpoint.CheckpointError(
          f"Post-hoc EMA snapshot step {step} in {manager.directory} cannot be read "
          f"({type(e).__name__}: {str(e).splitlines()[0]}); reconstruct at an earlier "
          f"phema.step or move the damaged folder away.") from None
    part = jax.tree.map(lambda *leaves: sum(w * np.asarray(v, np.float64)
                                            for w, v in zip(weights, leaves)), *ema)
    total = part if total is None else jax.tree.map(np.add, total, part)
  return jax.tree.map(lambda v, t: v.astype(t.dtype), total, params_template)


def _ranges(steps) -> str:
  return (", ".join(map(str, steps)) if len(steps) <= 6
          else f"{', '.join(map(str, steps[:3]))}, …, {', '.join(map(str, steps[-2:]))}")
