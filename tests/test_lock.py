"""One writer per workdir (infra/lock.py): a second writer is refused naming the holder, a
lock its holder left behind is reclaimed, whatever the reason it was left."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from ddpm_jax.infra import lock


def _lock_file(workdir, **holder):
  me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
        "heartbeat": time.time(), "command": "train", "token": "x", **holder}
  (workdir / lock.NAME).write_text(json.dumps(me))


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_a_second_writer_is_refused_naming_the_holder_until_the_first_releases(tmp_path):
  first = lock.WorkdirLock(str(tmp_path), "python -m ddpm_jax.main --mode=train")
  with first:
    holder = json.loads((tmp_path / lock.NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(lock.WorkdirLocked) as refused:
      lock.WorkdirLock(str(tmp_path)).acquire()
    message = str(refused.value)
    assert "\n" not in message and f"pid {os.getpid()} on host" in message
    assert "--mode=train" in message and "use another --workdir" in message
  assert not (tmp_path / lock.NAME).exists()
  with lock.WorkdirLock(str(tmp_path)):  # free again
    pass


@pytest.mark.parametrize("why", ["dead_pid", "reused_pid", "other_host_silent", "unreadable"])
def test_a_stale_lock_is_reclaimed_with_a_warning(why, tmp_path, caplog):
  if why == "dead_pid":
    _lock_file(tmp_path, pid=_dead_pid())
  elif why == "reused_pid":  # our own pid, but the process that took it started at another time
    _lock_file(tmp_path, started="1")
  elif why == "other_host_silent":
    _lock_file(tmp_path, host="elsewhere", heartbeat=time.time() - 2 * lock.STALE_AFTER)
  else:
    (tmp_path / lock.NAME).write_text("{not json")
    old = time.time() - 2 * lock.STALE_AFTER
    os.utime(tmp_path / lock.NAME, (old, old))
  with caplog.at_level(logging.WARNING):
    with lock.WorkdirLock(str(tmp_path)) as held:
      assert json.loads((tmp_path / lock.NAME).read_text())["token"] == held.me["token"]
  assert any("Reclaimed the stale lock" in r.getMessage() for r in caplog.records)
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("holder", [{"host": "elsewhere"}, {}])
def test_a_live_holder_is_respected(holder, tmp_path):
  """Another host's lock with a fresh heartbeat, and a live process on this host (us)."""
  _lock_file(tmp_path, **holder)
  with pytest.raises(lock.WorkdirLocked, match="is being written by another run"):
    lock.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads((tmp_path / lock.NAME).read_text())["token"] == "x"  # untouched


@pytest.mark.parametrize("text", ["PID", "DEAD", "", "  \n", "[1, 2]", '{"pid": "x"}'])
def test_another_tools_lock_file_is_read_as_a_pid_or_as_unreadable(text, tmp_path):
  """A bare pid (another tool's pid file) is that process on this host: refused while it runs,
  reclaimed once it is gone; an empty or foreign file is refused in words while fresh, never
  an AttributeError or "pid None"."""
  text = text.replace("PID", str(os.getpid())).replace("DEAD", str(_dead_pid()))
  (tmp_path / lock.NAME).write_text(text)
  if text == str(os.getpid()):
    with pytest.raises(lock.WorkdirLocked, match=f"pid {os.getpid()} on host"):
      lock.WorkdirLock(str(tmp_path)).acquire()
  elif text.strip().isdigit():
    with lock.WorkdirLock(str(tmp_path)):  # a dead pid: reclaimed
      pass
  else:
    with pytest.raises(lock.WorkdirLocked) as refused:
      lock.WorkdirLock(str(tmp_path)).acquire()
    assert "an unreadable lock file (empty, cut short, or another tool's)" in str(refused.value)
    assert "None" not in str(refused.value)


def test_the_heartbeat_is_renewed_and_a_reclaimed_lock_is_not_fought_over(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setattr(lock, "HEARTBEAT", 0.05)
  held = lock.WorkdirLock(str(tmp_path))
  held.acquire()
  first = json.loads((tmp_path / lock.NAME).read_text())["heartbeat"]
  time.sleep(0.5)
  assert json.loads((tmp_path / lock.NAME).read_text())["heartbeat"] > first
  _lock_file(tmp_path, token="someone else")  # taken over meanwhile
  time.sleep(0.3)
  held.release()
  assert json.loads((tmp_path / lock.NAME).read_text())["token"] == "someone else"
