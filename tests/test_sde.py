"""SDEs against their definitions: discretizations equal the DDPM and NCSN chains, the
marginals solve the moment ODEs, and score conversions are exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from ddpm_jax.core import schedules
from ddpm_jax.core import sde as sde_lib


def test_vp_discretization_is_the_ddpm_chain():
  vp = sde_lib.VPSDE()
  ddpm_betas = 1e-4 + np.arange(1000) * (0.02 - 1e-4) / 999  # DDPM: linear from 1e-4 to 0.02
  np.testing.assert_allclose(vp.discrete_betas(), ddpm_betas, rtol=1e-12)
  # β_i = β(t_i)/N on the grid t_i = i/(N−1) of the continuous β(t).
  np.testing.assert_allclose(vp.discrete_betas(), vp.beta(np.arange(1000) / 999) / 1000, rtol=1e-12)
  x = jnp.ones((3, 2))
  i = jnp.array([0, 500, 999])
  f, g = vp.discretize(x, i / 999.0)
  betas = ddpm_betas[np.asarray(i)]
  np.testing.assert_allclose(x + f, np.sqrt(1 - betas)[:, None] * np.ones((3, 2)), rtol=1e-6)
  np.testing.assert_allclose(g, np.sqrt(betas), rtol=1e-6)
  # The continuous α(t)² = exp(−∫β) tracks the discrete ᾱ_i = ∏(1 − β_i) to 2e-3; their log
  # ratio is Σ β_i²/2 + O(β³) ≤ 0.07 (measured 0.0701 at t = 1).
  ab = np.cumprod(1 - schedules.beta_schedule("linear", 1000))
  alpha, _ = vp.marginal_coef(jnp.asarray(np.arange(1000) / 999.0))
  np.testing.assert_allclose(np.asarray(alpha)**2, ab, atol=2e-3)
  assert np.abs(np.log(np.asarray(alpha, np.float64)**2 / ab)).max() < 0.071


def test_ve_discretization_is_the_ncsn_chain():
  ve = sde_lib.VESDE(0.01, 50.0, 232)
  # σ_i = σ_min (σ_max/σ_min)^{i/(N−1)}: the continuous σ(t) on the grid t_i = i/(N−1).
  np.testing.assert_allclose(ve.discrete_sigmas(), 0.01 * 5000.0**(np.arange(232) / 231), rtol=1e-12)
  sig = ve.discrete_sigmas()
  i = jnp.array([0, 1, 231])
  f, g = ve.discretize(jnp.ones((3, 1)), i / 231.0)
  assert float(jnp.abs(f).max()) == 0.0
  np.testing.assert_allclose(g**2, [sig[0]**2, sig[1]**2 - sig[0]**2, sig[231]**2 - sig[230]**2], rtol=1e-5)


@pytest.mark.parametrize("name", sde_lib.SDE_NAMES)
@pytest.mark.slow
def test_marginals_solve_the_moment_odes(name):
  """For dx = a(t) x dt + g dw: dm/dt = a m, dv/dt = 2 a v + g², m(0) = 1, v(0) = 0."""
  sde = sde_lib.make_sde(name)

  def a_and_g(t):
    drift, g = sde.sde(jnp.ones((1, 1)), jnp.array([t]))
    return float(drift[0, 0]), float(g[0])

  def rhs(t, y):
    a, g = a_and_g(t)
    return [a * y[0], 2 * a * y[1] + g**2]

  ts = [0.05, 0.3, 0.7, 1.0]
  sol = integrate.solve_ivp(rhs, (0, 1), [1.0, 0.0], t_eval=ts, rtol=1e-10, atol=1e-12)
  alpha, sigma = sde.marginal_coef(jnp.asarray(ts, jnp.float32))
  np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-4)
  # VE follows score_sde: σ(t) counts the σ_min already in x(0), so Var = σ(t)² − σ_min².
  offset = sde.sigma_min**2 if name == "ve" else 0.0
  np.testing.assert_allclose(np.asarray(sigma, np.float64)**2 - offset, sol.y[1], rtol=1e-4)


def test_discrete_vp_interpolates_its_chain_and_solves_its_moment_odes():
  """The discrete VP SDE of a 20-step cosine schedule: α(t_i) = √ᾱ_i at t_i = i/19, and its
  piecewise-constant β(t) carries the moments from t_0 (m = α(0), v = σ(0)²) to α(t), σ(t)²
  between the steps too."""
  betas = schedules.beta_schedule("cosine", 20)
  sde = sde_lib.DiscreteVPSDE(tuple(betas))
  alpha_bars = np.cumprod(1 - betas)
  alpha, sigma = sde.marginal_coef(jnp.asarray(np.arange(20) / 19, jnp.float32))
  np.testing.assert_allclose(alpha, np.sqrt(alpha_bars), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(sigma**2, 1 - alpha_bars, rtol=1e-4)

  coefficients = jax.jit(lambda t: sde.sde(jnp.ones((1, 1)), t[None]))

  def rhs(t, y):
    drift, g = coefficients(jnp.float32(t))
    a = float(drift[0, 0])
    return [a * y[0], 2 * a * y[1] + float(g[0])**2]

  ts = [0.1, 0.33, 0.77, 1.0]
  start = 1 - alpha_bars[0]
  sol = integrate.solve_ivp(rhs, (0, 1), [np.sqrt(alpha_bars[0]), start], t_eval=ts,
                            rtol=1e-10, atol=1e-12, max_step=1 / 19)
  alpha, sigma = sde.marginal_coef(jnp.asarray(ts, jnp.float32))
  np.testing.assert_allclose(alpha, sol.y[0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(sigma, np.float64)**2, sol.y[1], rtol=1e-4)


def test_prior_logp_and_bad_names():
  ve = sde_lib.VESDE()
  z = jnp.full((2, 3), 5.0)
  expected = -1.5 * np.log(2 * np.pi * 2500) - 0.5 * 75 / 2500
  np.testing.assert_allclose(sde_lib.prior_logp(ve, z), [expected] * 2, rtol=1e-6)
  with pytest.raises(ValueError, match="vp"):
    sde_lib.make_sde("vpp")
