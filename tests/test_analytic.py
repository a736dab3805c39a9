"""The closed-form denoisers used as ground truth, checked by quadrature, and mode coverage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ddpm_jax.core import schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower


def test_mixture_eps_equals_quadrature(x64):
  """E[ε | x_t] = (x_t − √ᾱ E[x_0 | x_t]) / √(1 − ᾱ), with E[x_0 | x_t] by quadrature."""
  s = schedules.make_schedule(schedules.beta_schedule("linear", 1000), dtype=jnp.float64)
  means, stds, w = np.array([-0.6, 0.2, 0.7]), np.array([0.1, 0.3, 0.05]), np.array([0.5, 0.2, 0.3])
  model = analytic.mixture_eps_model(s, means[:, None], stds[:, None], w)
  prior = lambda x0: sum(wk * stats.norm.pdf(x0, mk, sk) for wk, mk, sk in zip(w, means, stds))  # noqa: E731
  for t, xt in [(50, 0.65), (300, -0.2), (800, 1.3), (999, 0.0)]:
    ab = float(np.cumprod(1 - schedules.beta_schedule("linear", 1000))[t])
    lik = lambda x0: stats.norm.pdf(xt, np.sqrt(ab) * x0, np.sqrt(1 - ab))  # noqa: E731
    pts = list(means)
    z = integrate.quad(lambda x0: prior(x0) * lik(x0), -3, 3, points=pts, limit=400)[0]
    m = integrate.quad(lambda x0: x0 * prior(x0) * lik(x0), -3, 3, points=pts, limit=400)[0] / z
    expected = (xt - np.sqrt(ab) * m) / np.sqrt(1 - ab)
    got = model(jnp.array([[xt]]), jnp.array([t]))
    assert float(got[0, 0]) == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_mixture_mode_weights_are_reproduced(sampler):
  """A 2-D mixture with weights 0.7/0.2/0.1: the fraction of samples nearest each mode
  matches its weight within 4 binomial standard errors."""
  process = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  means = jnp.array([[0.6, 0.6], [-0.6, 0.3], [0.0, -0.7]])
  weights = np.array([0.7, 0.2, 0.1])
  model = analytic.mixture_denoiser(process, means, 0.08, weights, var_type="fixed_large",
                                    clip_x0=True)
  n = 4000
  options = {} if sampler == "ddpm" else {"num_steps": 100, "skip_type": "quadratic"}
  x, _ = table.sample(sampler, model, jax.random.key(0), (n, 2), **options)
  nearest = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(means)[None], axis=-1), 1)
  frac = np.bincount(nearest, minlength=3) / n
  np.testing.assert_array_less(np.abs(frac - weights), 4 * np.sqrt(weights * (1 - weights) / n))
  # Samples stay on the modes: the within-mode spread is the component std, not the gap.
  spread = np.asarray(x) - np.asarray(means)[nearest]
  assert np.all(np.abs(spread.std(0) - 0.08) < 0.02)
