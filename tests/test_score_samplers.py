"""Score-based samplers and the exact likelihood, driven by exact scores.

Data are N(μ, diag s²) tiled to 64 dimensions (so the snr-based Langevin step, which uses
norms over the example, behaves as on images), or a 2-D Gaussian mixture.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ddpm_jax.core import sde as sde_lib
from ddpm_jax.infra import parallel
from ddpm_jax.samplers import likelihood, table
from ddpm_jax.testing import analytic

MU = np.tile([0.5, -0.3, 0.1, 0.0], 16)
SD = np.tile([0.3, 0.2, 0.5, 1.0], 16)
N = 1000


def _check(x, std_bias, label):
  """Per-dim means within 4.5 s.e.; per-dim stds within 4.5 s.e. plus the stated relative
  bias of the discretized sampler (averaged over the 16 copies of each of the 4 dims)."""
  x = np.asarray(x, np.float64)
  mean_err = np.abs(x.mean(0) - MU) / (SD / np.sqrt(N))
  assert mean_err.max() < 4.5, (label, mean_err.max())
  rel = (x.std(0) / SD).reshape(16, 4).mean(0) - 1
  assert np.all(np.abs(rel) < std_bias + 4.5 / np.sqrt(2 * N * 16)), (label, rel)


def _exact(sde, means, stds, weights=None, **options):
  """The exact score network of the mixture on `sde`, as its Denoiser."""
  return analytic.mixture_denoiser(sde, means, stds, weights, objective="dsm", prediction="score",
                                   **options)


CASES = [  # (sde, predictor, corrector, snr, measured |std/s − 1| bound)
    ("vp", "euler_maruyama", "none", 0.0, 0.02),
    ("vp", "reverse_diffusion", "none", 0.0, 0.02),
    ("vp", "ancestral", "none", 0.0, 0.02),
    ("vp", "reverse_diffusion", "langevin", 0.01, 0.03),
    ("vp", "euler_maruyama", "ald", 0.01, 0.03),
    ("subvp", "euler_maruyama", "none", 0.0, 0.02),
    ("subvp", "euler_maruyama", "langevin", 0.01, 0.03),
    ("ve", "euler_maruyama", "none", 0.0, 0.03),
    ("ve", "reverse_diffusion", "none", 0.0, 0.03),
    ("ve", "ancestral", "none", 0.0, 0.03),
    # Unadjusted Langevin inflates the variance by O(snr²), most in the narrowest dims.
    ("ve", "reverse_diffusion", "langevin", 0.16, 0.10),
    ("ve", "euler_maruyama", "ald", 0.16, 0.03),
    ("ve", "none", "ald", 0.16, 0.12),
]


@pytest.mark.parametrize("name,predictor,corrector,snr,bias", CASES)
@pytest.mark.slow
def test_pc_samplers_reproduce_gaussian_data(name, predictor, corrector, snr, bias):
  sde = sde_lib.make_sde(name)
  x, info = table.sample("pc", _exact(sde, MU[None], SD[None]), jax.random.key(1), (N, 64),
                         predictor=predictor, corrector=corrector, snr=snr)
  _check(x, bias, (name, predictor, corrector))
  assert info["nfe"] == 1000 * ((predictor != "none") + (corrector != "none"))


@pytest.mark.parametrize("name", sde_lib.SDE_NAMES)
@pytest.mark.slow
def test_probability_flow_ode_reproduces_gaussian_data(name):
  sde = sde_lib.make_sde(name)
  x, info = table.sample("ode", _exact(sde, MU[None], SD[None]), jax.random.key(2), (N, 64),
                         rtol=1e-4, atol=1e-4)
  _check(x, 0.01, name)
  assert 20 < info["nfe"] < 500


def test_fixed_step_ode_solvers():
  sde = sde_lib.VPSDE()
  for solver, steps in (("euler", 500), ("heun", 100)):
    x, info = table.sample("ode", _exact(sde, MU[None], SD[None]), jax.random.key(3), (N, 64),
                           solver=solver, num_steps=steps)
    _check(x, 0.03, solver)
    assert info["nfe"] == steps * (1 if solver == "euler" else 2) + 1  # + the denoising


@pytest.mark.slow
def test_annealed_langevin_reproduces_gaussian_data():
  """NCSN's sampler over 100 geometric levels from 50 to 0.01, the exact NCSN network."""
  levels = sde_lib.VESDE(0.01, 50.0, 100)
  model = analytic.mixture_denoiser(levels, MU[None], SD[None], objective="ncsn")
  x, info = table.sample("ald", model, jax.random.key(4), (N, 64), step_lr=2e-5,
                         n_steps_each=100)
  _check(x, 0.02, "ald")
  assert info["nfe"] == 100 * 100 + 1
  with pytest.raises(ValueError, match="noise levels of a VE SDE, not a VPSDE"):
    table.get("ald").build(sde_lib.VPSDE(), (64,))


