"""Every mode under two real processes (2 fake CPU devices each, gloo collectives): the same
results as one process, checkpoints that move between process counts both ways, an eval
killed under two processes and finished by one, and only process 0 writing files."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import tiny_config
from multiprocess import launch
from test_fid import WEIGHTS

from ddpm_jax.config import build
from ddpm_jax.modes import evaluate, runs, train
from ddpm_jax.modes import sample as sample_mode
from ddpm_jax.training import checkpoint

pytestmark = [pytest.mark.xdist_group("multiprocess"),  # one xdist worker runs the fixture
              pytest.mark.slow]

# The tiny settings of each mode (the config gate refuses command-line settings a mode does
# not read).
TINY = {"model.ch_mult": "(1,)", "diffusion.num_timesteps": 50}
MODE_TINY = {
    "train": {"training.batch_size": 16, "training.log_every": 1,
              "training.checkpoint_every": 2, "sampling.num_steps": 2, "sampling.num_samples": 8},
    "sample": {"sampling.num_steps": 2, "sampling.num_samples": 8, "sampling.batch_size": 8},
    "bpd": {"eval.batch_size": 16, "eval.num_examples": 32},
    "eval": {"sampling.num_steps": 2},
}


def _flags(mode="train", **overrides) -> list[str]:
  settings = {**TINY, **MODE_TINY[mode], **overrides}
  return (["--config=configs/demo.py", f"--mode={mode}"]
          + [f"--config.{k}={v}" for k, v in settings.items()])


def _config(**overrides):
  return tiny_config(**{"eval.batch_size": 16, "eval.num_examples": 32,
                        "diffusion.num_timesteps": 50, "training.checkpoint_every": 2,
                        **overrides})


def _state(config, workdir, step):
  run = runs.start_run(config, str(workdir), "train")
  manager = checkpoint.make_manager(run.checkpoint_dir)
  template = build.train_state(config, run.plan.model, run.shape)
  return jax.device_get(checkpoint.restore(manager, step, template))


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                               rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="session")  # not "module": an xdist worker may interleave other modules
def runs_dir(tmp_path_factory):
  """A checkpoint moved between process counts both ways: 1 process (this one, 8 devices)
  trains steps 1–2, 2 processes 3–4, 1 process 5–6; beside it 1 process trains 1–6 straight."""
  root = tmp_path_factory.mktemp("multiprocess")
  train.train_and_evaluate(_config(**{"training.num_train_steps": 2}), str(root / "moved"))
  writes = launch(root / "moved", *_flags(**{"training.num_train_steps": 4}))
  train.train_and_evaluate(_config(**{"training.num_train_steps": 6}), str(root / "moved"))
  train.train_and_evaluate(_config(**{"training.num_train_steps": 6}), str(root / "straight"))
  return root, writes


def test_two_processes_train_as_one_and_checkpoints_move_both_ways(runs_dir):
  root, _ = runs_dir
  config = _config(**{"training.num_train_steps": 6})
  for step in (4, 6):  # 4: written by the two processes; 6: one process resumed from it
    _same(_state(config, root / "moved", step), _state(config, root / "straight", step))
  logged = [json.loads(line)["step"] for line in open(root / "moved" / "metrics.jsonl")]
  assert logged == [1, 2, 3, 4, 5, 6]  # each step logged once, by process 0


def test_only_process_0_writes_files(runs_dir):
  """Checkpoints too: they hold one host copy of the replicated state, which process 0 writes."""
  root, (first, second) = runs_dir
  written = {w["path"] for w in first}
  assert {"config.json", "metrics.jsonl", "samples/step_00000004.png"} <= written
  assert any(p.startswith("tensorboard/") for p in written)
  assert any(p.startswith("checkpoints/4") for p in written)
  assert not second


def test_sample_and_bpd_modes_under_two_processes_match_one(runs_dir, tmp_path):
  root, _ = runs_dir
  for mode in ("sample", "bpd"):  # bpd: the coordinator and the process index from the environment
    _, others = launch(root / "moved", *_flags(mode), logs=tmp_path / mode,
                       from_env=mode == "bpd")
    assert not others
  config = _config(**{"training.num_train_steps": 6})
  two = dict(np.load(next((root / "moved" / "samples").glob("ddim2_*_step6_*.npz"))))
  shutil.copytree(root / "moved" / "checkpoints", tmp_path / "one" / "checkpoints")
  _, npz = sample_mode.sample_from_checkpoint(config, str(tmp_path / "one"))
  assert np.abs(two["images"].astype(int) - np.load(npz)["images"]).max() <= 1
  from ddpm_jax.modes import bpd
  one = bpd.evaluate_bpd(config, str(tmp_path / "one"))
  two = json.loads((root / "moved" / "bpd_train_ema_step6.json").read_text())
  assert two["num_examples"] == one["num_examples"] == 32
  assert two["bpd"] == pytest.approx(one["bpd"], rel=1e-5)


@pytest.mark.skipif(not (WEIGHTS / "inception_fid.npz").exists(),
                    reason="../shared/weights (the FID Inception weights) is absent")
def test_eval_killed_under_two_processes_resumes_under_one(runs_dir, tmp_path):
  """FID/KID/precision/recall of an eval killed (SIGKILL) under two processes as its second
  chunk was written, resumed by one, equal those of an uninterrupted run; the reference
  features are cached once."""
  root, _ = runs_dir
  fid = {"fid.inception_weights": str(WEIGHTS / "inception_fid.npz"), "fid.chunk_size": 8,
         "fid.ref_num_examples": 16, "fid.kid_subsets": 5, "fid.kid_subset_size": 8,
         "fid.cache_dir": str(tmp_path / "cache")}
  work = tmp_path / "work"
  shutil.copytree(root / "moved" / "checkpoints", work / "checkpoints")
  _, others = launch(work, *_flags("eval", **fid, **{"fid.num_samples": 16}),
                     kill_at="chunk_00001")
  assert not others
  assert [p.name for p in (work / "eval").glob("*/chunk_*.npz")] == ["chunk_00000.npz"]
  config = _config(**fid, **{"fid.num_samples": 16, "training.num_train_steps": 6})
  resumed = evaluate.evaluate(config, str(work))
  assert sorted(p.name for p in (work / "eval").glob("*/chunk_*.npz")) == [
      "chunk_00000.npz", "chunk_00001.npz"]
  shutil.copytree(root / "moved" / "checkpoints", tmp_path / "fresh" / "checkpoints")
  straight = evaluate.evaluate(config, str(tmp_path / "fresh"))
  for name in ("fid", "kid", "precision", "recall"):
    assert resumed[name] == pytest.approx(straight[name], rel=1e-4, abs=1e-6), name
  assert resumed["fid"] > 0 and resumed["sampler"] == "ddim" and resumed["num_samples"] == 16
  assert resumed["nfe_per_sample"] == _config().sampling.num_steps
  cached = sorted(p.name for p in (tmp_path / "cache").glob("*.npz"))
  assert len(cached) == 2 and cached[1].endswith("_stats.npz")  # features cached once, (μ, Σ)


def test_a_global_batch_that_does_not_split_over_processes_is_a_one_line_error(tmp_path):
  with pytest.raises(AssertionError, match=r"exit codes \[2, 2\]") as failure:
    launch(tmp_path / "w", *_flags(**{"training.batch_size": 6}))
  assert ("error: training.batch_size=6 does not divide over 2 processes × 2 local devices; "
          "use a multiple of 4.") in str(failure.value)
