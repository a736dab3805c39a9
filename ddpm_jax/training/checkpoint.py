"""Orbax checkpoints of the TrainState: atomic saves, keep-last-K, a CRC-32 of every array
verified on restore, and a resume that falls back to the previous checkpoint when the newest
cannot be read — setting the unreadable one aside (renamed, kept) when training will write
that step again.

A checkpoint holds one host copy of the (replicated) state, written by process 0; the
checksums are of exactly the bytes written. The data position needs no entry of its own:
batches are a pure function of (seed, step).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import zlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from ddpm_jax.infra import files, parallel

ASIDE = "unreadable_checkpoints"  # beside the checkpoints folder: steps that could not be read
# What orbax writes in a step folder (its metadata; the item's folder, as older versions did)
ORBAX_FILES = ("_CHECKPOINT_METADATA", "default")
RELISTS = 3  # listings of the checkpoints a reader tries while another run deletes them


class CheckpointError(RuntimeError):
  """No checkpoint in the directory could be restored, or one could not be written."""


class CheckpointMismatchError(CheckpointError):
  """The checkpoint holds another model's arrays (a different config)."""


class DiskFullError(CheckpointError):
  """The checkpoint folder's disk has no room for a save."""


class ChecksumError(CheckpointError):
  """An array read from a checkpoint differs from the one written."""


