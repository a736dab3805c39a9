"""core/chain.py (and the chain's conversions in core/denoiser.py) against independent answers:
Bayes' rule, numeric integrals, moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ddpm_jax.core import chain as diffusion
from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower


def _schedule(t=1000, name="linear"):
  return schedules.make_schedule(schedules.beta_schedule(name, t), dtype=jnp.float64)


def test_posterior_equals_bayes_rule(x64):
  """q(x_{t−1}|x_t,x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0): product of Gaussians in x_{t−1}."""
  s = _schedule()
  betas = np.asarray(s.betas)
  ab = np.cumprod(1 - betas)
  rng = np.random.default_rng(0)
  x0, xt = rng.normal(size=(2, 6, 3))
  for t in (1, 2, 10, 500, 999):
    prior_mean, prior_var = np.sqrt(ab[t - 1]) * x0, 1 - ab[t - 1]
    # q(x_t | x_{t-1}) as a function of x_{t-1}: precision α_t/β_t, mean x_t/√α_t.
    lik_prec, lik_mean = (1 - betas[t]) / betas[t], xt / np.sqrt(1 - betas[t])
    var = 1 / (1 / prior_var + lik_prec)
    mean = var * (prior_mean / prior_var + lik_prec * lik_mean)
    m, v, logv = diffusion.q_posterior(s, x0, xt, jnp.full((6,), t))
    np.testing.assert_allclose(m, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(v, np.broadcast_to(var, v.shape), rtol=1e-9)
    np.testing.assert_allclose(logv, np.log(var), rtol=1e-9)


def test_posterior_by_numeric_integration(x64):
  """The posterior's mean and variance by quadrature of the unnormalized density."""
  s = _schedule(50, "cosine")
  betas, ab = np.asarray(s.betas), np.asarray(s.alpha_bars)
  x0, xt, t = 0.4, -0.7, 20
  dens = lambda y: (stats.norm.pdf(xt, np.sqrt(1 - betas[t]) * y, np.sqrt(betas[t]))  # noqa: E731
                    * stats.norm.pdf(y, np.sqrt(ab[t - 1]) * x0, np.sqrt(1 - ab[t - 1])))
  z = integrate.quad(dens, -10, 10, points=[xt, x0], limit=200)[0]
  mean = integrate.quad(lambda y: y * dens(y), -10, 10, points=[xt, x0], limit=200)[0] / z
  var = integrate.quad(lambda y: (y - mean)**2 * dens(y), -10, 10, points=[xt, x0], limit=200)[0] / z
  m, v, _ = diffusion.q_posterior(s, jnp.array([[x0]]), jnp.array([[xt]]), jnp.array([t]))
  assert float(m[0, 0]) == pytest.approx(mean, rel=1e-7)
  assert float(v[0, 0]) == pytest.approx(var, rel=1e-7)


def test_q_sample_moments():
  s = schedules.make_schedule(schedules.beta_schedule("linear", 1000))
  x0 = jnp.full((200_000, 1), 0.8)
  t = jnp.full((200_000,), 300)
  xt = diffusion.q_sample(s, x0, t, jax.random.normal(jax.random.key(0), x0.shape))
  ab = float(np.cumprod(1 - schedules.beta_schedule("linear", 1000))[300])
  se = np.sqrt((1 - ab) / 200_000)
  assert float(xt.mean()) == pytest.approx(np.sqrt(ab) * 0.8, abs=5 * se)
  assert float(xt.var()) == pytest.approx(1 - ab, rel=5 * np.sqrt(2 / 200_000))


@pytest.mark.parametrize("mean_type", diffusion.MEAN_TYPES)
def test_parameterizations_round_trip(x64, mean_type):
  s = _schedule()
  rng = np.random.default_rng(1)
  x0, eps = rng.normal(size=(2, 5, 4))
  t = jnp.array([0, 1, 250, 700, 999])
  xt = diffusion.q_sample(s, x0, t, eps)
  output = diffusion.target(s, mean_type, x0, t, eps)
  alpha, sigma = (diffusion.extract(c, t, xt) for c in (s.sqrt_alpha_bars,
                                                         s.sqrt_one_minus_alpha_bars))
  x0_hat, eps_hat = denoiser.convert(mean_type, output, xt, alpha, sigma)
  np.testing.assert_allclose(x0_hat, x0, atol=1e-8)
  np.testing.assert_allclose(eps_hat, eps, atol=1e-8)


