"""Each benchmark script runs on a tiny config in one step or batch and prints the fields
benchmarks/RESULTS.md reads, so none of them rots unnoticed (their figures are measured,
never asserted here)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config
from test_fid import WEIGHTS
from test_launch import check_shell_script

BENCH = ROOT / "benchmarks"
SHARED_TFDS = ROOT.parent / "shared" / "tfds_array_record"
sys.path.insert(0, str(BENCH))
pytestmark = pytest.mark.slow  # each script compiles and runs its own programs


def _lines(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _main(module, argv, monkeypatch, capsys) -> list[dict]:
  """Runs an argparse script's main() in this process; its JSON lines."""
  monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
  module.main()
  return _lines(capsys.readouterr().out)


def _script(name, *argv, timeout=600) -> str:
  """Runs an absl script as its own process (its flags would clash with main.py's here)."""
  result = subprocess.run([sys.executable, str(BENCH / name), *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_throughput_times_a_training_step_a_forward_and_a_sampler(monkeypatch, capsys):
  import throughput
  rows = _main(throughput, ["--config", "configs/demo.py", "--batch", "8", "--steps", "1",
                            "--forward_batch", "8", "--sample_steps", "2",
                            "--set", "model.ch_mult=(1,)"], monkeypatch, capsys)
  assert [r["what"] for r in rows] == ["train", "forward", "sample"]
  for r in rows:
    assert r["img_per_sec"] > 0 and r["gflop_per_image"] > 0 and r["batch"] == 8


def test_networks_counts_a_network_and_measures_a_step_with_and_without_remat(monkeypatch,
                                                                             capsys):
  import networks
  rows = _main(networks, ["--configs", "configs/demo.py", "--memory", "configs/demo.py",
                          "--memory_batch", "8", "--set", "model.ch_mult=(1,)"],
               monkeypatch, capsys)
  assert [r["what"] for r in rows] == ["network", "memory", "memory"]
  assert rows[0]["parameters"] > 0 and rows[0]["gflop_per_image"] > 0
  assert [r["remat"] for r in rows[1:]] == [False, True] and all(r["peak_mib"] > 0 for r in rows[1:])


def test_classifier_guidance_times_the_guided_and_unguided_sampler(monkeypatch, capsys):
  import classifier_guidance
  rows = _main(classifier_guidance, ["--batch", "8", "--steps", "2", "--repeats", "1"],
               monkeypatch, capsys)
  assert [r["what"] for r in rows] == ["unguided", "guided", "added"]
  assert [r["evaluations_per_sample"] for r in rows[:2]] == [2, 4]
  assert rows[2]["ratio"] > 0


def test_compile_cache_times_a_cold_and_a_warm_first_step(monkeypatch, capsys):
  import compile_time
  rows = _main(compile_time, ["--set", "model.ch_mult=(1,)", "--set", "training.batch_size=8"],
               monkeypatch, capsys)
  assert [r["run"] for r in rows] == ["cold", "warm"]
  assert rows[0]["cache_files"] > 0 and all(r["first_step_s"] > 0 for r in rows)


def test_input_pipeline_reads_the_digits(monkeypatch, capsys):
  import input_pipeline
  rows = _main(input_pipeline, ["--dataset", "digits", "--image_size", "8", "--batch", "16",
                                "--batches", "2"], monkeypatch, capsys)
  assert len(rows) == 1 and rows[0]["img_per_sec"] > 0 and rows[0]["workers"] == 0


def test_dpm_solver_3m_errors_fall_with_the_budget(monkeypatch, capsys):
  """Against the exact Gaussian flow map: every form's error falls from 10 to 40 NFE."""
  import dpm_solver_3m
  rows = _main(dpm_solver_3m, ["--nfe", "10", "40", "--sde", "vp", "--spacing", "logsnr"],
               monkeypatch, capsys)
  forms = {r["form"] for r in rows}
  assert forms == set(dpm_solver_3m.FORMS)
  for form in forms:
    e10, e40 = (next(r["error"] for r in rows if r["form"] == form and r["nfe"] == n)
                for n in (10, 40))
    assert e40 < e10 / 4, form


def test_inception_benchmark_runs_on_zero_weights(monkeypatch, capsys):
  import inception_speed
  rows = _main(inception_speed, ["--batch", "2", "--iters", "1", "--size", "8"], monkeypatch, capsys)
  assert rows[0]["what"] == "inception_pool3" and rows[0]["finite"]


def test_compare_pytorch_builds_the_ddpm_cifar10_network():
  """The JAX side of the comparison: the network of 35,746,307 parameters (the DDPM
  CIFAR-10 model's count, which the script checks the reference against). The reference
  side needs torch and diffusers, which the tests do not install."""
  import compare_pytorch
  assert compare_pytorch.ours_params() == 35_746_307


def test_speed_levers_passes_bash_n_and_shellcheck():
  check_shell_script(BENCH / "speed_levers.sh")


@pytest.mark.skipif(not SHARED_TFDS.exists(), reason="../shared/tfds_array_record absent")
def test_tfds_to_npz_writes_loadable_splits(tmp_path, monkeypatch, capsys):
  import numpy as np
  import tfds_to_npz
  monkeypatch.setattr(sys, "argv", ["tfds_to_npz.py", "fashion_mnist", "--data_dir",
                                    str(SHARED_TFDS), "--out", str(tmp_path),
                                    "--splits", "test"])
  tfds_to_npz.main()
  with np.load(tmp_path / "fashion_mnist_test.npz", allow_pickle=False) as f:
    assert f["images"].shape == (10_000, 28, 28, 1) and f["images"].dtype == np.uint8
    assert f["labels"].shape == (10_000,)


FID_FLAGS = [f"--config.fid.inception_weights={WEIGHTS / 'inception_fid.npz'}",
             "--config.fid.ref_num_examples=16", "--config.fid.kid_subsets=2",
             "--config.fid.kid_subset_size=8", "--config.fid.inception_batch_size=16"]


@pytest.mark.skipif(not (WEIGHTS / "inception_fid.npz").exists(),
                    reason="FID weights absent (../shared/weights)")
def test_fid_floor_and_fid_vs_nfe_on_a_tiny_run(tmp_path):
  """fid_floor scores the 16 first digits against themselves (FID 0: the demo's one split
  is its reference); fid_vs_nfe evaluates a checkpoint (untrained: the script's plumbing is
  what is smoke-tested) with DPM-Solver++ at a budget of 3 evaluations (2 steps and the
  denoising one)."""
  from ddpm_jax.config import build
  from ddpm_jax.training import checkpoint
  cache = f"--config.fid.cache_dir={tmp_path / 'cache'}"
  floor = _lines(_script("fid_floor.py", "--config", "configs/demo.py", "--split", "train",
                         f"--cache_dir={tmp_path / 'floor'}", *FID_FLAGS))
  assert floor[0]["num"] == floor[0]["num_reference"] == 16 and abs(floor[0]["fid"]) < 1e-3
  config = tiny_config()
  shape = build.image_shape(config, build.source(config))
  checkpoint.save(checkpoint.make_manager(str(tmp_path / "run" / "checkpoints")),
                  build.train_state(config, build.model(config, shape[-1]), shape))
  out = tmp_path / "points.jsonl"
  _script("fid_vs_nfe.py", "--config", "configs/demo.py", "--workdir", str(tmp_path / "run"),
          "--samplers", "dpm_solver", "--nfe", "3", "--out", str(out), *FID_FLAGS, cache,
          "--config.model.ch_mult=(1,)", "--config.fid.num_samples=16",
          "--config.fid.chunk_size=16")
  (row,) = _lines(out.read_text())
  assert row["sampler"] == "dpm_solver" and row["num_steps"] == 2 and row["nfe"] == 3
  assert row["fid"] > 0 and row["num_samples"] == 16