def make_manager(directory: str, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
  """A manager writing step folders under `directory` (keeping the newest `max_to_keep`, or
  all for None); a step becomes visible only once completely written (orbax writes to a
  temporary folder and renames it)."""
  if max_to_keep is not None and max_to_keep < 1:
    raise ValueError(f"keep_checkpoints={max_to_keep} would delete every checkpoint; keep at "
                     f"least 1.")
  return ocp.CheckpointManager(
      epath.Path(files.resolve(directory)), item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(manager: ocp.CheckpointManager, state, *, wait: bool = True) -> int:
  """Saves the state at its step with the CRC-32 of every array (a no-op if that step is
  already saved: restore_latest(set_aside=True) leaves only readable steps above the one it
  restored)."""
  step = int(jax.device_get(state.step))
  save_tree(manager, step, state, wait=wait)
  return step


def save_tree(manager: ocp.CheckpointManager, step: int, tree, *, wait: bool = True,
              **metadata) -> None:
  """Saves a tree of arrays (its flax state dict) as `step` with the CRC-32 of every array and
  `metadata` (JSON values) beside it; a no-op if that step is already saved. A disk without
  room for it is refused before writing (DiskFullError); a write that fails anyway leaves no
  temporary folder behind."""
  try:
    if step not in manager.all_steps():
      arrays = jax.tree.map(host_copy, _written(serialization.to_state_dict(tree)))
      _check_space(manager, step, arrays)
      manager.save(step, args=ocp.args.StandardSave(arrays), force=True,
                   custom_metadata={"crc32": checksums(arrays), **metadata})
    if wait:
      manager.wait_until_finished()
  except (OSError, ValueError, RuntimeError) as e:  # orbax: ValueError(RESOURCE_EXHAUSTED …)
    if isinstance(e, CheckpointError):
      raise
    _remove_temporary(manager)
    text = str(e.strerror if isinstance(e, OSError) and e.strerror else e).splitlines()[0]
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in text:
      raise DiskFullError(_disk_full(manager, step, None)) from None
    if not isinstance(e, OSError) and "RESOURCE_EXHAUSTED" not in text:
      raise  # not a failed write: a bug, shown as one
    raise CheckpointError(
        f"Cannot write checkpoint step {step} to {manager.directory} ({text}); "
        f"free space or fix the permissions. The previous checkpoint (step "
        f"{manager.latest_step()}) is intact; the run resumes from it.") from None


SPACE_SLACK = 128 << 10  # bytes a save writes besides the arrays (metadata, manifests: ~40 KiB)


def _check_space(manager: ocp.CheckpointManager, step: int, arrays) -> None:
  """DiskFullError when the (local) checkpoint folder's disk has less room than the arrays."""
  if files.is_uri(str(manager.directory)):
    return
  need = sum(np.asarray(a).nbytes for a in jax.tree.leaves(arrays)) + SPACE_SLACK
  if shutil.disk_usage(manager.directory).free < need:
    raise DiskFullError(_disk_full(manager, step, need))


def _disk_full(manager: ocp.CheckpointManager, step: int, need: int | None) -> str:
  free = shutil.disk_usage(manager.directory).free if not files.is_uri(
      str(manager.directory)) else None
  needs = f" needs {need / 2**20:.1f} MiB," if need else ""
  has = f" {free / 2**20:.1f} MiB free" if free is not None else ""
  last = manager.latest_step()
  kept = ("there is no checkpoint yet" if last is None else
          f"the previous checkpoint (step {last}) is intact and the run resumes from it")
  return (f"disk full: checkpoint step {step} in {manager.directory}{needs}{has}; free space "
          f"(or lower training.keep_checkpoints) and run the same command: {kept}.")


def _remove_temporary(manager: ocp.CheckpointManager) -> None:
  """Deletes the temporary folders of a save that failed (orbax's *.orbax-checkpoint-tmp*)."""
  if not parallel.is_main_process():
    return
  for tmp in epath.Path(manager.directory).glob("*.orbax-checkpoint-tmp*"):
    try:
      tmp.rmtree()
    except OSError:
      logging.warning("Could not remove the failed save's temporary folder %s.", tmp)


def host_copy(x) -> np.ndarray:
  """One whole copy of an array on this process, without communication: the state is
  replicated, so any device's copy is all of it (a sharded array must be fully addressable)."""
  if isinstance(x, jax.Array) and x.is_fully_replicated:
    x = x.addressable_data(0)
  return np.asarray(x)


def checksums(arrays) -> dict[str, int]:
  """{'params/…/kernel': CRC-32 of the array's bytes} of a tree of numpy arrays."""
  return {_key(path): zlib.crc32(np.ascontiguousarray(a).view(np.uint8))
          for path, a in jax.tree_util.tree_flatten_with_path(arrays)[0]}


def digest(tree) -> str:
  """A short hex digest of every array of `tree` (paths, shapes, dtypes and bytes)."""
  arrays = jax.tree.map(host_copy, tree)
  text = repr(sorted((k, np.shape(a), str(np.asarray(a).dtype), c) for (k, c), a in
                     zip(checksums(arrays).items(), jax.tree.leaves(arrays), strict=True)))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _key(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _written(state_dict: dict) -> dict:
  """The entries of a state dict that are saved: optional fields that are None (e.g. the loss
  history of importance-sampled timesteps, when off) are left out, so checkpoints written
  before such a field existed restore unchanged."""
  return {k: v for k, v in state_dict.items() if v is not None}


def restore_latest(manager: ocp.CheckpointManager, template, *, set_aside: bool = False):
  """Restores the newest readable checkpoint into `template`'s structure (numpy leaves), or
  returns None when there is none. A step that cannot be read, or whose arrays fail their
  checksums, is reported and the previous one tried; with `set_aside` (training, which will
  write those steps again) the unreadable steps newer than the one restored are then moved to
  ../unreadable_checkpoints/ for inspection. When no step can be read nothing is moved. A
  checkpoint of another config raises CheckpointMismatchError at once. A step deleted while
  it was read (a trainer keeping few checkpoints, beside a sampler) is not damage: the
  checkpoints are listed again and the newest read (at most RELISTS times)."""
  for _ in range(RELISTS):
    try:
      return _restore_newest(manager, template, set_aside)
    except _Vanished:
      manager.reload()
  raise CheckpointError(f"The checkpoints in {manager.directory} were deleted while being read, "
                        f"{RELISTS} times: another run is pruning them (training.keep_checkpoints);"
                        f" read them when it has stopped, or keep more.")


CLOSED_LOOP = ("loop is closed", "base_events.py", "_check_closed")  # the noise, in pieces
LOG_RECORD = re.compile(r"^(?:[IWEF]\d{4} |WARNING|ERROR|INFO|CRITICAL)")


@contextlib.contextmanager
def _without_closed_loop_noise(drain: float = 0.5):
  """Runs a restore with stderr (fd 2) captured, then writes back what it printed, less the
  tracebacks of "RuntimeError: Event loop is closed": a read of a damaged checkpoint fails
  with tensorstore reads still pending, whose callbacks land on orbax's event loop after it
  closed and print those, interleaved character by character, from tensorstore's threads.
  Where that noise is in the capture only its log records are written back. After a failure
  the pending reads get `drain` seconds to finish inside the capture."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except Exception:
      gc.collect()
      time.sleep(drain)
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode(errors="replace")
      if any(p in text for p in CLOSED_LOOP):
        text = "".join(line for line in text.splitlines(keepends=True) if LOG_RECORD.match(line))
      if text:
        sys.stderr.write(text)


class _Vanished(Exception):
  """A checkpoint step's folder was removed while it was being read."""


def _restore_newest(manager: ocp.CheckpointManager, template, set_aside: bool):
  steps = sorted(manager.all_steps(), reverse=True)
  unreadable = []
  for step in steps:
    try:
      with _without_closed_loop_noise():
        state, error = restore(manager, step, template), None
    except CheckpointMismatchError:
      raise
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      if not (manager.directory / str(step)).exists():
        raise _Vanished(step) from None
      state, error = None, f"{type(e).__name__}: {str(e).splitlines()[0]}"
    if not parallel.agree(error is None):  # process 0's verdict, on every process
      logging.warning("Checkpoint step %d in %s cannot be read (%s); trying the previous one.",
                      step, manager.directory, error)
      unreadable.append(step)
      continue
    if state is None:
      raise CheckpointError(f"Checkpoint step {step} in {manager.directory} could not be read "
                            f"on process {jax.process_index()} ({error}).")
    if set_aside and unreadable:
      aside = [_set_aside(manager, str(s)) for s in unreadable]
      logging.warning("Moved the unreadable checkpoints %s to %s (kept for inspection); steps "
                      "from %d on are trained and saved afresh.", unreadable,
                      ", ".join(aside), step)
    return state
  if steps:
    raise CheckpointError(f"None of the checkpoints {steps} in {manager.directory} can be read "
                          f"(the warnings above say why); nothing was moved or deleted.")
  return None


def set_aside_strays(manager: ocp.CheckpointManager) -> list[str]:
  """Moves each entry of the checkpoints folder that is named like a step but is not an
  orbax checkpoint (a file, or a folder with none of ORBAX_FILES: put there by hand or by
  another tool) to ../unreadable_checkpoints/, with a warning: a save of that step, or the
  removal of old steps, would otherwise delete it without a word. Returns the new paths
  (training calls this before it saves)."""
  if not manager.directory.exists():
    return []
  steps = {str(s) for s in manager.all_steps()}
  strays = sorted(p.name for p in manager.directory.iterdir() if p.name.isdigit() and (
      p.name not in steps or not any((p / f).exists() for f in ORBAX_FILES)))
  moved = [_set_aside(manager, name) for name in strays]
  if moved:
    logging.warning("Named like checkpoint steps but not checkpoints: %s in %s; moved to %s "
                    "(kept), so that saving those steps does not delete them.",
                    ", ".join(strays), manager.directory, ", ".join(moved))
  return moved


def _set_aside(manager: ocp.CheckpointManager, name: str) -> str:
  """Moves the entry `name` (a step's folder) to ../unreadable_checkpoints/<name>[.n]
  (process 0) and makes every process's manager forget it; returns the new path."""
  aside = manager.directory.parent / ASIDE
  target = aside / name
  n = 1
  while target.exists():
    target, n = aside / f"{name}.{n}", n + 1
  if parallel.is_main_process():
    aside.mkdir(parents=True, exist_ok=True)
    (manager.directory / name).rename(target)
  parallel.agree(True)  # the move is done before any process re-reads the folder
  manager.reload()
  return str(target)


def restore(manager: ocp.CheckpointManager, step: int, template):
  """Checkpoint `step` restored into `template`'s structure and dtypes with numpy leaves
  (raises if it cannot be read, ChecksumError if an array differs from the one written)."""
  state_dict = serialization.to_state_dict(template)
  wanted = _written(state_dict)
  saved = manager.item_metadata(step).tree
  problems = mismatches(saved, wanted)
  if problems:
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    raise CheckpointMismatchError(
        f"Checkpoint step {step} in {manager.directory} is intact but was written by a "
        f"different model config: {'; '.join(problems[:4])}{more}. Run with the config it was "
        f"trained with (its config.json beside the checkpoints) or a new --workdir.")
  dtypes = {_key(p): m.dtype for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]}
  target = jax.tree_util.tree_map_with_path(  # read as written, so the checksums apply
      lambda p, t: np.empty(np.shape(t), dtypes[_key(p)]), wanted)
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  written = (manager.metadata(step).custom_metadata or {}).get("crc32")
  if written is None:
    logging.warning("Checkpoint step %d in %s has no checksums (written before they were "
                    "added); not verified.", step, manager.directory)
  else:
    bad = sorted(k for k, c in checksums(restored).items() if written.get(k) != c)
    if bad:
      raise ChecksumError(f"{len(bad)} arrays differ from those written ({', '.join(bad[:3])}"
                          f"{', …' if len(bad) > 3 else ''}): the files are damaged")
  restored = jax.tree.map(lambda r, t: np.asarray(r, t.dtype if hasattr(t, "dtype") else
                                                   np.asarray(t).dtype), restored, wanted)
  return serialization.from_state_dict(template, {**state_dict, **restored})


def mismatches(saved, wanted) -> list[str]:
  """'path: checkpoint (shape) vs config (shape)' for every array whose shape differs, and
  the arrays that only one of the two trees holds."""
  def shapes(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key(path): np.shape(leaf)  # np.shape reads ArrayMetadata.shape and scalars alike
            for path, leaf in leaves}
  saved, wanted = shapes(saved), shapes(wanted)
  return ([f"{k}: checkpoint {saved[k]} vs config {wanted[k]}"
           for k in sorted(saved.keys() & wanted.keys()) if saved[k] != wanted[k]]
          + [f"{k}: not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
          + [f"{k}: not in the config" for k in sorted(saved.keys() - wanted.keys())])
