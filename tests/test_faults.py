"""Fault injection through the CLI: a training run killed with SIGKILL at seeded moments —
midway through a checkpoint write, as a step is logged, anywhere from start-up on — and
stopped with SIGTERM and SIGINT, each time rerun with the same command, ends bit for bit
where an uninterrupted run ends; a sample run killed midway resumes from its saved batches
with the same images. The kills inside writes come from tests/audit/sitecustomize.py. (Also
here, as it runs the real process too: a mistyped field is one line on stderr.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from ddpm_jax.config import build, weights
from ddpm_jax.training import checkpoint

pytestmark = [pytest.mark.xdist_group("faults"),  # one xdist worker runs the module fixture
              pytest.mark.slow]

AUDIT = ROOT / "tests" / "audit"
LIMIT = 600  # seconds per child: generous for a loaded 2-core machine (a child takes ~10)
STEPS, EVERY = 16, 2
SETTINGS = {"model.ch_mult": "(1,)", "training.batch_size": 16, "training.log_every": 1,
            "training.num_train_steps": STEPS, "training.checkpoint_every": EVERY,
            "training.keep_checkpoints": 2, "sampling.num_steps": 2,
            "sampling.num_samples": 20, "sampling.batch_size": 8}
# What each mode reads of SETTINGS (the config gate refuses the rest on a command line).
READ = {"train": lambda k: k != "sampling.batch_size",
        "sample": lambda k: not k.startswith("training."),
        "import": lambda k: k.startswith("model.")}
SAVE_CHANGES = 15  # files and folders one orbax save writes, renames or removes (13), plus
#                    removing the oldest step (2)


def _config():
  return tiny_config(**{k: (1,) if k == "model.ch_mult" else v for k, v in SETTINGS.items()})


class Child:
  """`python -m ddpm_jax.main` on a workdir with SETTINGS on one CPU device, output to files
  beside the workdir; `kill=(root, n, match, event)` makes it SIGKILL itself at the n-th
  change under root whose path contains match (of that audit event, if given), or sends it
  `kill_signal` then."""

  def __init__(self, workdir, name, *flags, kill=None, kill_signal="SIGKILL"):
    mode = next((m for m in ("sample", "import") if f"--mode={m}" in flags), "train")
    # XLA's cheapest compilation: the children's programs compile sooner and run briefly.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(AUDIT), str(ROOT)])}
    if kill:
      root, at, match, *event = kill
      env.update(DDPM_JAX_KILL_ROOT=str(root), DDPM_JAX_KILL_AT=str(at),
                 DDPM_JAX_KILL_MATCH=match, DDPM_JAX_KILL_EVENT="".join(event),
                 DDPM_JAX_KILL_SIGNAL=kill_signal)
    self.out, self.err = (workdir.parent / f"{name}.{s}" for s in ("out", "err"))
    self.deadline = time.monotonic() + LIMIT
    with open(self.out, "w") as out, open(self.err, "w") as err:
      self.proc = subprocess.Popen(
          [sys.executable, "-m", "ddpm_jax.main", "--config=configs/demo.py",
           f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in SETTINGS.items()
                                     if READ[mode](k)), *flags],
          cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)

  def fail(self, why: str):
    if self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGKILL)
      self.proc.wait()
    pytest.fail(f"{os.environ.get('PYTEST_CURRENT_TEST')}: {why}; the child's stderr:\n"
                + "\n".join(self.err.read_text().splitlines()[-30:]))

  def wait_for(self, condition, what: str):
    while not condition():
      if self.proc.poll() is not None:
        self.fail(f"exited {self.proc.returncode} before {what}")
      if time.monotonic() > self.deadline:
        self.fail(f"no {what} within {LIMIT}s")
      time.sleep(0.05)

  def finish(self) -> int:
    self.wait_for(lambda: self.proc.poll() is not None, "exit")
    return self.proc.returncode


def _logged(workdir) -> list[int]:
  """The steps of metrics.jsonl's complete rows (a child may be appending one)."""
  path = workdir / "metrics.jsonl"
  rows = path.read_text().splitlines(keepends=True) if path.exists() else []
  return [json.loads(row)["step"] for row in rows if row.endswith("\n")]


def _progress(child) -> list[int]:
  """The steps of the progress lines a child has printed ('step 5/16 (31%) loss …')."""
  return [int(line.split()[1].split("/")[0]) for line in child.out.read_text().splitlines()
          if line.startswith("step ")]


def _one_line(child) -> str:
  err = child.err.read_text().strip()
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  return err


def _state(config, template, workdir, step):
  manager = checkpoint.make_manager(str(workdir / "checkpoints"))
  return jax.device_get(checkpoint.restore(manager, step, template))


@pytest.fixture(scope="module")
def template():
  """A TrainState of the settings' shapes, to restore checkpoints into."""
  config = _config()
  source = build.source(config, None)
  shape = build.image_shape(config, source)
  return build.train_state(config, build.model(config, shape[-1]), shape)


