"""Orbax checkpoints of the TrainState: atomic saves, keep-last-K, and a resume that falls back
to the previous checkpoint when the latest cannot be read.

The data position needs no entry of its own: batches are a pure function of (seed, step).
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from ddpm_jax import files


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored."""


def make_manager(directory: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """A manager writing step folders under `directory`; a step becomes visible only once
  completely written (orbax writes to a temporary folder and renames it)."""
  return ocp.CheckpointManager(
      epath.Path(files.resolve(directory)), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(manager: ocp.CheckpointManager, state, *, wait: bool = True) -> int:
  """Saves the state at its step (a no-op if that step is already saved)."""
  step = int(jax.device_get(state.step))
  if step not in manager.all_steps():
    manager.save(step, args=ocp.args.StandardSave(_written(serialization.to_state_dict(state))),
                 force=True)
  if wait:
    manager.wait_until_finished()
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
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  return serialization.from_state_dict(template, {**target, **restored})
