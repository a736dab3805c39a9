"""SDEdit (sampling from data noised to t₀ = t_start·T) and inpainting in every sampler, on
exact models: closed-form mixtures and a correlated Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_classifier_guidance import CASES, MEANS, STD, WEIGHTS

from ddpm_jax.core import denoiser
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower
IDS = [c[0] for c in CASES]


def _fewer_steps(method, options, t_start):
  """DDIM from t_start has round(t_start (N − 1)) + 1 chain steps to take."""
  if method == "ddim":
    return {**options, "num_steps": min(options["num_steps"], round(t_start * 999) + 1)}
  return options


@pytest.mark.parametrize("method,process,objective,prediction,options", CASES, ids=IDS)
@pytest.mark.slow
def test_sdedit_returns_the_input_as_t0_goes_to_0_and_samples_the_model_at_T(
    method, process, objective, prediction, options):
  """The exact mixture model: from t₀ = 0.002·T the edit stays within the noise of σ(t₀) of
  the input (mean |Δ| < 0.025, where the data's scale is 0.7), from 0.5·T it moves the input
  (> 0.1); from t₀ = T the samples have the mixture's mean and standard deviations."""
  model = analytic.mixture_denoiser(process, MEANS, STD, WEIGHTS, objective=objective,
                                    prediction=prediction)
  n = 1500
  inputs = jnp.tile(jnp.array([[0.3, -0.2]]), (n, 1))
  moved = {}
  for t_start in (0.002, 0.5, 1.0):
    x, info = table.sample(method, model, jax.random.key(0), (n, 2), x_T=inputs,
                           t_start=t_start, **_fewer_steps(method, options, t_start))
    moved[t_start] = float(np.mean(np.abs(np.asarray(x) - np.asarray(inputs))))
  assert moved[0.002] < 0.025 and moved[0.5] > 0.1, moved
  w, mu = np.asarray(WEIGHTS), np.asarray(MEANS)
  mean = w @ mu
  std = np.sqrt(w @ (mu**2 + STD**2) - mean**2)
  x = np.asarray(x)
  assert np.all(np.abs(x.mean(0) - mean) < 4 * std / np.sqrt(n) + 0.01), (x.mean(0), mean)
  np.testing.assert_allclose(x.std(0), std, rtol=0.08)


def test_sdedit_costs_the_steps_it_takes():
  for method, process, _, _, options in CASES:
    full, half = (table.nfe(method, process, {**options, "t_start": t}) for t in (None, 0.5))
    if method in ("ddpm", "pc", "ald"):  # the steps below t₀ only
      assert half < full
    elif full is not None:  # the step-count samplers spread their steps over [ε, t₀]
      assert half == full


TWO_MODES = jnp.array([[0.6, 0.6], [-0.6, -0.6]])


@pytest.mark.parametrize("method,process,objective,prediction,options", CASES, ids=IDS)
@pytest.mark.slow
def test_inpainting_in_every_sampler_keeps_the_known_part_and_conditions_the_rest(
    method, process, objective, prediction, options):
  """Two modes ±(0.6, 0.6), s = 0.05: knowing x₀ = ±0.6, the exact conditional of x₁ is the
  mode's N(±0.6, 0.05²) (its responsibility is 1 − 1e-60). Replacement conditions the rest on
  the known part's noised values, so some samples take the other mode: measured 0–3% for the
  stochastic samplers (ddpm, pc, ald), 8–13% for the deterministic ones, which carry their
  first decision to the end."""
  model = analytic.mixture_denoiser(process, TWO_MODES, 0.05, objective=objective, prediction=prediction)
  n = 512
  data = jnp.concatenate([jnp.full((n // 2, 2), 0.6), jnp.full((n // 2, 2), -0.6)])
  data = data.at[:, 1].set(0.0)  # the unknown coordinate's value is irrelevant
  x, _ = table.sample(method, model, jax.random.key(1), (n, 2),
                      known=(data, jnp.array([1.0, 0.0])), **options)
  x = np.asarray(x)
  np.testing.assert_array_equal(x[:, 0], data[:, 0])  # exactly the data
  right = 0.95 if method in ("ddpm", "pc", "ald") else 0.8
  for half, sign in ((slice(0, n // 2), 1), (slice(n // 2, n), -1)):
    u = x[half, 1] * sign
    assert np.mean(u > 0) >= right
    np.testing.assert_allclose(np.median(u), 0.6, atol=0.05)  # measured 0.56–0.60
    assert np.std(u[u > 0]) < 0.1  # the mode (0.05) and a few late, half-way decisions


# A correlated Gaussian: Σ = R diag(0.45, 0.05) Rᵀ with R the 45° rotation, i.e. variances
# 0.25 and correlation 0.8; x₁ | x₀ = 0.4 ~ N(0.32, 0.3²).
ROTATION = jnp.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
EIGEN_STDS = jnp.sqrt(jnp.array([0.45, 0.05]))


def _correlated(process, objective, prediction):
  """The exact network of N(0, Σ): the diagonal model's in the rotated coordinates (its ε, x̂_0
  and score are equivariant under the rotation)."""
  inner = analytic.mixture_network(process, jnp.zeros((1, 2)), EIGEN_STDS[None], objective=objective,
                                   prediction=prediction)
  net = jax.tree_util.Partial(lambda inner, x, c: inner(x @ ROTATION, c) @ ROTATION.T, inner)
  return denoiser.make(net, process, objective, mean_type=prediction)


def test_inpainting_a_correlated_gaussian_by_langevin_reaches_the_conditional():
  """Annealed Langevin dynamics with the known coordinate fixed samples p(x₁ | x₀ = 0.4) =
  N(0.32, 0.3²) (20 steps per level: measured 0.314 and 0.306). Replacement alone, as in the
  other samplers, is approximate for correlated coordinates: the unknown part is conditioned
  on the noised known part at each level (measured means 0.12–0.20)."""
  n = 4000
  model = _correlated(sde_lib.VESDE(0.01, 5.0, N=100), "ncsn", "eps")
  data = jnp.tile(jnp.array([[0.4, 0.0]]), (n, 1))
  x, _ = table.sample("ald", model, jax.random.key(2), (n, 2), known=(data, jnp.array([1.0, 0.0])),
                      step_lr=2e-5, n_steps_each=20)
  x = np.asarray(x)
  np.testing.assert_array_equal(x[:, 0], np.float32(0.4))
  np.testing.assert_allclose(x[:, 1].mean(), 0.32, atol=0.02)
  np.testing.assert_allclose(x[:, 1].std(), 0.3, rtol=0.05)
