"""The public Python API (ddpm_jax/__init__.py, pipeline.py) against the command line and the
exact Gaussian models: a network of your own wrapped by `Denoiser.from_fn` samples exactly as
the library's own adapter of the same exact network; a Pipeline samples what --mode sample
writes; options keep the command line's names and defaults; errors name the arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli, tiny_config

import ddpm_jax as dj
from ddpm_jax.config import defaults
from ddpm_jax.core import schedules
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

MEAN, STD = [[0.5, -0.3]], [[0.3, 0.2]]


def _user_network(reference, predicts: str, noise_input: str, process):
  """A network 'of your own': the exact model of the reference Denoiser, fed as `noise_input`
  says and predicting `predicts`, written against the public conventions (not the adapter's
  internals)."""
  def time_of(c, x):
    if noise_input == "t":
      return c
    sigma = c if noise_input == "sigma" else jnp.exp(c)
    if isinstance(process, dj.sde.VPSDE):  # σ/α = √(e^B(t) − 1): solve B(t) = log(1 + σ²)
      b0, db = process.beta_min, process.beta_max - process.beta_min
      return (jnp.sqrt(b0**2 + 2 * db * jnp.log1p(sigma**2)) - b0) / db
    # VE: σ = σ_min (σ_max/σ_min)^t
    return jnp.log(sigma / process.sigma_min) / jnp.log(process.sigma_max / process.sigma_min)

  def fn(x, c):
    t = time_of(c, x)
    alpha, sigma = process.marginal_coef(t)
    a, s = alpha[:, None], sigma[:, None]
    x = x * a if noise_input == "sigma" else x  # k-diffusion's convention feeds x / α
    pred = reference.predict(x, t)
    return {"eps": pred.eps, "x0": pred.x0, "v": a * pred.eps - s * pred.x0,
            "score": -pred.eps / s}[predicts]
  return fn


@pytest.mark.parametrize("process_name,predicts,noise_input", [
    ("vp", "eps", "t"), ("vp", "v", "t"), ("vp", "x0", "sigma"), ("ve", "score", "log_sigma"),
    ("ve", "x0", "sigma")])
def test_a_network_of_your_own_samples_as_the_librarys_adapter(process_name, predicts,
                                                                noise_input):
  process = dj.sde.VPSDE() if process_name == "vp" else dj.sde.VESDE(0.01, 10.0)
  reference = analytic.mixture_denoiser(process, MEAN, STD, objective="dsm")
  mine = dj.Denoiser.from_fn(_user_network(reference, predicts, noise_input, process), process,
                             predicts=predicts, noise_input=noise_input)
  key = jax.random.key(3)
  x, nfe = dj.sample("dpm_solver", mine, key, (512, 2), num_steps=12, clip_x0=False)
  want, info = table.sample("dpm_solver", reference, key, (512, 2), num_steps=12,
                            spacing="logsnr")
  np.testing.assert_allclose(np.asarray(x), np.asarray(want), atol=2e-4)
  assert nfe == info["nfe"] == 13  # N + 1 for DPM-Solver++(2M)
  np.testing.assert_allclose(np.asarray(x).mean(0), MEAN[0], atol=0.05)


def test_sample_takes_the_command_lines_names_and_defaults():
  """num_steps defaults to sampling.num_steps (50, so 51 evaluations for DPM-Solver++);
  clip_x0 defaults to True as sampling.clip_x0 does (samples of data beyond ±1 are pulled
  inside); an unknown option lists the accepted ones; a bad value names the argument."""
  chain = dj.sde.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  model = analytic.mixture_denoiser(chain, [[3.0, -3.0]], [[0.1, 0.1]])
  key = jax.random.key(0)
  x, nfe = dj.sample("dpm_solver", model, key, (64, 2))
  assert nfe == defaults.get_config().sampling.num_steps + 1
  assert np.abs(np.asarray(x)).max() <= 1.0 + 1e-3  # clipped x̂_0 ends inside [−1, 1]
  x, _ = dj.sample("ddim", model, key, (64, 2), num_steps=20, clip_x0=False)
  np.testing.assert_allclose(np.asarray(x).mean(0), [3.0, -3.0], atol=0.05)
  with pytest.raises(ValueError, match=r"sample: method 'dpm_solver' takes no option "
                                       r"'solver'; its options are \('num_steps', 'spacing'"):
    dj.sample("dpm_solver", model, key, (8, 2), solver=2)
  with pytest.raises(ValueError, match=r"^eta=1.5 must be in \[0, 1\].*set the argument eta"):
    dj.sample("ddim", model, key, (8, 2), eta=1.5)
  with pytest.raises(ValueError, match=r"^num_steps=5000 must be at most "
                                       r"config field diffusion.num_timesteps=1000|"
                                       r"num_steps=5000 must be at most"):
    dj.sample("ddim", model, key, (8, 2), num_steps=5000)
  with pytest.raises(ValueError, match="Unknown sampler 'dpm'; use one of"):
    dj.sample("dpm", model, key, (8, 2))


def test_from_fn_refuses_unknown_conventions():
  with pytest.raises(ValueError, match=r"predicts='noise': use one of \('eps', 'x0', 'v', "
                                       r"'score', 'velocity'\)"):
    dj.Denoiser.from_fn(lambda x, t: x, dj.sde.VPSDE(), predicts="noise")
  with pytest.raises(ValueError, match=r"predicts='eps' on a flow path: use one of "
                                       r"\('velocity', 'x0'\)"):
    dj.Denoiser.from_fn(lambda x, t: x, dj.paths.LinearPath(), predicts="eps")
  with pytest.raises(ValueError, match=r"noise_input='time': use one of \('t', 'sigma'"):
    dj.Denoiser.from_fn(lambda x, t: x, dj.sde.VPSDE(), noise_input="time")


@pytest.mark.slow
def test_a_pipeline_trains_samples_as_the_command_line_and_round_trips_its_weights(
    tmp_path, capsys, monkeypatch):
  """A workdir trained by the command line, loaded by Pipeline.load, samples exactly what
  --mode sample wrote (same defaults, clipping included); the second call reuses the
  program; the weights go out as a 1-channel diffusers folder and come back bit for bit."""
  workdir = str(tmp_path / "run")
  args = ["--config=demo", "--config.model.ch_mult=(1,)", "--config.sampling.num_steps=3",
          "--config.sampling.num_samples=8", f"--workdir={workdir}"]
  code, err = run_cli([*args, "--config.training.batch_size=16", "--config.training.log_every=2",
                       "--config.training.num_train_steps=2",
                       "--config.training.checkpoint_every=2"], capsys, monkeypatch)
  assert code == 0, err
  code, err = run_cli([*args, "--mode=sample", "--config.sampling.batch_size=8"], capsys,
                      monkeypatch)
  assert code == 0, err
  written = np.load(next((tmp_path / "run" / "samples").glob("*.npz")))["images"]

  pipe = dj.Pipeline.load(workdir)
  assert pipe.channels == 1 and pipe.config.sampling.num_steps == 3
  images, nfe = pipe.sample(8, jax.random.fold_in(jax.random.key(0), 0))
  np.testing.assert_array_equal(
      np.asarray(np.clip(np.round((np.asarray(images) + 1) * 127.5), 0, 255), np.uint8),
      written)
  assert nfe == 3
  pipe.sample(8, jax.random.key(1))
  assert len(pipe.programs) == 1  # one (method, options) program, compiled once

  out = pipe.save(f"diffusers:{tmp_path / 'exported'}")
  back = dj.Pipeline.load(f"diffusers:{out}")
  assert back.channels == 1
  for a, b in zip(jax.tree.leaves(pipe.params), jax.tree.leaves(back.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_pipeline_training_from_python_and_its_errors():
  config = tiny_config(**{"training.steps_per_dispatch": 2,  # the CLI loop's; one a call
                          "training.log_every": 2})
  pipe = dj.Pipeline.from_config(config)
  state = pipe.init(jax.random.key(0))
  step = pipe.train_step()
  x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
  for _ in range(2):
    state, metrics = step(state, {"image": x})
  assert int(state.step) == 2 and np.isfinite(float(metrics["loss"]))
  with pytest.raises(ValueError, match=r"batch\['image'\] has shape \(16, 8, 8\); this model "
                                       r"takes \[B, 8, 8, 1\]"):
    step(state, {"image": x[..., 0]})
  with pytest.raises(ValueError, match="no parameters: call with_params"):
    pipe.sample(8, jax.random.key(0))
  pipe = pipe.with_params(state.ema_params)
  with pytest.raises(ValueError, match=r"num=5: the batch is split over 8 device\(s\)"):
    pipe.sample(5, jax.random.key(0))
  with pytest.raises(ValueError, match=r"Pipeline.sample: method 'ddim' takes no option "
                                       r"'solver_order'; its options are \('num_steps', 'eta'"):
    pipe.sample(8, jax.random.key(0), solver_order=2)
  conditional = dj.Pipeline.from_config(tiny_config(**{"model.conditional": True}))
  with pytest.raises(ValueError, match="batch has no 'label': this model is class-conditional"):
    conditional.train_step()(conditional.init(), {"image": x})
  edited, _ = pipe.edit(x[:8], jax.random.key(2), t_start=0.3, num_steps=2)
  assert edited.shape == (8, 8, 8, 1)
  mask = np.zeros((8, 8, 1), np.float32)
  mask[:4] = 1  # one mask for the batch: the top half kept, the rest inpainted from the prior
  inpainted, _ = pipe.edit(x[:8], jax.random.key(2), t_start=1.0, mask=mask, num_steps=2)
  np.testing.assert_array_equal(np.asarray(inpainted)[:, :4], x[:8, :4])
  bpd = pipe.bits_per_dim(np.full((8, 8, 8, 1), 128, np.uint8), jax.random.key(0))
  assert bpd.shape == (8,) and np.all(np.isfinite(bpd))
