"""Nothing lost, nothing silently wrong: damaged checkpoints are detected by their checksums
and set aside (kept), results are named by every setting that made them, the reference
features resume in chunks, and a KID subset as large as the data is refused."""

import logging
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import tiny_config

from ddpm_jax.config import build, sampler, validate
from ddpm_jax.modes import evaluate, runs
from ddpm_jax.modes import sample as sample_mode
from ddpm_jax.training import checkpoint


@pytest.fixture(scope="module")
def state():
  """The tiny config's initial TrainState."""
  config = tiny_config()
  shape = build.image_shape(config, build.source(config))
  return build.train_state(config, build.model(config, shape[-1]), shape)


def _other(state, step):
  """`state` at `step` with every parameter moved, so that each step's arrays differ."""
  return state.replace(step=step, params=jax.tree.map(lambda p: p + step, state.params))


def _saved(directory, state, steps):
  manager = checkpoint.make_manager(str(directory))
  for step in steps:
    checkpoint.save(manager, _other(state, step))
  return checkpoint.make_manager(str(directory))


def _data_files(step_dir):
  return sorted((p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"),
                key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_bits_are_caught_and_the_step_set_aside_for_the_previous(seed, state, tmp_path,
                                                                         caplog):
  """16 flipped bits in the arrays' data file of the newest step (at seeded places): the step
  fails to load (by its checksums, where the damaged bytes still decode) and, as training
  would, is moved to unreadable_checkpoints/ while step 2 is restored."""
  _saved(tmp_path / "checkpoints", state, [2, 4])
  data = _data_files(tmp_path / "checkpoints" / "4")[-1]
  raw = bytearray(data.read_bytes())
  rng = np.random.default_rng(seed)
  for i in rng.choice(len(raw), 16, replace=False):
    raw[i] ^= 1 << int(rng.integers(8))
  data.write_bytes(bytes(raw))
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  with caplog.at_level(logging.WARNING):
    restored = checkpoint.restore_latest(manager, state, set_aside=True)
  assert int(restored.step) == 2
  np.testing.assert_array_equal(jax.tree.leaves(restored.params)[0],
                                jax.tree.leaves(_other(state, 2).params)[0])
  assert manager.all_steps() == [2] and (tmp_path / "unreadable_checkpoints" / "4").is_dir()
  assert any("step 4" in r.getMessage() and "cannot be read" in r.getMessage()
             for r in caplog.records)


def test_a_stray_entry_named_like_a_step_is_kept_not_deleted_by_a_save(state, tmp_path, caplog):
  """A file "6", a folder "06" and a folder "1" (an old step's name, which orbax lists and
  would remove as the oldest) among the checkpoints, none of them orbax's: training moves
  them to unreadable_checkpoints/ with a warning before it saves, where a save of step 6
  would have deleted the file without a word."""
  _saved(tmp_path / "checkpoints", state, [2, 4])
  (tmp_path / "checkpoints" / "6").write_text("my notes")
  (tmp_path / "checkpoints" / "06").mkdir()
  (tmp_path / "checkpoints" / "1").mkdir()
  (tmp_path / "checkpoints" / "1" / "notes.txt").write_text("mine")
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  with caplog.at_level(logging.WARNING):
    moved = checkpoint.set_aside_strays(manager)
  assert sorted(os.path.basename(p) for p in moved) == ["06", "1", "6"]
  assert (tmp_path / "unreadable_checkpoints" / "6").read_text() == "my notes"
  assert manager.all_steps() == [2, 4]
  assert any("Named like checkpoint steps but not checkpoints: 06, 1, 6" in r.getMessage()
             for r in caplog.records)
  checkpoint.save_tree(manager, 6, state)
  assert (tmp_path / "unreadable_checkpoints" / "6").read_text() == "my notes"


def test_a_step_deleted_while_read_is_not_damage_the_newest_left_is_read(state, tmp_path,
                                                                         monkeypatch, caplog):
  """A trainer with keep_checkpoints=1 deletes step 4 while a sampler reads it: the sampler
  lists the steps again and reads step 2, with no warning of damage and nothing moved."""
  _saved(tmp_path / "checkpoints", state, [2, 4])
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  real = checkpoint.restore

  def pruned_meanwhile(manager, step, template):
    if step == 4:
      shutil.rmtree(tmp_path / "checkpoints" / "4")
      raise FileNotFoundError("the trainer removed it")
    return real(manager, step, template)
  monkeypatch.setattr(checkpoint, "restore", pruned_meanwhile)
  with caplog.at_level(logging.WARNING):
    restored = checkpoint.restore_latest(manager, state, set_aside=True)
  assert int(restored.step) == 2 and not caplog.records
  assert not (tmp_path / "unreadable_checkpoints").exists()


def test_arrays_that_decode_but_are_not_those_written_fail_their_checksums(state, tmp_path):
  """Step 4's data replaced by step 2's (well-formed arrays, other values): restoring step 4
  raises ChecksumError naming the arrays; a reader (no set_aside) falls back and moves
  nothing."""
  manager = _saved(tmp_path / "checkpoints", state, [2, 4])
  shutil.rmtree(tmp_path / "checkpoints" / "4" / "default")
  shutil.copytree(tmp_path / "checkpoints" / "2" / "default",
                  tmp_path / "checkpoints" / "4" / "default")
  with pytest.raises(checkpoint.ChecksumError, match=r"arrays differ .*params/"):
    checkpoint.restore(manager, 4, state)
  assert int(checkpoint.restore_latest(manager, state).step) == 2
  assert manager.all_steps() == [2, 4] and not (tmp_path / "unreadable_checkpoints").exists()


def test_nothing_is_moved_when_no_step_can_be_read(state, tmp_path):
  manager = _saved(tmp_path / "checkpoints", state, [2, 4])
  for step in (2, 4):
    for data in _data_files(tmp_path / "checkpoints" / str(step)):
      data.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match="nothing was moved or deleted"):
    checkpoint.restore_latest(manager, state, set_aside=True)
  assert manager.all_steps() == [2, 4] and not (tmp_path / "unreadable_checkpoints").exists()


def test_keeping_no_checkpoint_is_refused(tmp_path):
  with pytest.raises(ValueError, match="keep at least 1"):
    checkpoint.make_manager(str(tmp_path), max_to_keep=0)
  assert not list(tmp_path.iterdir())


def _results_name(config, step, params, mode="sample", **extra):
  """runs.results_name with what the gate records that `mode` reads (its Plan's reads)."""
  reads = {"sample": sample_mode.READS, "eval": evaluate.READS}[mode]
  return runs.results_name(config, validate.validate(config, mode, None, reads).reads, step,
                           params, **extra)


def test_results_are_named_by_every_setting_that_changes_the_samples(state, tmp_path):
  """The sampler's words in the name, then a digest of the config.sampling fields the run
  reads (as the gate recorded them), the model, the checkpoint step, the parameters and the
  samplers' revision: any change gives another name, and a field the run does not read leaves
  it alone."""
  config, params = tiny_config(), state.ema_params
  name, settings = _results_name(config, 4, params)
  assert name.startswith("ddim2_eta0_ema_step4_seed0_") and settings["step"] == 4
  assert _results_name(tiny_config(), 4, params) == (name, settings)  # stable
  changed = [_results_name(tiny_config(**{k: v}), 4, params)[0] for k, v in [
      ("sampling.eta", 1.0), ("sampling.use_ema", False), ("sampling.clip_x0", False),
      ("sampling.skip_type", "quadratic"), ("model.dropout", 0.1),
      ("diffusion.beta_end", 0.03), ("model.ch", 64)]]
  changed += [_results_name(config, 6, params)[0],
              _results_name(config, 4, _other(state, 1).params)[0],
              _results_name(config, 4, params, chunk_size=8)[0]]
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sampler, "REVISION", sampler.REVISION + 1)
    changed.append(_results_name(config, 4, params)[0])  # samplers changed, config not
  assert len({name, *changed}) == len(changed) + 1
  assert changed[0].startswith("ddim2_eta1_ema_") and changed[1].startswith("ddim2_eta0_raw_")
  # settings the run does not read leave the name alone: DDIM has no SNR, and --mode eval
  # draws its samples in chunks of fid.chunk_size, not sampling.batch_size
  assert _results_name(tiny_config(**{"sampling.snr": 0.3}), 4, params)[0] == name
  weights = tmp_path / "inception.npz"  # the eval gate checks that the file is there
  weights.write_bytes(b"")
  evaluated = {"fid.inception_weights": str(weights), "fid.num_samples": 8,
               "fid.kid_subset_size": 4}
  in_eval = _results_name(tiny_config(**evaluated), 4, params, "eval")[0]
  assert _results_name(tiny_config(**evaluated, **{"sampling.batch_size": 16}), 4, params,
                       "eval")[0] == in_eval
  assert _results_name(tiny_config(**{"sampling.batch_size": 16}), 4, params)[0] != name