def test_clipped_x0_keeps_eps_consistent(x64):
  s = _schedule()
  t = jnp.array([10, 500])
  xt = jnp.array([[3.0, -0.2], [5.0, 0.1]])
  process = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  model = denoiser.make(lambda x, n: jnp.zeros_like(x) - 0.5, process, "ddpm", clip_x0=True)
  x0, eps, _ = model.predict_step(xt, t)
  assert float(jnp.abs(x0).max()) <= 1.0
  np.testing.assert_allclose(diffusion.q_sample(s, x0, t, eps), xt, atol=1e-10)


def test_p_mean_variance_variance_types(x64):
  s = _schedule(100)
  xt = jnp.ones((3, 2))
  t = jnp.array([0, 1, 99])
  x0 = jnp.full((3, 2), 0.25)
  small = diffusion.p_mean_variance(s, x0, None, xt, t, "fixed_small")
  large = diffusion.p_mean_variance(s, x0, None, xt, t, "fixed_large")
  betas = np.asarray(s.betas)
  np.testing.assert_allclose(np.exp(large.log_variance[:, 0]),
                             [s.posterior_variance[1], betas[1], betas[99]])
  np.testing.assert_allclose(np.exp(small.log_variance[1:, 0]), s.posterior_variance[t[1:]])
  np.testing.assert_allclose(np.exp(small.log_variance[0, 0]), s.posterior_variance[1])  # clipped
  # learned_range interpolates log β̃ (v = −1) and log β (v = +1); learned is log Σ itself.
  lo = diffusion.p_mean_variance(s, x0, -jnp.ones((3, 2)), xt, t, "learned_range")
  hi = diffusion.p_mean_variance(s, x0, jnp.ones((3, 2)), xt, t, "learned_range")
  np.testing.assert_allclose(lo.log_variance, small.log_variance)
  np.testing.assert_allclose(hi.log_variance[:, 0], np.log(betas[t]))
  learned = diffusion.p_mean_variance(s, x0, jnp.full((3, 2), -3.0), xt, t, "learned")
  np.testing.assert_allclose(learned.log_variance, -3.0)
  np.testing.assert_allclose(learned.mean, small.mean)
  # The mean is the posterior mean of q(x_{t−1} | x_t, x_0 = x̂_0), written out.
  ab = np.cumprod(1 - betas)
  ab_prev = np.append(1.0, ab[:-1])[t]
  coef1 = np.sqrt(ab_prev) * betas[t] / (1 - ab[t])
  coef2 = np.sqrt(1 - betas[t]) * (1 - ab_prev) / (1 - ab[t])
  np.testing.assert_allclose(small.mean[:, 0], coef1 * 0.25 + coef2 * 1.0,
                             rtol=1e-12)


def test_normal_kl_equals_numeric_integral(x64):
  for m1, v1, m2, v2 in [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.0, 2.0), (2.0, 0.01, 1.9, 0.02)]:
    p, q = stats.norm(m1, np.sqrt(v1)), stats.norm(m2, np.sqrt(v2))
    lo, hi = m1 - 12 * np.sqrt(v1), m1 + 12 * np.sqrt(v1)
    numeric = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi, limit=200)[0]
    kl = diffusion.normal_kl(m1, np.log(v1), m2, np.log(v2))
    assert float(kl) == pytest.approx(numeric, abs=1e-10)


