"""DSM losses against closed forms for Gaussian data with the exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from ddpm_jax.core import schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.objectives import dsm
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

MU, SD, DIM, N = 0.2, 0.4, 4, 100_000


def _bayes_error(sde, t):
  """E‖σ s* + z‖²/D = 1 − σ²/(α² s² + σ²) for the exact score s* (per dim)."""
  a, s = [np.asarray(v, np.float64) for v in sde.marginal_coef(jnp.asarray(t))]
  return 1 - s**2 / (a**2 * SD**2 + s**2)


@pytest.mark.parametrize("name", sde_lib.SDE_NAMES)
def test_dsm_loss_of_exact_score_is_the_bayes_error(name):
  sde = sde_lib.make_sde(name)
  score = analytic.mixture_score_model(sde, jnp.full((1, DIM), MU), SD)
  x0 = MU + SD * jax.random.normal(jax.random.key(0), (N, DIM))
  loss, m = jax.jit(lambda x, k: dsm.dsm_loss(score, sde, x, k))(
      x0, jax.random.split(jax.random.key(1), N))
  expected = integrate.quad(lambda t: _bayes_error(sde, [t])[0], 1e-5, 1.0, limit=200)[0] / (1 - 1e-5)
  se = float(jnp.std(m["per_example_loss"])) / np.sqrt(N)
  assert float(loss) == pytest.approx(expected, abs=5 * se)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_importance_sampled_likelihood_weighting_is_unbiased(name):
  """Uniform t with weight g² and t ~ g²/σ² with weight Zσ² estimate the same objective."""
  sde = sde_lib.make_sde(name)
  score = analytic.mixture_score_model(sde, jnp.full((1, DIM), MU + 0.3), SD * 1.5)  # imperfect
  x0 = MU + SD * jax.random.normal(jax.random.key(0), (N, DIM))
  keys = jax.random.split(jax.random.key(2), N)
  run = jax.jit(lambda k, imp: dsm.dsm_loss(score, sde, x0, k, likelihood_weighting=True,
                                                     importance_sampling=imp), static_argnums=1)
  a, ma = run(keys, False)
  b, mb = run(keys, True)
  se = np.hypot(float(jnp.std(ma["per_example_loss"])), float(jnp.std(mb["per_example_loss"]))) / np.sqrt(N)
  assert float(a) == pytest.approx(float(b), abs=5 * se)
  assert float(jnp.std(mb["per_example_loss"])) < float(jnp.std(ma["per_example_loss"]))  # lower variance


def test_importance_t_inverse_cdf_matches_density():
  """The fraction of t below each probe equals ∫_ε^probe g²/σ² dt / Z by quadrature."""
  sde, eps = sde_lib.VPSDE(), 1e-5
  t, z = dsm.importance_t(sde, (jnp.arange(200_000) + 0.5) / 200_000, eps)
  rate = lambda u: float(sde.beta(u)) / float(sde.marginal_coef(jnp.asarray(u))[1])**2  # noqa: E731
  total = integrate.quad(rate, eps, 1.0, points=[1e-4, 1e-3, 1e-2, 0.1], limit=400)[0]
  assert float(z) == pytest.approx(total, rel=1e-3)
  for probe in (1e-4, 1e-3, 0.01, 0.1, 0.5):
    cdf = integrate.quad(rate, eps, probe, points=[p for p in (1e-4, 1e-3, 1e-2, 0.1) if p < probe],
                         limit=400)[0] / total
    assert float(jnp.mean(t <= probe)) == pytest.approx(cdf, abs=2e-3)


def test_ncsn_loss_of_exact_score_is_the_bayes_error():
  sigmas = schedules.geometric_sigmas(1.0, 0.01, 10)
  ve = sde_lib.VESDE(0.01, 1.0)
  score_t = analytic.mixture_score_model(ve, jnp.full((1, DIM), MU), SD)
  score = jax.tree_util.Partial(lambda s, x, sig: s(x, jnp.log(sig / 0.01) / jnp.log(100.0)), score_t)
  x0 = MU + SD * jax.random.normal(jax.random.key(0), (N, DIM))
  loss, m = dsm.ncsn_loss(score, sigmas, x0, jax.random.split(jax.random.key(1), N))
  expected = 0.5 * DIM * np.mean(1 - sigmas**2 / (SD**2 + sigmas**2))
  se = float(jnp.std(m["per_example_loss"])) / np.sqrt(N)
  assert float(loss) == pytest.approx(expected, abs=5 * se)


def test_bad_dsm_options():
  sde = sde_lib.SubVPSDE()
  score = analytic.mixture_score_model(sde, jnp.zeros((1, 2)), 1.0)
  keys = jax.random.split(jax.random.key(0), 4)
  with pytest.raises(ValueError, match="likelihood_weighting=True"):
    dsm.dsm_loss(score, sde, jnp.zeros((4, 2)), keys, importance_sampling=True)
  with pytest.raises(ValueError, match="sub-VP"):
    dsm.dsm_loss(score, sde, jnp.zeros((4, 2)), keys, importance_sampling=True,
                          likelihood_weighting=True)
  with pytest.raises(ValueError, match="mean"):
    dsm.dsm_loss(score, sde_lib.VPSDE(), jnp.zeros((4, 2)), keys, reduce="max")
