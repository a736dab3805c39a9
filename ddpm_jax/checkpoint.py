"""Orbax checkpoints of the TrainState: atomic saves, keep-last-K, and a resume that falls back
to the previous checkpoint when the latest cannot be read.

The data position needs no entry of its own: batches are a pure function of (seed, step).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from ddpm_jax import files


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored, or one could not be written."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint holds another model's arrays (a different config)."""


def make_manager(directory: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """A manager writing step folders under `directory`; a step becomes visible only once
  completely written (orbax writes to a temporary folder and renames it)."""
  return ocp.CheckpointManager(
      epath.Path(files.resolve(directory)), item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(manager: ocp.CheckpointManager, state, *, wait: bool = True) -> int:
  """Saves the state at its step (a no-op if that step is already saved)."""
  step = int(jax.device_get(state.step))
  try:
    if step not in manager.all_steps():
      manager.save(step, args=ocp.args.StandardSave(_written(serialization.to_state_dict(state))),
                   force=True)
    if wait:
      manager.wait_until_finished()
  except OSError as e:  # a full disk, a read-only or vanished directory
    raise CheckpointError(
        f"Cannot write checkpoint step {step} to {manager.directory} ({e.strerror or e}); "
        f"free space or fix the permissions. The previous checkpoint (step "
        f"{manager.latest_step()}) is intact; the run resumes from it.") from None
  return step


def _written(state_dict: dict) -> dict:
  """The entries of a state dict that are saved: optional fields that are None (e.g. the loss
  history of importance-sampled timesteps, when off) are left out, so checkpoints written
  before such a field existed restore unchanged."""
  return {k: v for k, v in state_dict.items() if v is not None}


def restore_latest(manager: ocp.CheckpointManager, template):
  """Restores the newest readable checkpoint into `template`'s structure, or returns None
  when there is none. A step that fails to load is reported and the previous one tried."""
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      return restore(manager, step, template)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      logging.warning("Checkpoint step %d in %s cannot be read (%s: %s); trying the previous "
                      "one.", step, manager.directory, type(e).__name__, str(e).splitlines()[0])
  if steps:
    raise CheckpointError(f"None of the checkpoints {steps} in {manager.directory} can be read; "
                          f"move them aside to start afresh.")
  return None


def restore(manager: ocp.CheckpointManager, step: int, template):
  """Checkpoint `step` restored into `template`'s structure (raises if it cannot be read)."""
  target = serialization.to_state_dict(template)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _written(target))
  problems = mismatches(manager.item_metadata(step).tree, abstract)
  if problems:
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    raise CheckpointMismatchError(
        f"Checkpoint step {step} in {manager.directory} was written by a different model "
        f"config ({'; '.join(problems[:4])}{more}); run with the config it was trained with "
        f"(its config.json) or a new --workdir.")
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  return serialization.from_state_dict(template, {**target, **restored})


def mismatches(saved, wanted) -> list[str]:
  """'path: checkpoint (shape) vs config (shape)' for every array whose shape differs, and
  the arrays that only one of the two trees holds."""
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.shape(leaf)
            for path, leaf in leaves}  # np.shape reads ArrayMetadata.shape and scalars alike
  saved, wanted = shapes(saved), shapes(wanted)
  return ([f"{k}: checkpoint {saved[k]} vs config {wanted[k]}"
           for k in sorted(saved.keys() & wanted.keys()) if saved[k] != wanted[k]]
          + [f"{k}: not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
          + [f"{k}: not in the config" for k in sorted(saved.keys() - wanted.keys())])
