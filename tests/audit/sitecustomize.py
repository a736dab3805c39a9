"""Records, in the file $DDPM_JAX_AUDIT_LOG, every file this Python process opens for writing
(or renames into place) under $DDPM_JAX_AUDIT_ROOT: a `sys.addaudithook` hook, loaded at
start-up from PYTHONPATH by tests/multiprocess.py."""

import json
import os
import sys

_ROOT = os.environ.get("DDPM_JAX_AUDIT_ROOT")
_LOG = os.environ.get("DDPM_JAX_AUDIT_LOG")


def _record(path, mode):
  with open(_LOG, "a") as f:  # outside the root: not recorded itself
    f.write(json.dumps({"path": path, "mode": mode}) + "\n")


def _hook(event, args):
  if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
    path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
    writing = (mode and any(c in mode for c in "wax+")) or (
        mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
  elif event in ("os.rename", "os.replace"):
    path, mode, writing = os.fsdecode(args[1]), event, True
  else:
    return
  if writing and os.path.abspath(path).startswith(_ROOT + os.sep):
    _record(os.path.relpath(os.path.abspath(path), _ROOT), mode or "os.open")


if _ROOT and _LOG:
  sys.addaudithook(_hook)
