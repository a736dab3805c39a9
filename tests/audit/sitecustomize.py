"""Audit hooks (`sys.addaudithook`) loaded at start-up from PYTHONPATH by tests that launch
the CLI (tests/multiprocess.py, tests/test_faults.py):

- $DDPM_JAX_AUDIT_ROOT and $DDPM_JAX_AUDIT_LOG: every file this process opens for writing
  (or renames into place) under the root is recorded in the log, one JSON line each.
- $DDPM_JAX_KILL_ROOT and $DDPM_JAX_KILL_AT=N: the process kills itself with SIGKILL at the
  N-th change under the root — a file opened for writing ("open"), a rename ("os.rename"),
  a folder made or removed ("os.mkdir", "os.rmdir", "shutil.rmtree"), a file removed
  ("os.remove") — counting only paths that contain $DDPM_JAX_KILL_MATCH and events named
  $DDPM_JAX_KILL_EVENT where those are set. The count runs across threads (orbax saves on
  its own), so the process dies midway through the write the N-th change belongs to, as a
  machine losing power would. $DDPM_JAX_KILL_SIGNAL (e.g. SIGINT) sends that signal
  instead, at the same moment: an interrupt at an exact point of the run.
"""

import json
import os
import signal
import sys
import threading

_CHANGES = {"os.rename": 1, "os.replace": 1, "os.mkdir": 0, "os.remove": 0, "os.rmdir": 0,
            "shutil.rmtree": 0}  # event -> the argument that is the changed path


def _under(path, root) -> bool:
  return os.path.abspath(os.fsdecode(path)).startswith(root + os.sep)


def _opened_for_writing(args) -> bool:
  mode, flags = args[1], args[2]
  return bool(mode and any(c in mode for c in "wax+")) or (
      mode is None and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))


def _changed_path(event, args):
  """The path an audit event changes (None for events that change nothing)."""
  if event == "open":
    path = args[0] if _opened_for_writing(args) else None
  else:
    path = args[_CHANGES[event]] if event in _CHANGES else None
  return path if isinstance(path, (str, bytes, os.PathLike)) else None


def _audit(root, log):
  def hook(event, args):
    path = _changed_path(event, args) if event in ("open", "os.rename", "os.replace") else None
    if path is not None and _under(path, root):
      with open(log, "a") as f:  # outside the root: not recorded itself
        f.write(json.dumps({"path": os.path.relpath(os.path.abspath(os.fsdecode(path)), root),
                            "mode": (args[1] or "os.open") if event == "open" else event}) + "\n")
  return hook


def _kill(root, at, match, only, signum):
  count, lock = [0], threading.Lock()

  def hook(event, args):
    path = _changed_path(event, args) if not only or event == only else None
    if path is not None and _under(path, root) and match in os.fsdecode(path):
      with lock:
        count[0] += 1
        if count[0] == at:
          os.kill(os.getpid(), signum)
  return hook


if os.environ.get("DDPM_JAX_AUDIT_ROOT") and os.environ.get("DDPM_JAX_AUDIT_LOG"):
  sys.addaudithook(_audit(os.environ["DDPM_JAX_AUDIT_ROOT"], os.environ["DDPM_JAX_AUDIT_LOG"]))
if os.environ.get("DDPM_JAX_KILL_ROOT") and int(os.environ.get("DDPM_JAX_KILL_AT", "0")) > 0:
  sys.addaudithook(_kill(os.environ["DDPM_JAX_KILL_ROOT"], int(os.environ["DDPM_JAX_KILL_AT"]),
                         os.environ.get("DDPM_JAX_KILL_MATCH", ""),
                         os.environ.get("DDPM_JAX_KILL_EVENT", ""),
                         getattr(signal, os.environ.get("DDPM_JAX_KILL_SIGNAL", "SIGKILL"))))
