"""One writer per workdir: WORKDIR/.lock, created exclusively (O_CREAT | O_EXCL) by the run
that writes the workdir and removed when it ends, on any exit that Python sees.

The file names its holder: host, pid, the process's start time (so a reused pid is not taken
for the holder) and a heartbeat that a daemon thread renews every HEARTBEAT seconds. A second
writer is refused in one line naming the holder. A lock left by a run that died without
removing it (kill -9, a lost machine) is stale, and is reclaimed with a warning:
  - on the same host, when its pid no longer runs the process that took it;
  - from another host (or on a URI workdir, gs://…, where no pid can be checked), when its
    heartbeat is older than STALE_AFTER seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from etils import epath

from ddpm_jax.infra import files

NAME = ".lock"
HEARTBEAT = 30.0      # seconds between renewals of the heartbeat
STALE_AFTER = 300.0   # a heartbeat this old (seconds) from a holder we cannot check is stale


class WorkdirLocked(RuntimeError):
  """Another live run holds the workdir's lock."""


def _process_start(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None
  where /proc does not say (another OS, no such process)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _running(pid: int, started: str | None) -> bool:
  """Whether `pid` runs on this host and, where its start time is known, is the same process."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    pass
  return started is None or _process_start(pid) in (None, started)


def describe(holder: dict) -> str:
  """Who holds the lock, in words: its pid and host, and since when and running what where
  the file says."""
  if "pid" not in holder:
    return "an unreadable lock file (empty, cut short, or another tool's)"
  out = f"pid {holder['pid']} on host {holder.get('host')!r}"
  if "since" in holder:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
    out += f" (since {since}: {holder.get('command', '?')})"
  return out


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir's lock for the block (WorkdirLocked if a
  live run holds it)."""

  def __init__(self, workdir: str, command: str = ""):
    self.path = epath.Path(workdir) / NAME
    self.local = not files.is_uri(workdir)
    self.me = {"host": socket.gethostname(), "pid": os.getpid(),
               "started": _process_start(os.getpid()), "since": time.time(),
               "command": command[:300], "token": uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread = None

  def _write(self, exclusive: bool) -> None:
    text = json.dumps({**self.me, "heartbeat": time.time()})
    if exclusive and self.local:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      with os.fdopen(fd, "w") as f:
        f.write(text)
    elif exclusive and self.path.exists():  # object stores: no exclusive create
      raise FileExistsError(str(self.path))
    else:
      with files.atomic_open(str(self.path), "w") as f:
        f.write(text)

  def holder(self) -> dict | None:
    """The lock file's holder, None for no file, {} for one that cannot be read; a bare pid
    (another tool's pid file, in a local workdir) is that pid on this host."""
    try:
      value = json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}
    if isinstance(value, dict) and isinstance(value.get("pid", 0), int):
      return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0 and self.local:
      return {"pid": value, "host": self.me["host"]}
    return {}

  def _stale(self, holder: dict) -> bool:
    if holder.get("host") == self.me["host"] and self.local and "pid" in holder:
      return not _running(int(holder["pid"]), holder.get("started"))
    beat = holder.get("heartbeat")
    if beat is None:  # unreadable or half-written: stale once the file itself is old
      try:
        beat = os.path.getmtime(self.path) if self.local else time.time()
      except OSError:
        return True
    return time.time() - beat > STALE_AFTER

  def acquire(self) -> None:
    for attempt in range(5):
      try:
        self._write(exclusive=True)
        break
      except FileExistsError:
        holder = self.holder()
        if holder is None:
          continue  # removed meanwhile: try again
        if holder == {} and attempt < 4 and not self._stale(holder):
          time.sleep(0.2)  # being written by its holder this instant: read it again
          continue
        if not self._stale(holder):
          raise WorkdirLocked(
              f"{self.path.parent} is being written by another run, {describe(holder)}; wait "
              f"for it to finish or stop it, or use another --workdir (if that run is gone "
              f"for good, delete {self.path}).") from None
        self._reclaim(holder)
    else:
      raise WorkdirLocked(f"Could not take {self.path}: other runs keep taking it; use one "
                          f"run per --workdir.")
    self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
    self._thread.start()

  def _reclaim(self, holder: dict) -> None:
    """Moves a stale lock aside (one reclaimer wins the rename) and deletes it."""
    aside = self.path.parent / f"{NAME}.stale.{self.me['token']}"
    try:
      self.path.rename(aside)
    except FileNotFoundError:
      return  # another run reclaimed it first
    aside.unlink(missing_ok=True)
    logging.warning("Reclaimed the stale lock of %s in %s: that run is no longer running.",
                    describe(holder) if holder else "an unreadable lock file", self.path.parent)

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT):
      if (self.holder() or {}).get("token") != self.me["token"]:
        return  # reclaimed by another run (our process was taken for dead): do not fight
      try:
        self._write(exclusive=False)
      except OSError:
        pass  # a full or vanished disk: the run itself will say so

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    if (self.holder() or {}).get("token") == self.me["token"]:
      self.path.unlink(missing_ok=True)

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