def _check_leftovers(config, template, workdir) -> int:
  """The steps a rerun may resume from restore: the newest `keep_checkpoints` that orbax
  lists in workdir/checkpoints. Anything else there is ignored: a save cut short is an
  unlisted temporary folder, and an older step whose removal was cut short is removed by the
  next save. Returns the newest step."""
  steps = checkpoint.make_manager(str(workdir / "checkpoints")).all_steps()
  for step in sorted(steps)[-config.training.keep_checkpoints:]:
    _state(config, template, workdir, step)
  return max(steps, default=0)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, template):
  """A straight run, and the same run killed (or stopped) at seeded moments and rerun each
  time: (straight workdir, killed workdir, [(how, exit code, last step logged, step resumed
  from, or for a stop signal the step saved)])."""
  config, root = _config(), tmp_path_factory.mktemp("faults")
  straight, work = root / "straight", root / "work"
  assert Child(straight, "straight").finish() == 0
  rng = np.random.default_rng(0)
  plan = ["save"] * 3 + ["step"] + ["removal", "anytime", "SIGTERM", "SIGINT"]
  rng.shuffle(plan)
  # distinct places: the n-th change of the first save after a restart (which every kill
  # plan reaches: a later one may not come before the run ends), the n-th metrics row
  save_at = iter(rng.choice(np.arange(1, SAVE_CHANGES + 1), 3, replace=False))
  step_at = iter(rng.choice(np.arange(1, 3 * EVERY + 1), 1, replace=False))
  record = []
  for i, how in enumerate(plan):
    kill = None
    if how == "save":
      kill = (work / "checkpoints", next(save_at), "")
    elif how == "step":
      kill = (work, next(step_at), "metrics.jsonl")
    elif how == "removal":  # an old step emptied, its folder not yet removed
      kill = (work / "checkpoints", 1, "", "os.rmdir")
    child = Child(work, f"{i}_{how}", kill=kill)
    if how == "anytime":  # imports, restore, compilation, a step or a save
      time.sleep(rng.uniform(0.5, 3.5))
      child.proc.send_signal(signal.SIGKILL)
    elif how in ("SIGTERM", "SIGINT"):
      child.wait_for(lambda: _progress(child), "a progress line")  # noqa: B023
      if how == "SIGTERM":  # a second writer meanwhile, the first held stopped with its lock
        child.proc.send_signal(signal.SIGSTOP)
        try:
          second = Child(work, "second_writer")
          record.append(("second_writer", second.finish(), _one_line(second), child.proc.pid))
          assert child.proc.poll() is None  # the first is alive (stopped) all along
        finally:
          child.proc.send_signal(signal.SIGCONT)
      last = _progress(child)[-1]
      child.proc.send_signal(getattr(signal, how))
      code = child.finish()
      assert f"Received {how}" in child.out.read_text()
      record.append((how, code, last, _check_leftovers(config, template, work)))
      continue
    code = child.finish()
    if code != -signal.SIGKILL:
      child.fail(f"{how} kill {kill}: expected death by SIGKILL, got exit {code}")
    record.append((how, code, max(_logged(work), default=0),
                   _check_leftovers(config, template, work)))
  assert Child(work, "final").finish() == 0
  return straight, work, record


def test_training_killed_six_times_ends_bit_for_bit_like_a_straight_run(killed_run, template):
  straight, work, record = killed_run
  kills = [r for r in record if r[0] != "second_writer" and r[1] == -signal.SIGKILL]
  assert len(kills) == 6
  for how, _, logged, resumed_from in kills:
    assert logged - resumed_from <= EVERY, (how, logged, resumed_from)  # ≤ 1 interval lost
  assert _logged(work) == list(range(1, STEPS + 1))  # rows of redone steps were dropped
  config = _config()
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(
      _state(config, template, straight, STEPS))[0],
                          jax.tree.leaves(_state(config, template, work, STEPS)), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and np.array_equal(a, b), path  # bit for bit


def test_sigterm_and_sigint_save_within_a_step_and_exit_128_plus_the_signal(killed_run):
  """143 and 130, as a shell reports a process those signals killed: a scheduler sees a
  stopped run, not a finished one (0)."""
  stops = [r for r in killed_run[2] if r[0] in ("SIGTERM", "SIGINT")]
  assert len(stops) == 2
  for how, code, last, saved in stops:
    assert code == 128 + getattr(signal, how), how
    assert last <= saved <= last + 2, how  # the step in flight (+1 when its row came late)


def test_sample_run_killed_midway_resumes_from_its_batches_with_the_same_images(killed_run):
  straight, work, _ = killed_run
  assert Child(straight, "sample_straight", "--mode=sample").finish() == 0
  samples = work / "samples"
  child = Child(work, "sample_killed", "--mode=sample", kill=(samples, 1, "chunk_00001"))
  assert child.finish() == -signal.SIGKILL  # as the second of three batches was written
  assert [p.name for p in samples.glob("*_chunks/*.npz")] == ["chunk_00000.npz"]
  child = Child(work, "sample_resumed", "--mode=sample")
  assert child.finish() == 0
  assert "1 of 3 chunks already in" in child.out.read_text()
  [npz] = samples.glob(f"ddim2_eta0_ema_step{STEPS}_seed0_*.npz")
  resumed = np.load(npz)["images"]
  assert resumed.shape == (20, 8, 8, 1) and resumed.dtype == np.uint8
  assert np.array_equal(resumed, np.load(straight / "samples" / npz.name)["images"])
  assert npz.with_suffix(".png").exists() and not list(samples.glob("*_chunks"))


