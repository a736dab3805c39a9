"""Atomic writes: a temporary file in the same folder, then os.replace, so a crash or a
SIGTERM never leaves a half-written result where a finished one is expected."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp"):
  """Yields a temporary path beside `path`; moves it onto `path` only if the block succeeds.
  `suffix` keeps the extension writers infer the format from (".tmp.png", ".tmp.npz")."""
  tmp = path + suffix
  yield tmp
  os.replace(tmp, path)


def save_npz(path: str, *, compressed: bool = False, **arrays) -> str:
  with atomic_path(path, ".tmp.npz") as tmp:
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
  return path


def save_json(path: str, obj) -> str:
  text = json.dumps(obj, indent=2)  # serialize first: a bad value raises before any write
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    f.write(text)
  return path
