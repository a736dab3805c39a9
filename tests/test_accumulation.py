"""Gradient accumulation: k micro-batches per device make the update of one full batch."""

import jax
import numpy as np
import pytest
from conftest import run_cli, tiny_config

from ddpm_jax.config import build
from ddpm_jax.data import batches
from ddpm_jax.infra import parallel


def _run(config, model, initial, devices, data):
  mesh = parallel.make_mesh(devices)
  step = build.train_step(config, model, mesh)
  state = parallel.replicate(initial, mesh)
  for b in data:
    state, metrics = step(state, parallel.shard_batch(b, mesh))
  return jax.device_get(state), {k: float(v) for k, v in jax.device_get(metrics).items()}


@pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower
@pytest.mark.slow
def test_k_micro_batches_equal_one_full_batch_on_1_and_8_devices():
  """Two steps of importance-sampled DDPM (the loss history takes every micro-batch's losses
  in batch order) with k = 1 and 4 on 8 devices and k = 2 on one: the same parameters,
  Adam moments, EMA, history and loss to float32 rounding (measured ≤ 2e-7 relative), and the
  optimizer counts steps, not micro-batches."""
  config = tiny_config(**{"training.t_sampler": "importance", "diffusion.num_timesteps": 4,
                          "training.batch_size": 32, "optim.warmup_steps": 5})
  source = build.source(config)
  shape = build.image_shape(config, source)
  model = build.model(config, shape[-1])
  initial = jax.device_get(build.train_state(config, model, shape))
  data = [batches.get_batch(source, s, global_batch=32, image_size=8, seed=0) for s in range(2)]
  runs = {}
  for devices, k in ((jax.devices(), 1), (jax.devices(), 4), (jax.devices()[:1], 2)):
    config.training.grad_accum_steps = k
    runs[(len(devices), k)] = _run(config, model, initial, devices, data)
  (reference, ref_metrics) = runs[(8, 1)]
  assert int(reference.step) == 2
  for key, (state, metrics) in runs.items():
    assert int(state.step) == 2, key
    assert metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-5), key
    assert metrics["grad_norm"] == pytest.approx(ref_metrics["grad_norm"], rel=1e-5), key
    np.testing.assert_array_equal(state.loss_history["counts"], reference.loss_history["counts"])
    np.testing.assert_allclose(state.loss_history["losses"], reference.loss_history["losses"],
                               rtol=1e-5)
    trees = [(state.params, reference.params), (state.ema_params, reference.ema_params),
             (state.opt_state, reference.opt_state)]
    for mine, theirs in trees:
      for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=str(key))


def test_the_gate_refuses_micro_batches_that_do_not_divide_the_batch(tmp_path, capsys,
                                                                   monkeypatch):
  for args, expected in (
      (["--config.training.grad_accum_steps=3"], "training.grad_accum_steps=3 must divide"),
      (["--config.training.grad_accum_steps=0"], "training.grad_accum_steps=0 must be at least 1"),
      (["--config.training.grad_accum_steps=4", "--config.training.batch_size=32",
        "--config.training.t_sampler=antithetic"], "odd per micro-batch")):
    fresh = tmp_path / "run"
    code, err = run_cli(["--config=configs/demo.py", *args, f"--workdir={fresh}"], capsys,
                        monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert not fresh.exists()


def test_the_compilation_cache_is_on_by_default_off_with_an_empty_field_and_yields_to_the_env(
    tmp_path, monkeypatch):
  from ddpm_jax.config import defaults
  from ddpm_jax.infra import compile_cache
  assert defaults.get_config().compilation_cache  # on by default
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "session"))
  assert compile_cache.enable(str(tmp_path / "mine")) == str(tmp_path / "session")
  assert not (tmp_path / "mine").exists()
  monkeypatch.delenv(compile_cache.ENV)
  assert compile_cache.enable("") is None
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compile_cache.enable(str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and jax.config.jax_compilation_cache_dir == str(
        tmp_path / "mine")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
