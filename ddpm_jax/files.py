"""Atomic writes: a temporary file in the same folder, then os.replace, so a crash or a
SIGTERM never leaves a half-written result where a finished one is expected."""

from __future__ import annotations

import json
import os

import numpy as np


def save_npz(path: str, *, compressed: bool = False, **arrays) -> str:
  tmp = path + ".tmp.npz"
  (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
  os.replace(tmp, path)
  return path


def save_json(path: str, obj) -> str:
  text = json.dumps(obj, indent=2)  # serialize first: a bad value raises before any write
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  return path
