"""Post-hoc EMA (EDM2): the power-function EMA against its closed form and the profile's
moments by quadrature, the least-squares reconstruction against an EMA tracked directly on a
synthetic trajectory, and the snapshots through training, resume and --mode phema."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli, tiny_config
from scipy import integrate

from ddpm_jax.config import build, validate
from ddpm_jax.infra import parallel
from ddpm_jax.modes import phema as phema_mode
from ddpm_jax.modes import train
from ddpm_jax.training import checkpoint, power_ema, snapshots


def _profile(tau, t, gamma):
  return (gamma + 1) * tau**gamma / t ** (gamma + 1) if 0 <= tau <= t else 0.0


@pytest.mark.parametrize("gamma", [0.0, 1.5, 6.94, 16.97, 40.0])
def test_sigma_rel_is_the_profiles_standard_deviation_over_t(gamma):
  t = 3.0
  mean = integrate.quad(lambda s: s * _profile(s, t, gamma), 0, t)[0]
  second = integrate.quad(lambda s: s * s * _profile(s, t, gamma), 0, t)[0]
  assert integrate.quad(lambda s: _profile(s, t, gamma), 0, t)[0] == pytest.approx(1.0)
  std = np.sqrt(second - mean**2) / t
  assert power_ema.gamma_to_sigma_rel(gamma) == pytest.approx(std, rel=1e-7)
  assert power_ema.sigma_rel_to_gamma(std) == pytest.approx(gamma, rel=1e-7, abs=1e-9)


def test_the_papers_lengths_and_the_range():
  """EDM2 (Karras et al. 2024, §3.1): σ_rel 0.05 and 0.10 are γ ≈ 16.97 and 6.94."""
  np.testing.assert_allclose(power_ema.sigma_rel_to_gamma([0.05, 0.10]), [16.97, 6.94], atol=5e-3)
  for bad in (0.0, -0.1, 0.3):
    with pytest.raises(ValueError, match=r"must be in \(0, 0.2887\]"):
      power_ema.sigma_rel_to_gamma(bad)


@pytest.mark.parametrize("a,b", [((100, 6.94), (300, 16.97)), ((300, 6.94), (100, 16.97)),
                                 ((200, 3.0), (200, 9.0)), ((50, 0.0), (80, 2.5))])
def test_profile_inner_products_by_quadrature(a, b):
  want = integrate.quad(lambda s: _profile(s, *a) * _profile(s, *b), 0, min(a[0], b[0]),
                        epsabs=0, epsrel=1e-11, limit=200)[0]
  assert power_ema.profile_inner(*a, *b) == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.2])
def test_the_update_is_the_closed_form_average_in_float32(sigma_rel):
  """3,000 float32 updates give Σ_τ w_τ θ_τ with w_τ = (τ^{γ+1} − (τ−1)^{γ+1}) / t^{γ+1}, the
  profile's integral over (τ−1, τ], computed in float64 (measured ≤ 3e-6 of the trajectory's
  scale). The weight −expm1((γ+1) log1p(−1/t)) is within 3e-7 of float64's at t = 3,000 and
  800,000; 1 − (1 − 1/t)^{γ+1} in float32 is off by 7.6e-5 and 2.9e-3 of itself."""
  gamma = float(power_ema.sigma_rel_to_gamma(sigma_rel))
  steps = 3000
  rng = np.random.default_rng(0)
  theta = np.cumsum(rng.normal(size=(steps, 16)), 0) / np.sqrt(steps) + rng.normal(size=16)

  def body(ema, inputs):
    t, p = inputs
    return power_ema.update(ema, p, t, gamma), None
  ema, _ = jax.lax.scan(body, jnp.zeros(16, jnp.float32),
                        (jnp.arange(1, steps + 1), jnp.asarray(theta, jnp.float32)))
  w = power_ema.discrete_weights(steps, gamma)
  assert w.sum() == pytest.approx(1.0, abs=1e-12)
  for tau in (1, 1500, 2999):
    assert w[tau - 1] == pytest.approx(integrate.quad(
        lambda s: _profile(s, steps, gamma), tau - 1, tau, epsabs=0, epsrel=1e-12)[0], rel=1e-9)
  np.testing.assert_allclose(np.asarray(ema), w @ theta, atol=3e-6 * np.abs(theta).max())


def _trajectory(steps, dims, seed=0):
  """A training-like trajectory: a decaying drift towards an optimum plus a random walk."""
  rng = np.random.default_rng(seed)
  tau = np.arange(1, steps + 1)[:, None]
  drift = rng.normal(size=dims) * np.exp(-tau / (0.3 * steps))
  walk = np.cumsum(rng.normal(size=(steps, dims)), 0) * 0.02
  return (drift + walk).astype(np.float32)


def test_reconstruction_matches_an_ema_tracked_directly():
  """Profiles σ_rel 0.05 and 0.10 snapshotted every 250 of 10,000 steps: the reconstructed
  σ_rel 0.07 and 0.15 EMAs (not tracked) equal ones tracked directly to 5e-4 and 1e-3 of the
  distance between the two tracked EMAs (measured 6.1e-5 and 1.1e-4; their profiles 6.3e-4
  and 1.5e-3 from the targets' in relative L2); a tracked length at a snapshot is itself."""
  steps, every, dims = 10_000, 250, 64
  theta = _trajectory(steps, dims)
  rels = (0.05, 0.10, 0.07, 0.15)
  gammas = [float(g) for g in power_ema.sigma_rel_to_gamma(rels)]

  def body(emas, inputs):
    t, p = inputs
    emas = tuple(power_ema.update(e, p, t, g) for e, g in zip(emas, gammas))
    return emas, emas[:2]
  zeros = tuple(jnp.zeros(dims) for _ in rels)
  final, tracked = jax.lax.scan(body, zeros, (jnp.arange(1, steps + 1), jnp.asarray(theta)))
  snap_steps = np.arange(every, steps + 1, every)
  snaps = np.stack([np.asarray(tracked[j])[snap_steps - 1] for j in range(2)], 1)  # [S, 2, D]
  scale = np.linalg.norm(np.asarray(final[0]) - np.asarray(final[1]))
  all_steps, all_gammas = np.repeat(snap_steps, 2), np.tile(gammas[:2], len(snap_steps))
  for j, tol, fit in ((2, 5e-4, 1e-3), (3, 1e-3, 3e-3)):
    x = power_ema.coefficients(all_steps, all_gammas, steps, gammas[j])
    assert power_ema.profile_error(all_steps, all_gammas, x, steps, gammas[j]) < fit
    recon = np.einsum("s,sd->d", x, snaps.reshape(-1, dims).astype(np.float64))
    assert np.linalg.norm(recon - np.asarray(final[j])) < tol * scale, rels[j]
  x = power_ema.coefficients(all_steps, all_gammas, steps, gammas[1])
  assert x[-1] == pytest.approx(1.0) and np.abs(x[:-1]).max() < 1e-9


# ------------------------------------------------------------------ through training

PHEMA = {"training.phema_sigma_rels": (0.05, 0.10), "training.phema_every": 2}


@pytest.mark.usefixtures("cheap_compile")
def test_the_train_step_updates_each_profile_with_the_new_parameters():
  """Four steps of the real train step: each power-function EMA equals the closed form over
  the parameters after each step (float64 reference), and the classic EMA is unchanged."""
  config = tiny_config(**PHEMA)
  source = build.source(config)
  shape = build.image_shape(config, source)
  model = build.model(config, shape[-1])
  mesh = parallel.make_mesh(jax.devices()[:1])
  step = build.train_step(config, model, mesh)
  state = parallel.replicate(build.train_state(config, model, shape), mesh)
  from ddpm_jax.data import batches
  trajectory = []
  for s in range(4):
    batch = batches.get_batch(source, s, global_batch=16, image_size=8, seed=0)
    state, _ = step(state, parallel.shard_batch(batch, mesh))
    trajectory.append(jax.device_get(state.params))
  state = jax.device_get(state)
  for ema, gamma in zip(state.phema_params, build.phema_gammas(config), strict=True):
    w = power_ema.discrete_weights(4, gamma)
    want = jax.tree.map(lambda *ps: sum(wi * np.asarray(p, np.float64) for wi, p in zip(w, ps)),
                        *trajectory)
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.phema_params[0]),
                                                        jax.tree.leaves(state.ema_params)))


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory):
  """6 steps with snapshots at 2, 4, 6 and checkpoints every 2."""
  root = tmp_path_factory.mktemp("phema")
  config = tiny_config(**PHEMA, **{"training.num_train_steps": 6,
                                   "training.checkpoint_every": 2, "training.log_every": 2})
  train.train_and_evaluate(config, str(root / "straight"))
  return root, config