def test_vlb_kl_term_equals_numeric_integral(x64):
  """L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) in bits by quadrature, for a model
  whose ε-prediction is off, under fixed_small and fixed_large variances."""
  s = _schedule(1000)
  betas, ab = np.asarray(s.betas), np.asarray(s.alpha_bars)
  x0, xt, t, eps_model = 0.3, 0.9, 400, 0.2
  ab_prev = ab[t - 1]
  q_var = betas[t] * (1 - ab_prev) / (1 - ab[t])
  q_mean = (np.sqrt(ab_prev) * betas[t] * x0 + np.sqrt(1 - betas[t]) * (1 - ab_prev) * xt) / (1 - ab[t])
  x0_model = (xt - np.sqrt(1 - ab[t]) * eps_model) / np.sqrt(ab[t])
  p_mean = (np.sqrt(ab_prev) * betas[t] * x0_model + np.sqrt(1 - betas[t]) * (1 - ab_prev) * xt) / (1 - ab[t])
  for var_type, p_var in [("fixed_small", q_var), ("fixed_large", betas[t])]:
    q, p = stats.norm(q_mean, np.sqrt(q_var)), stats.norm(p_mean, np.sqrt(p_var))
    sd = np.sqrt(q_var)
    numeric = integrate.quad(lambda y: q.pdf(y) * (q.logpdf(y) - p.logpdf(y)),
                             q_mean - 15 * sd, q_mean + 15 * sd, limit=200)[0] / np.log(2)
    tt = jnp.array([t])
    x0_hat, _ = denoiser.convert("eps", jnp.array([[eps_model]]), jnp.array([[xt]]),
                                 np.sqrt(ab[t]), np.sqrt(1 - ab[t]))
    pmv = diffusion.p_mean_variance(s, x0_hat, None, jnp.array([[xt]]), tt, var_type)
    term = diffusion.vlb_term_bpd(s, pmv, jnp.array([[x0]]), jnp.array([[xt]]), tt)
    assert float(term[0]) == pytest.approx(numeric, rel=1e-8)


def test_prior_term_equals_numeric_integral(x64):
  s = _schedule(1000)
  ab = float(s.alpha_bars[-1])
  x0 = 0.9
  q = stats.norm(np.sqrt(ab) * x0, np.sqrt(1 - ab))
  numeric = integrate.quad(lambda y: q.pdf(y) * (q.logpdf(y) - stats.norm.logpdf(y)), -12, 12)[0]
  assert float(diffusion.prior_bpd(s, jnp.array([[x0]]))[0]) == pytest.approx(numeric / np.log(2), rel=1e-6)


def test_discretized_decoder_sums_to_one(x64):
  grid = jnp.linspace(-1.0, 1.0, 256)
  for mean, log_scale in [(0.0, -3.0), (0.97, -5.0), (-1.2, -1.0), (0.3, 0.5), (0.0, -7.0)]:
    lp = diffusion.discretized_gaussian_log_likelihood(grid, jnp.full_like(grid, mean),
                                                       jnp.full_like(grid, log_scale))
    assert float(jnp.sum(jnp.exp(lp))) == pytest.approx(1.0, abs=1e-9)


def test_discretized_decoder_bins_match_exact_cdf(x64):
  """Interior bins are Φ-differences over [x − 1/255, x + 1/255]; the tanh Φ is within 3e-4."""
  grid = np.linspace(-1.0, 1.0, 256)
  mean, scale = 0.1, 0.05
  lp = diffusion.discretized_gaussian_log_likelihood(jnp.asarray(grid), jnp.full(256, mean),
                                                     jnp.full(256, np.log(scale)))
  exact = stats.norm.cdf(grid + 1 / 255, mean, scale) - stats.norm.cdf(grid - 1 / 255, mean, scale)
  exact[0] = stats.norm.cdf(grid[0] + 1 / 255, mean, scale)
  exact[-1] = 1 - stats.norm.cdf(grid[-1] - 1 / 255, mean, scale)
  np.testing.assert_allclose(np.exp(lp), exact, atol=1e-3)


def test_unknown_types_are_rejected():
  with pytest.raises(ValueError, match="mean_type 'score'.*eps"):
    diffusion.check_types("score", "fixed_small")
  with pytest.raises(ValueError, match="var_type 'big'.*fixed_large"):
    diffusion.check_types("eps", "big")