def test_one_writer_per_workdir_the_second_run_refused_the_first_unharmed(killed_run):
  """Two real processes on one workdir: a second run started while the first (held stopped
  with SIGSTOP, its lock held) runs is refused in one line naming the first's pid; the first
  then goes on, and the run ends bit for bit like a lone run (the test above). Each SIGKILL
  left the lock behind: the reruns reclaimed it."""
  straight, work, record = killed_run
  [(_, code, err, first_pid)] = [r for r in record if r[0] == "second_writer"]
  assert code == 2 and err.startswith(f"error: {work} is being written by another run, pid "
                                      f"{first_pid} on host"), err
  reclaimed = [p.name for p in work.parent.glob("*.err")
               if "Reclaimed the stale lock" in p.read_text()]
  assert reclaimed and not (work / ".lock").exists()


@pytest.mark.parametrize("mode,moment", [("train", "start-up"), ("sample", "sampling")])
def test_sigint_at_any_moment_is_one_line_and_exit_130(killed_run, tmp_path, mode, moment):
  """SIGINT while Python imports (start-up: nothing written; sent from here) and as the second
  sampling batch is being written (sent by the process to itself at that moment, so that
  the run cannot finish first): one line, exit status 130, no traceback; the first batch
  stays (the kill test above resumes from such batches) and the second's temporary file is
  gone. (During training the loop saves first: the SIGINT stop above.)"""
  straight = killed_run[0]
  work = tmp_path / "work"
  if mode == "sample":
    shutil.copytree(straight / "checkpoints", work / "checkpoints")
    child = Child(work, moment, "--mode=sample", kill=(work / "samples", 1, "chunk_00001"),
                  kill_signal="SIGINT")
  else:
    child = Child(work, moment)
    time.sleep(1.0)  # after the interpreter starts, while jax and the package import
    child.proc.send_signal(signal.SIGINT)
  assert child.finish() == 130
  err = child.err.read_text().strip()
  assert "Traceback" not in err and len(err.splitlines()) <= 1, err
  assert err.startswith("stopped: SIGINT"), err
  if mode == "sample":
    assert sorted(p.name for p in work.glob("samples/*_chunks/*")) == ["chunk_00000.npz"]
  elif "while starting" in err:
    assert not work.exists()


def test_an_import_killed_while_it_writes_is_completed_by_the_same_command(tmp_path, template):
  """SIGKILL amid the import's checkpoint write: the workdir holds its record (config.json,
  imported.json) and no checkpoint, and the same command completes it with the source's
  weights."""
  config = _config()
  folder, work = tmp_path / "source", tmp_path / "work"
  weights.save_diffusers(config, template.params, str(folder))
  flags = ("--mode=import", f"--import_from=diffusers:{folder}")
  killed = Child(work, "import_killed", *flags, kill=(work / "checkpoints", 3, ""))
  assert killed.finish() == -signal.SIGKILL
  assert (work / "imported.json").exists() and not checkpoint.make_manager(
      str(work / "checkpoints")).all_steps()
  again = Child(work, "import_again", *flags)
  assert again.finish() == 0, again.err.read_text()
  for ours, theirs in zip(jax.tree.leaves(_state(config, template, work, 0).params),
                          jax.tree.leaves(template.params), strict=True):
    assert np.array_equal(ours, theirs)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
  """A 3 MiB tmpfs holds one checkpoint of these settings (2.3 MiB) and not two: the second
  save is refused before writing, in one line naming the folder, the space needed and free;
  the first checkpoint is intact and no temporary folder is left."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                           capture_output=True)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here (root and CAP_SYS_ADMIN needed): "
                f"{mounted.stderr.decode().strip()}")
  try:
    work = disk / "work"
    child = Child(work, "full")
    assert child.finish() == 2
    err = _one_line(child)
    assert err.startswith(f"error: disk full: checkpoint step {2 * EVERY} in {work}/checkpoints "
                          f"needs "), err
    assert f"previous checkpoint (step {EVERY}) is intact" in err
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [str(EVERY)]
    config = _config()
    template = build.train_state(config, build.model(config, 1), (8, 8, 1))
    assert int(_state(config, template, work, EVERY).step) == EVERY
  finally:
    subprocess.run(["umount", str(disk)], check=True)


def test_the_cli_process_reports_an_unknown_field_in_one_line(tmp_path):
  """The real process (tests/test_bad_inputs.py puts 72 more through the entry point)."""
  child = Child(tmp_path / "work", "typo", "--config.training.batch_sise=8")
  assert child.finish() == 2
  assert child.err.read_text().strip() == (
      'error: unknown config field batch_sise; Did you mean "batch_size" instead of '
      '"batch_sise"? (the fields are in docs/config.md)')