def _snapshot(workdir, step, config):
  manager = snapshots.make_manager(str(workdir))
  template = build.train_state(config, build.model(config, 1), (8, 8, 1), abstract=True).params
  return checkpoint.restore(manager, step, {"ema": (template, template)})["ema"]


@pytest.mark.slow
def test_snapshots_are_checksummed_and_a_crash_resumes_them_bit_for_bit(phema_run):
  """A run killed after snapshot 6 was written but before checkpoint 6 resumes from
  checkpoint 4: the orphan snapshot is deleted and written again, bit for bit."""
  root, config = phema_run
  straight = root / "straight"
  manager = snapshots.make_manager(str(straight))
  assert sorted(manager.all_steps()) == [2, 4, 6]
  meta = manager.metadata(4).custom_metadata
  assert meta["sigma_rels"] == [0.05, 0.10] and len(meta["crc32"]) > 10
  crashed = root / "crashed"
  shutil.copytree(straight, crashed)
  shutil.rmtree(crashed / "checkpoints" / "6")
  (crashed / "phema_snapshots" / "6" / "_CHECKPOINT_METADATA").write_text("{}")  # stale
  train.train_and_evaluate(config, str(crashed))
  for step in (4, 6):
    for a, b in zip(jax.tree.leaves(_snapshot(crashed, step, config)),
                    jax.tree.leaves(_snapshot(straight, step, config)), strict=True):
      np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_mode_phema_writes_a_workdir_every_mode_reads(phema_run, capsys, monkeypatch, tmp_path):
  root, config = phema_run
  work = tmp_path / "run"
  shutil.copytree(root / "straight", work)
  flags = ["--config=configs/demo.py", "--config.model.ch_mult=(1,)",
           "--config.training.phema_sigma_rels=(0.05,0.1)"]
  code, err = run_cli([*flags, f"--workdir={work}", "--mode=phema",
                       "--config.phema.sigma_rel=0.1", "--config.phema.step=4"],
                      capsys, monkeypatch)
  assert code == 0, err
  out = work / "phema" / "sigma_rel0.1_step4"
  report = json.loads((out / "phema.json").read_text())
  assert report["step"] == 4 and report["profile_error"] < 1e-9
  assert [s["step"] for s in report["snapshots"]] == [2, 4]
  assert report["snapshots"][-1]["weights"]["0.1"] == pytest.approx(1.0)
  tracked = _snapshot(work, 4, config)[1]
  full = config.copy_and_resolve_references()
  plan = validate.validate(full, "sample")
  state = checkpoint.restore(checkpoint.make_manager(str(out / "checkpoints")), 4, plan.template)
  for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(tracked), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  code, err = run_cli([*flags, f"--workdir={out}", "--mode=sample",
                       "--config.sampling.num_samples=8", "--config.sampling.num_steps=2"],
                      capsys, monkeypatch)
  assert code == 0, err
  assert list((out / "samples").glob("*.png"))
  # Again into the same output: refused, nothing changed; a step that has no snapshot; a
  # damaged snapshot (its checksums); a workdir without snapshots.
  for extra, message in ((["--config.phema.step=4"], "already holds checkpoints"),
                         (["--config.phema.step=3"], "phema.step=3 is not a snapshot's step"),
                         (["--config.phema.sigma_rel=0.28", "--config.phema.output=" +
                           str(tmp_path / "far")], "phema.sigma_rel=0.28 is not what the "
                          "snapshots of σ_rel (0.05, 0.1) can make at step")):
    code, err = run_cli([*flags, f"--workdir={work}", "--mode=phema", *extra], capsys,
                        monkeypatch)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
  data = max((p for p in (work / "phema_snapshots" / "2").rglob("*")
              if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  data.write_bytes(bytes(raw))
  code, err = run_cli([*flags, f"--workdir={work}", "--mode=phema",
                       "--config.phema.output=" + str(tmp_path / "o")], capsys, monkeypatch)
  assert code == 2 and "snapshot step 2" in err and len(err.strip().splitlines()) == 1, err
  assert not (tmp_path / "o").exists()
  code, err = run_cli([*flags, f"--workdir={tmp_path / 'empty'}", "--mode=phema"], capsys,
                      monkeypatch)
  assert code == 2 and "No post-hoc EMA snapshots" in err
  assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("settings,message", [
    ({"training.phema_sigma_rels": (0.05, 0.5)}, "training.phema_sigma_rels=(0.05, 0.5) must be"),
    ({"training.phema_sigma_rels": (0.05, "x")}, "training.phema_sigma_rels=(0.05, 'x') must"),
    ({"training.phema_sigma_rels": (0.1, 0.1)}, "distinct"),
    ({"phema.sigma_rel": 0.0}, "phema.sigma_rel=0.0 must be in (0, 0.2887]"),
    ({"training.phema_sigma_rels": (0.05,), "training.phema_every": 3,
      "training.steps_per_dispatch": 2, "training.num_train_steps": 4,
      "training.checkpoint_every": 2, "training.log_every": 2}, "divide"),
])
def test_bad_phema_settings_are_one_line_errors(settings, message):
  with pytest.raises(ValueError) as e:
    validate.validate(tiny_config(**settings), "train")
  assert message in str(e.value) and "\n" not in str(e.value)


def test_phema_mode_needs_the_profiles_and_phema_every_needs_them_too():
  with pytest.raises(ValueError, match="training.phema_sigma_rels"):
    validate.validate(tiny_config(), "phema")
  with pytest.raises(ValueError, match="--config.training.phema_every is read only by "
                     "training.phema_sigma_rels"):
    validate.validate(tiny_config(), "train", ["training.phema_every"])


def test_output_dir_names_the_length_and_step():
  assert phema_mode.output_dir("/r", 0.08, 4000) == "/r/phema/sigma_rel0.08_step4000"
