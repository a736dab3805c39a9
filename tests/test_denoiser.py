"""The Denoiser (core/denoiser.py) against closed forms: a network of every objective and
prediction type, written here from the exact score of Gaussian data, gives the exact x̂_0, ε̂
and score through its adapter — at times, at chain steps, at noise levels — and clipping and
the exact networks of ddpm_jax.testing agree with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.testing import analytic

MU, SD = np.array([0.3, -0.2]), np.array([0.4, 0.7])
T = np.array([0.01, 0.2, 0.5, 0.8, 1.0])
CHAIN = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("cosine", 1000)))


def _process(name):
  return CHAIN if name == "chain" else sde_lib.make_sde(name)


def _truth(process, x, t):
  """(score, x̂_0 = E[x_0 | x], ε̂) of N(MU, diag SD²) at times t, in closed form."""
  alpha, sigma = (np.asarray(v, np.float64)[:, None] for v in process.marginal_coef(jnp.asarray(t)))
  x = np.asarray(x, np.float64)
  score = -(x - alpha * MU) / (alpha**2 * SD**2 + sigma**2)
  return score, (x + sigma**2 * score) / alpha, -sigma * score


def _network(process, prediction, noise_input):
  """What a network fed `noise_input` and predicting `prediction` outputs, written out."""
  def net(x, n):
    if noise_input == "index":
      t = n / (process.N - 1)
    else:  # log σ of a VE SDE: t from σ = σ_min (σ_max/σ_min)^t
      t = jnp.log(jnp.exp(n) / process.sigma_min) / jnp.log(process.sigma_max / process.sigma_min)
    alpha, sigma = (jnp.reshape(v, (-1, 1)) for v in process.marginal_coef(t))
    score = -(x - alpha * MU) / (alpha**2 * SD**2 + sigma**2)
    eps, x0 = -sigma * score, (x + sigma**2 * score) / alpha
    return {"score": score, "eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[prediction]
  return net


CASES = [(objective, name, prediction) for objective, name in [("dsm", "vp"), ("dsm", "subvp"),
                                                      ("dsm", "ve"), ("ddpm", "chain")]
         for prediction in ("eps", "x0", "v", "score")
         if not (objective == "ddpm" and prediction == "score")]


@pytest.mark.parametrize("objective,name,prediction", CASES, ids=["-".join(c) for c in CASES])
def test_every_prediction_type_gives_the_exact_score_x0_and_eps(objective, name, prediction, x64):
  process = _process(name)
  model = denoiser.make(None, process, objective, mean_type=prediction)
  model = model.replace(net=_network(process, prediction, model.noise_input))
  x = 2.0 * jax.random.normal(jax.random.key(0), (5, 2), jnp.float64)
  t = jnp.asarray(T)
  score, x0, eps = _truth(process, x, T)
  pred = model.predict(x, t)
  np.testing.assert_allclose(model.score(x, t), score, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(pred.x0, x0, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(pred.eps, eps, rtol=1e-9, atol=1e-9)
  assert pred.var_out is None


def test_chain_steps_use_the_chains_own_coefficients(x64):
  """predict_step at step i feeds the integer i and uses α_i = √ᾱ_i, σ_i = √(1 − ᾱ_i); it
  equals predict at t_i = i/(N − 1), where the discrete VP process meets the chain."""
  seen = []
  model = denoiser.make(lambda x, n: seen.append(n.dtype) or 0.1 * x, CHAIN, "ddpm")
  x = jax.random.normal(jax.random.key(1), (3, 2), jnp.float64)
  i = jnp.array([0, 500, 999])
  by_step, by_time = model.predict_step(x, i), model.predict(x, i / 999.0)
  ab = schedules.alpha_bars_of(CHAIN.betas)[np.asarray(i)][:, None]
  np.testing.assert_allclose(by_step.x0, (x - np.sqrt(1 - ab) * 0.1 * x) / np.sqrt(ab),
                             rtol=1e-12)
  np.testing.assert_allclose(by_time.x0, by_step.x0, rtol=1e-6)  # exp(log √ᾱ) vs √ᾱ
  assert jnp.issubdtype(seen[0], jnp.integer) and jnp.issubdtype(seen[1], jnp.floating)
  with pytest.raises(ValueError, match="discrete chain"):
    denoiser.make(None, sde_lib.VPSDE(), "dsm").predict_step(x, i)


@pytest.mark.parametrize("objective", ["ncsn", "edm", "dsm"])
def test_noise_level_kinds_are_exact_at_times_and_at_sigmas(objective, x64):
  """NCSN (ε at log σ), EDM (the preconditioned F at c_noise) and VE score networks, through
  the exact networks of ddpm_jax.testing: x̂_0 and the score at times t and at σ(t) equal the
  closed form (to the float32 rounding of the networks' data parameters)."""
  process = sde_lib.VESDE(0.002, 80.0, 10)
  model = analytic.mixture_denoiser(process, MU[None], SD[None], objective=objective,
                                    prediction="score" if objective == "dsm" else "eps")
  x = 5.0 * jax.random.normal(jax.random.key(2), (5, 2), jnp.float64)
  score, x0, _ = _truth(process, x, T)
  sigma = process.marginal_coef(jnp.asarray(T))[1]
  np.testing.assert_allclose(model.score(x, jnp.asarray(T)), score, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(model.predict_at_sigma(x, sigma).x0, x0, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(model.score_at_sigma(x, sigma), score, rtol=1e-6, atol=1e-8)


def test_the_exact_networks_of_every_kind_and_prediction(x64):
  """ddpm_jax.testing's exact networks, read through their Denoisers, are the closed form."""
  x = 2.0 * jax.random.normal(jax.random.key(3), (5, 2), jnp.float64)
  for objective, name, prediction in CASES:
    process = _process(name)
    model = analytic.mixture_denoiser(process, MU[None], SD[None], objective=objective,
                                      prediction=prediction)
    np.testing.assert_allclose(model.score(x, jnp.asarray(T)), _truth(process, x, T)[0],
                               rtol=1e-6, atol=1e-8, err_msg=f"{objective} {name} {prediction}")


def test_clipping_clips_x0_and_keeps_eps_consistent(x64):
  """clip_x0: x̂_0 in [−1, 1] and ε̂ = (x − α x̂_0)/σ, so the score is that of the clipped x̂_0."""
  process = sde_lib.VPSDE()
  plain = analytic.mixture_denoiser(process, 3 * MU[None], SD[None], objective="dsm")
  clipped = plain.replace(clip_x0=True)
  x = 3.0 * jax.random.normal(jax.random.key(4), (5, 2), jnp.float64)
  t = jnp.asarray(T)
  alpha, sigma = (np.asarray(v)[:, None] for v in process.marginal_coef(t))
  x0 = np.clip(np.asarray(plain.x0(x, t)), -1, 1)
  assert np.abs(np.asarray(plain.x0(x, t))).max() > 1  # the clipping does something here
  np.testing.assert_allclose(clipped.x0(x, t), x0, rtol=1e-12)
  np.testing.assert_allclose(clipped.score(x, t), (alpha * x0 - x) / sigma**2, rtol=1e-9)


def test_bad_kinds_and_predictions():
  with pytest.raises(ValueError, match="Unknown objective 'gan'"):
    denoiser.make(None, CHAIN, "gan")
  with pytest.raises(ValueError, match="Unknown mean_type 'score'"):
    denoiser.make(None, CHAIN, "ddpm", mean_type="score")
  with pytest.raises(ValueError, match="Unknown mean_type 'noise'"):
    denoiser.make(None, sde_lib.VPSDE(), "dsm", mean_type="noise")
  with pytest.raises(ValueError, match="no noise-level input"):
    denoiser.make(None, CHAIN, "ddpm").predict_at_sigma(jnp.zeros((1, 2)), jnp.ones(1))