def test_samples_with_other_settings_go_to_other_files(state, tmp_path):
  """--mode sample with η = 0 and then η = 1 on one checkpoint: two result files, different
  images (the old names, keyed by method and steps only, overwrote the first)."""
  _saved(tmp_path / "checkpoints", state, [4])
  png0, npz0 = sample_mode.sample_from_checkpoint(tiny_config(), str(tmp_path))
  png1, npz1 = sample_mode.sample_from_checkpoint(tiny_config(**{"sampling.eta": 1.0}),
                                               str(tmp_path))
  assert npz0 != npz1 and os.path.exists(npz0) and os.path.exists(png1)
  assert not np.array_equal(np.load(npz0)["images"], np.load(npz1)["images"])


def test_the_reference_feature_pass_resumes_from_its_chunks(tmp_path):
  """A pass killed after two of four chunks resumes at the third, with the same features; the
  chunks go once the cache file (and its (μ, Σ) in the FID tools' format) is written."""
  config = tiny_config(**{"fid.chunk_size": 8, "fid.ref_split": "train",
                          "fid.ref_num_examples": 30})
  source, n = build.reference(config)
  calls = []

  def features(read, m, fail_at=None):  # a stand-in for Inception: the mean of each image
    if len(calls) == fail_at:
      raise KeyboardInterrupt("killed")
    calls.append(m)
    return read(np.arange(m)).reshape(m, -1).mean(1, keepdims=True).astype(np.float32)
  with pytest.raises(KeyboardInterrupt):
    evaluate.reference_features(config, source, n, lambda r, m: features(r, m, fail_at=2),
                                "ab" * 32, str(tmp_path / "cache"))
  assert calls == [8, 8]
  assert sorted(p.name for p in (tmp_path / "cache").rglob("chunk_*.npz")) == [
      "chunk_00000.npz", "chunk_00001.npz"]
  resumed = evaluate.reference_features(config, source, n, features, "ab" * 32,
                                        str(tmp_path / "cache"))
  assert calls == [8, 8, 8, 6]  # only the missing chunks were computed
  calls.clear()
  straight = evaluate.reference_features(config, source, n, features, "cd" * 32,
                                         str(tmp_path / "other"))
  np.testing.assert_array_equal(resumed, straight)
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
      f"digits_train_8px_30_bilinear_{'ab' * 6}.npz",
      f"digits_train_8px_30_bilinear_{'ab' * 6}_stats.npz"]


@pytest.mark.parametrize("num_samples,n_ref", [(500, 10_000), (10_000, 1000)])
def test_a_kid_subset_as_large_as_the_samples_or_the_reference_is_refused(num_samples, n_ref):
  f = tiny_config(**{"fid.num_samples": num_samples, "fid.kid_subset_size": 1000}).fid
  with pytest.raises(ValueError, match="fid.kid_subset_size=1000 must be smaller than"):
    validate.check_kid_subset(f, n_ref)
  validate.check_kid_subset(tiny_config(**{"fid.num_samples": 2000}).fid, 1001)
