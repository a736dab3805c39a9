"""Launching `python -m ddpm_jax.main` as several local processes of one JAX run on the CPU
backend (gloo collectives, the coordinator on 127.0.0.1 at a free port), each with its own
fake CPU devices; every process's writes under the workdir are recorded (a Python audit hook
installed by tests/audit/sitecustomize.py)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
AUDIT = pathlib.Path(__file__).resolve().parent / "audit"


GRACE = 30  # seconds the other processes get to exit after one fails, before they are killed


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, *args, processes: int = 2, devices: int = 2, timeout: float = 600,
           logs=None, from_env: bool = False, kill_at: str | None = None) -> list[list[dict]]:
  """Runs the CLI with `args` as `processes` processes of `devices` CPU devices each and waits
  for all; on a failure or timeout kills every process and fails with each one's stderr.
  The coordinator, process count and index are flags, or with `from_env` the environment
  variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. With `kill_at` (a
  path substring) process 0 SIGKILLs itself as it first writes such a path under the
  workdir, the others are then killed, and that is the expected outcome. Returns each
  process's recorded writes under `workdir` ({"path", "mode"} dicts)."""
  logs = pathlib.Path(logs or f"{workdir}_logs")
  logs.mkdir(parents=True, exist_ok=True)
  port = free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
         "PYTHONPATH": os.pathsep.join([str(AUDIT), str(ROOT)]),
         "DDPM_JAX_AUDIT_ROOT": str(workdir),
         # XLA's cheapest compilation, as for the fault tests' children: these runs are a
         # few steps of tiny programs, whose compilation costs more than running them.
         "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  procs = []
  try:
    for i in range(processes):
      cmd = [sys.executable, "-m", "ddpm_jax.main", f"--workdir={workdir}", *args]
      where = {"coordinator_address": f"127.0.0.1:{port}", "num_processes": processes,
               "process_id": i}
      process_env = {**env, "DDPM_JAX_AUDIT_LOG": str(logs / f"{i}.writes")}
      if kill_at and i == 0:
        process_env.update(DDPM_JAX_KILL_ROOT=str(workdir), DDPM_JAX_KILL_AT="1",
                           DDPM_JAX_KILL_MATCH=kill_at)
      if processes > 1:
        cmd.append("--distributed")
        if from_env:
          process_env.update({f"JAX_{k.upper()}": str(v) for k, v in where.items()})
        else:
          cmd += [f"--{k}={v}" for k, v in where.items()]
      out, err = open(logs / f"{i}.out", "w"), open(logs / f"{i}.err", "w")
      (logs / f"{i}.writes").unlink(missing_ok=True)
      procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=process_env,
                                    start_new_session=True))
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      if any(p.poll() not in (None, 0) for p in procs):
        break  # one failed: the others would wait for it forever
      time.sleep(0.5)
    killed = kill_at and procs[0].poll() == -signal.SIGKILL  # as asked; the rest killed below
    if not killed:  # the others may be failing too (the same bad input): let them say so
      grace = min(deadline, time.monotonic() + GRACE)
      while any(p.poll() is None for p in procs) and time.monotonic() < grace:
        time.sleep(0.2)
    codes = [p.poll() for p in procs]
    if codes != [0] * processes and not killed:
      why = "timed out" if time.monotonic() >= deadline else f"exit codes {codes}"
      tails = "\n".join(f"--- process {i} stderr:\n{_tail(logs / f'{i}.err')}"
                        for i in range(processes))
      test = os.environ.get("PYTEST_CURRENT_TEST", "")
      raise AssertionError(f"{test}: {' '.join(args)} {why}\n{tails}")
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  return [_writes(logs / f"{i}.writes") for i in range(processes)]


def _tail(path, lines: int = 30) -> str:
  return "\n".join(pathlib.Path(path).read_text().splitlines()[-lines:])


def _writes(path) -> list[dict]:
  path = pathlib.Path(path)
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