@pytest.mark.parametrize("method", ["pc", "ode"])
def test_mixture_mode_weights(method):
  means = jnp.array([[0.6, 0.6], [-0.6, 0.3], [0.0, -0.7]])
  weights = np.array([0.7, 0.2, 0.1])
  sde = sde_lib.VESDE(0.01, 5.0)
  model = _exact(sde, means, 0.08, weights)
  n = 4000
  options = {"corrector": "none"} if method == "pc" else {}
  x, _ = table.sample(method, model, jax.random.key(5), (n, 2), **options)
  nearest = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(means)[None], axis=-1), 1)
  frac = np.bincount(nearest, minlength=3) / n
  np.testing.assert_array_less(np.abs(frac - weights), 4 * np.sqrt(weights * (1 - weights) / n))


def test_samples_do_not_depend_on_device_count():
  model = _exact(sde_lib.VESDE(), MU[None], SD[None])
  one, _ = table.sample("pc", model, jax.random.key(6), (16, 64))
  eight, _ = table.sample("pc", model, jax.random.key(6), (16, 64), mesh=parallel.make_mesh())
  np.testing.assert_allclose(one, eight, atol=1e-4)


@pytest.mark.parametrize("name", sde_lib.SDE_NAMES)
def test_ode_nll_equals_the_exact_gaussian_nll(name):
  """log p of held-out points by the PF-ODE with the exact score vs log N(x; μ, s²):
  within 0.01 nats/dim (measured ≤ 4e-5)."""
  mu, sd = MU[:4], SD[:4]
  x = mu + sd * np.random.default_rng(0).normal(size=(256, 4))
  exact = stats.norm.logpdf(x, mu, sd).sum(1)
  sde = sde_lib.make_sde(name)
  lp, nfe = likelihood.ode_log_likelihood(_exact(sde, mu[None], sd[None]),
                                          jnp.asarray(x, jnp.float32), jax.random.key(0),
                                          method="exact")
  assert abs(float(np.mean(np.asarray(lp) - exact)) / 4) < 0.01
  assert float(np.max(np.abs(np.asarray(lp) - exact))) / 4 < 0.01


@pytest.mark.parametrize("method", ["rademacher", "gaussian"])
def test_hutchinson_estimator_is_unbiased(method):
  """Mean of zᵀ J z over many probes = tr J for a map with a full Jacobian."""
  w = jax.random.normal(jax.random.key(0), (6, 6))
  fn = lambda v: jnp.tanh(w @ v) + 0.3 * v**2  # noqa: E731
  x = jax.random.normal(jax.random.key(1), (6,))
  exact = likelihood.divergence(fn, x, None, "exact")
  probes = jax.vmap(lambda k: likelihood.hutchinson_probe(k, (6,), method))(
      jax.random.split(jax.random.key(2), 20_000))
  est = jax.vmap(lambda z: likelihood.divergence(fn, x, z, method))(probes)
  assert abs(float(est.mean() - exact)) < 4 * float(est.std()) / np.sqrt(20_000)
  assert float(est.std()) > 0.1  # the estimator is really stochastic here


def test_bits_per_dim_of_dequantized_data():
  """bits/dim of uniform data on [−1, 1] (log p = −D log 2) is exactly 8."""
  assert np.allclose(likelihood.bits_per_dim(jnp.full((3,), -10 * np.log(2.0)), 10), 8.0)
  deq = likelihood.dequantize(jax.random.key(0), jnp.full((1000, 1), 1.0))
  assert float(deq.min()) >= 127 / 128 and float(deq.max()) < 1.0
