"""EDM's preconditioning and loss against closed forms: unit-variance network input and target
for data of std σ_d (by Monte Carlo), the loss of the optimal denoiser of Gaussian data (by
quadrature over ln σ), and the score of the preconditioned denoiser on the VE SDE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from ddpm_jax.core import denoiser
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.objectives import edm
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

SIGMA_DATA = 0.5
MEAN, STD = np.array([0.3, -0.2, 0.1, 0.0]), np.array([0.8, 0.5, 0.3, 0.2])  # STD ≠ σ_d


@pytest.mark.parametrize("sigma", [0.002, 0.1, 0.5, 3.0, 80.0])
def test_network_input_and_target_have_unit_variance(sigma):
  """x_0 ~ N(0, σ_d²), x = x_0 + σ n: Var(c_in x) = 1 and Var((x_0 − c_skip x)/c_out) = 1
  (200,000 draws: within 2%), and λ c_out² = 1."""
  x0, n = SIGMA_DATA * np.random.default_rng(0).standard_normal((2, 200_000))
  n /= SIGMA_DATA
  c_skip, c_out, c_in, c_noise = map(float, denoiser.edm_coefficients(jnp.float32(sigma),
                                                                           SIGMA_DATA))
  x = x0 + sigma * n
  assert np.var(c_in * x) == pytest.approx(1, rel=0.02)
  assert np.var((x0 - c_skip * x) / c_out) == pytest.approx(1, rel=0.02)
  assert float(edm.loss_weight(jnp.float32(sigma), SIGMA_DATA)) * c_out**2 == \
      pytest.approx(1, rel=1e-5)
  assert c_noise == pytest.approx(np.log(sigma) / 4, rel=1e-5)


def _optimal_net(mean, std):
  """F with D(x; σ) = E[x_0 | x] = μ + s²/(s² + σ²) (x − μ) for x_0 ~ N(μ, diag s²): the
  network that inverts the preconditioning (σ = e^{4 c_noise}, x = x_in / c_in)."""
  def net(x_in, c_noise):
    sigma = jnp.exp(4 * c_noise)[:, None]
    c_skip, c_out, c_in, _ = denoiser.edm_coefficients(sigma, SIGMA_DATA)
    x = x_in / c_in
    best = mean + std**2 / (std**2 + sigma**2) * (x - mean)
    return (best - c_skip * x) / c_out
  return net


def _denoise(net):
  """D(x; σ) of a preconditioned network, through its Denoiser (objective "edm")."""
  model = denoiser.make(net, sde_lib.VESDE(0.002, 80.0), "edm", sigma_data=SIGMA_DATA)
  return lambda x, sigma: model.predict_at_sigma(x, sigma).x0


def test_the_optimal_denoisers_loss_equals_its_integral(x64):
  """E λ(σ) ‖D* − x_0‖² (mean over dims) = ∫ λ(σ) mean_d[s_d² σ² / (s_d² + σ²)] N(ln σ; P_mean,
  P_std²) d ln σ, by quadrature; the Monte-Carlo loss of 40,000 examples within 1.5%."""
  p_mean, p_std = -1.2, 1.2
  n = 40_000
  x0 = MEAN + STD * jax.random.normal(jax.random.key(0), (n, 4), jnp.float64)
  loss, metrics = edm.edm_loss(_denoise(_optimal_net(MEAN, STD)), x0,
                                          jax.random.split(jax.random.key(1), n),
                                          sigma_data=SIGMA_DATA, p_mean=p_mean, p_std=p_std)

  def integrand(log_sigma):
    sigma = np.exp(log_sigma)
    lam = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA)**2
    return lam * np.mean(STD**2 * sigma**2 / (STD**2 + sigma**2)) * \
        stats.norm.pdf(log_sigma, p_mean, p_std)

  expected = integrate.quad(integrand, p_mean - 12 * p_std, p_mean + 12 * p_std)[0]
  assert float(loss) == pytest.approx(expected, rel=0.015)
  log_sigma = np.asarray(metrics["t"])
  assert log_sigma.mean() == pytest.approx(p_mean, abs=0.03)
  assert log_sigma.std() == pytest.approx(p_std, rel=0.02)
  # Data of std σ_d: λ(σ) σ_d² σ² / (σ_d² + σ²) = 1 at every σ, so the optimal loss is 1.
  x0 = SIGMA_DATA * jax.random.normal(jax.random.key(2), (n, 4), jnp.float64)
  loss, _ = edm.edm_loss(_denoise(_optimal_net(0.0, SIGMA_DATA)), x0, jax.random.split(
      jax.random.key(3), n), sigma_data=SIGMA_DATA)
  assert float(loss) == pytest.approx(1, rel=0.015)


def test_the_preconditioned_score_is_the_exact_ve_score(x64):
  """(D*(x; σ(t)) − x)/σ(t)² on the VE SDE of EDM's σ range equals the Gaussian data's exact
  score at every t."""
  sde = sde_lib.VESDE(0.002, 80.0)
  model = denoiser.make(_optimal_net(MEAN, STD), sde, "edm", sigma_data=SIGMA_DATA)
  exact = analytic.mixture_score_model(sde, MEAN[None], STD[None])
  x = 3.0 * jax.random.normal(jax.random.key(0), (6, 4), jnp.float64)
  t = jnp.array([1e-3, 0.1, 0.3, 0.5, 0.8, 1.0])
  np.testing.assert_allclose(model.score(x, t), exact(x, t), rtol=1e-6, atol=1e-8)
