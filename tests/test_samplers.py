"""DDPM and DDIM samplers driven by the exact ε-model of Gaussian data.

For x_0 ~ N(μ, diag s²) the exact model makes every sampler step an affine map of x plus
Gaussian noise, so the exact mean and variance of the samples of the *discrete* process are a
float64 recursion (written here independently of the library). Samples must match that within
Monte-Carlo error; with many steps the recursion itself reaches (μ, s²).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.infra import parallel
from ddpm_jax.samplers import ancestral, ddim, table
from ddpm_jax.testing import analytic

MU = np.array([0.5, -0.3, 0.1, 0.0])
SD = np.array([0.3, 0.2, 0.5, 1.0])
N = 8000
BETAS = schedules.beta_schedule("linear", 1000)


PROCESS = sde_lib.DiscreteVPSDE(tuple(BETAS))


@pytest.fixture(scope="module")
def model():
  """The exact ε-network of N(MU, diag SD²) on the chain, as its Denoiser."""
  return analytic.mixture_denoiser(PROCESS, MU[None], SD[None])


def _sample(method, model, key, shape, **options):
  return table.sample(method, model, key, shape, **options)[0]


def _affine_step(ab, x_coef, e_coef):
  """(A, B) of x ↦ x_coef·x̂_0(x) + e_coef·ε̂(x) for the exact model at level ᾱ = ab, where
  ε̂(x) = k(x − √ᾱ μ), k = √(1−ᾱ)/(ᾱ s² + 1 − ᾱ) and x̂_0(x) = (x − √(1−ᾱ) ε̂(x))/√ᾱ."""
  k = np.sqrt(1 - ab) / (ab * SD**2 + 1 - ab)
  a = x_coef * (1 - np.sqrt(1 - ab) * k) / np.sqrt(ab) + e_coef * k
  b = (x_coef * np.sqrt(1 - ab) / np.sqrt(ab) - e_coef) * k * np.sqrt(ab) * MU
  return a, b


def ddim_moments(timesteps, eta):
  ab_all = np.cumprod(1 - BETAS)
  m, v = np.zeros(4), np.ones(4)
  seq = list(timesteps)[::-1]
  for t, t_prev in zip(seq, seq[1:] + [-1]):
    ab, ab_p = ab_all[t], (ab_all[t_prev] if t_prev >= 0 else 1.0)
    sigma2 = eta**2 * (1 - ab_p) / (1 - ab) * (1 - ab / ab_p)
    a, b = _affine_step(ab, np.sqrt(ab_p), np.sqrt(1 - ab_p - sigma2))
    m, v = a * m + b, a**2 * v + sigma2
  return m, v


def ddpm_moments(var_type):
  ab_all = np.cumprod(1 - BETAS)
  m, v = np.zeros(4), np.ones(4)
  for t in range(999, -1, -1):
    ab, ab_p = ab_all[t], (ab_all[t - 1] if t else 1.0)
    coef1 = np.sqrt(ab_p) * BETAS[t] / (1 - ab)
    coef2 = np.sqrt(1 - BETAS[t]) * (1 - ab_p) / (1 - ab)
    # x_{t−1} mean = coef1 x̂_0 + coef2 x, and x = √ᾱ x̂_0 + √(1−ᾱ) ε̂.
    a, b = _affine_step(ab, coef1 + coef2 * np.sqrt(ab), coef2 * np.sqrt(1 - ab))
    small = BETAS[t] * (1 - ab_p) / (1 - ab)
    var = small if var_type == "fixed_small" else (BETAS[t] if t else BETAS[1] * (1 - ab_all[0]) / (1 - ab_all[1]))
    m, v = a * m + b, a**2 * v + (var if t else 0.0)
  return m, v


def _check_moments(x, mean, var, label):
  x = np.asarray(x, np.float64)
  se_mean = np.sqrt(var / N)
  se_var = var * np.sqrt(2 / N)
  assert np.all(np.abs(x.mean(0) - mean) < 4.5 * se_mean), (label, x.mean(0), mean)
  assert np.all(np.abs(x.var(0) - var) < 4.5 * se_var), (label, x.var(0), var)


@pytest.mark.parametrize("var_type,bias", [("fixed_small", 0.04), ("fixed_large", 0.01)])
@pytest.mark.slow
def test_ddpm_ancestral_reproduces_gaussian_data(model, var_type, bias):
  x = _sample("ddpm", model.replace(var_type=var_type), jax.random.key(0), (N, 4))
  m, v = ddpm_moments(var_type)
  _check_moments(x, m, v, var_type)
  # The chain's own bias on s² (exact recursion): −3.7% with β̃, +0.9% with β at T = 1000.
  np.testing.assert_allclose(m, MU, atol=1e-5)
  np.testing.assert_allclose(v, SD**2, rtol=bias)


# Largest |Var/s² − 1| of the discrete process (first-order in the step): the recursion's values
# are −1.5% (η=0) and −3.7% (η=1) at 1000 steps; −7.6% and −16% at 50 quadratic steps;
# −22% at 50 uniform steps, where the few steps at low noise undershoot most.
@pytest.mark.parametrize("eta,num_steps,skip_type,bias", [
    (0.0, 1000, "uniform", 0.02), (1.0, 1000, "uniform", 0.04),
    (0.0, 50, "quadratic", 0.08), (1.0, 50, "quadratic", 0.16), (0.0, 50, "uniform", 0.25)])
@pytest.mark.slow
def test_ddim_reproduces_gaussian_data(model, eta, num_steps, skip_type, bias):
  x = _sample("ddim", model, jax.random.key(1), (N, 4), num_steps=num_steps, eta=eta,
              skip_type=skip_type)
  m, v = ddim_moments(ddim.ddim_timesteps(1000, num_steps, skip_type), eta)
  _check_moments(x, m, v, (eta, num_steps, skip_type))
  np.testing.assert_allclose(m, MU, atol=0.006)
  np.testing.assert_allclose(v, SD**2, rtol=bias)


def test_ddim_eta1_full_schedule_is_ddpm_with_posterior_variance(x64):
  """Step by step: the η = 1 DDIM update on consecutive timesteps equals the ancestral step
  with σ² = β̃_t, for any network output and the same noise."""
  s = schedules.make_schedule(BETAS, dtype=jnp.float64)
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(3, 3)))
  net = lambda x, t: jnp.tanh(x @ w) * (1 + t[:, None] / 1000.0)  # noqa: E731
  for clip in (False, True):
    model = denoiser.make(net, PROCESS, "ddpm", clip_x0=clip)
    for t in (999, 600, 100, 1, 0):
      x = jnp.asarray(rng.normal(size=(16, 3)) * 2)
      z = jnp.asarray(rng.normal(size=(16, 3)))
      a, a_x0 = ddim.ddim_step(model, s, x, t, t - 1, z, eta=1.0)
      b, b_x0 = ancestral.ancestral_step(model, s, x, t, z)
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
      np.testing.assert_allclose(a_x0, b_x0, rtol=1e-12)


def test_ddim_eta1_and_ddpm_give_the_same_samples():
  mix = analytic.mixture_denoiser(PROCESS, jnp.array([[0.6, 0.6], [-0.5, 0.2]]), 0.1,
                                  clip_x0=True)
  a = _sample("ddim", mix, jax.random.key(4), (64, 2), num_steps=1000, eta=1.0)
  b = _sample("ddpm", mix, jax.random.key(4), (64, 2))
  np.testing.assert_allclose(a, b, atol=2e-4)  # float32 over 1000 steps; exact in float64 above


def test_ddim_inversion_regenerates_x0(model):
  x0 = jnp.asarray(MU + SD * np.random.default_rng(5).normal(size=(512, 4)), jnp.float32)
  for num_steps, tol in [(1000, 0.01), (100, 0.1)]:
    z = ddim.ddim_encode(model.replace(clip_x0=True), x0, num_steps=num_steps)  # never clips
    np.testing.assert_allclose(np.std(np.asarray(z), 0), 1.0, atol=0.12)  # x_T ≈ N(0, I)
    x = _sample("ddim", model, jax.random.key(9), x0.shape, num_steps=num_steps, x_T=z)
    assert float(jnp.max(jnp.abs(x - x0))) < tol, num_steps


def test_samples_do_not_depend_on_device_count():
  mix = analytic.mixture_denoiser(PROCESS, jnp.array([[0.6, 0.6, 0.0], [-0.5, 0.2, 0.1]]), 0.2,
                                  var_type="fixed_large")
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  for method, options in (("ddpm", {}), ("ddim", {"num_steps": 50, "eta": 0.5})):
    one = _sample(method, mix, jax.random.key(3), (64, 3), **options)
    eight = _sample(method, mix, jax.random.key(3), (64, 3), mesh=mesh, **options)
    assert eight.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_allclose(one, eight, atol=1e-4)  # measured ≤ 2e-5: reassociation only
    assert float(jnp.std(one)) > 0.1
  with pytest.raises(ValueError, match="multiple of 8"):
    _sample("ddpm", mix, jax.random.key(3), (12, 3), mesh=mesh)


def test_recorded_trajectory(model):
  x, info = table.sample("ddpm", model, jax.random.key(2), (16, 4), record_steps=(999, 500, 0))
  rec = info["records"]
  assert rec["x"].shape == (16, 3, 4) and rec["x0"].shape == (16, 3, 4)
  x_T = jax.vmap(lambda k: jax.random.normal(jax.random.split(k)[0], (4,)))(
      jax.random.split(jax.random.key(2), 16))
  np.testing.assert_array_equal(rec["x"][:, 0], x_T)
  np.testing.assert_allclose(rec["x0"][:, 2], x, atol=1e-6)  # the last step returns x̂_0
  # x̂_0 at t = 500 is E[x_0 | x_500], which lies between μ and x_500/√ᾱ.
  assert float(jnp.abs(rec["x0"][:, 1]).max()) < 5
  x, info = table.sample("ddim", model, jax.random.key(2), (16, 4), num_steps=10,
                         record_steps=(900, 0))
  np.testing.assert_allclose(info["records"]["x0"][:, 1], x, atol=1e-6)
  assert info["nfe"] == 10


def test_learned_variance_output_is_split(model):
  both = jax.tree_util.Partial(lambda m, x, t: jnp.concatenate([m(x, t), jnp.zeros_like(x)], -1),
                               model.net)
  learned = model.replace(net=both, var_type="learned_range")
  a = _sample("ddim", learned, jax.random.key(0), (8, 4), num_steps=20)
  b = _sample("ddim", model, jax.random.key(0), (8, 4), num_steps=20)
  np.testing.assert_allclose(a, b, atol=1e-6)
  c = _sample("ddpm", learned, jax.random.key(0), (8, 4))
  assert c.shape == (8, 4) and bool(jnp.all(jnp.isfinite(c)))


def test_timestep_subsequences():
  assert ddim.ddim_timesteps(1000, 50)[:3] == (0, 20, 40) and len(ddim.ddim_timesteps(1000, 50)) == 50
  quad = ddim.ddim_timesteps(1000, 50, "quadratic")
  assert quad[:6] == (0, 1, 2, 3, 5, 8) and quad[-1] == 800 and np.all(np.diff(quad) > 0)
  assert ddim.ddim_timesteps(1000, 100, "quadratic")[-1] == 800
  trailing = ddim.ddim_timesteps(1000, 50, "trailing")
  assert trailing[-1] == 999 and len(trailing) == 50
  assert ddim.ddim_timesteps(1000, 1000) == tuple(range(1000))
  with pytest.raises(ValueError, match=r"num_steps must be in \[1, 1000\]"):
    ddim.ddim_timesteps(1000, 0)
  with pytest.raises(ValueError, match="uniform"):
    ddim.ddim_timesteps(1000, 50, "log")
  assert ddim.ddim_timesteps(10, 10, "quadratic") == tuple(range(10))


def test_bad_sampler_arguments(model):
  with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
    _sample("ddim", model, jax.random.key(0), (4, 4), eta=1.5)
  with pytest.raises(ValueError, match="strictly increasing"):
    _sample("ddim", model, jax.random.key(0), (4, 4), timesteps=(5, 3))
  with pytest.raises(ValueError, match="var_type"):
    denoiser.make(model.net, PROCESS, "ddpm", var_type="small")
  with pytest.raises(ValueError, match="VPSDE has no discrete chain"):
    ddim.ddim_loop(sde_lib.VPSDE(), (4,))
  with pytest.raises(ValueError, match="Unknown sampler 'plms'"):
    _sample("plms", model, jax.random.key(0), (4, 4))


def test_slerp():
  rng = np.random.default_rng(0)
  z0, z1 = jnp.asarray(rng.normal(size=(2, 3, 8, 8)))
  np.testing.assert_allclose(ddim.slerp(z0, z1, 0.0), z0, atol=1e-5)
  np.testing.assert_allclose(ddim.slerp(z0, z1, 1.0), z1, atol=1e-5)
  # Orthonormal endpoints stay on the unit circle at angle α·π/2.
  e0, e1 = jnp.eye(4)[None, 0], jnp.eye(4)[None, 1]
  mid = ddim.slerp(e0, e1, 0.3)
  np.testing.assert_allclose(mid, [[np.cos(0.3 * np.pi / 2), np.sin(0.3 * np.pi / 2), 0, 0]], atol=1e-6)
