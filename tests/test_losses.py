"""Losses against closed forms: for Gaussian data the minimum of each L_simple target and the
VLB of the exact reverse process are formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ddpm_jax.core import chain as diffusion
from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.objectives import ddpm as losses
from ddpm_jax.testing import analytic

MU, SD, DIM = 0.1, 0.3, 4


@pytest.fixture(scope="module")
def sched():
  return schedules.make_schedule(schedules.beta_schedule("linear", 1000))


def _posterior_x0_var(ab):
  """Var(x_0 | x_t) = s²(1 − ᾱ) / (ᾱ s² + 1 − ᾱ) for x_0 ~ N(μ, s²)."""
  return SD**2 * (1 - ab) / (ab * SD**2 + 1 - ab)


@pytest.mark.parametrize("mean_type", diffusion.MEAN_TYPES)
def test_simple_loss_of_exact_model_is_the_bayes_error(sched, mean_type):
  """E‖target − E[target|x_t]‖² per dim, averaged over uniform t:
  Var(x_0|x_t) for x_0, Var(x_0|x_t)·ᾱ/(1−ᾱ) for ε, Var(x_0|x_t)/(1−ᾱ) for v."""
  eps_model = analytic.gaussian_eps_model(sched, jnp.full((DIM,), MU), SD)

  def model(x, t):
    alpha, sigma = (diffusion.extract(c, t, x) for c in (sched.sqrt_alpha_bars,
                                                          sched.sqrt_one_minus_alpha_bars))
    x0, eps = denoiser.convert("eps", eps_model(x, t), x, alpha, sigma)
    return diffusion.target(sched, mean_type, x0, t, eps)

  n = 100_000
  x0 = MU + SD * jax.random.normal(jax.random.key(0), (n, DIM))
  loss, metrics = jax.jit(lambda x, k: losses.diffusion_loss(model, sched, x, k, mean_type=mean_type))(
      x0, jax.random.split(jax.random.key(1), n))
  ab = np.cumprod(1 - schedules.beta_schedule("linear", 1000))
  v0 = _posterior_x0_var(ab)
  expected = {"x0": v0, "eps": v0 * ab / (1 - ab), "v": v0 / (1 - ab)}[mean_type]
  # Monte-Carlo error from the per-example losses themselves.
  se = float(jnp.std(metrics["per_example_loss"])) / np.sqrt(n)
  assert float(loss) == pytest.approx(expected.mean(), abs=5 * se)
  assert se < 0.02 * expected.mean()


def _exact_reverse_model(sched, eps_model):
  """ε̂ and the exact reverse variance β̃_t + c₁² Var(x_0|x_t), as a 'learned' output."""
  def model(x, t):
    ab = diffusion.extract(sched.alpha_bars, t, x)
    var = (diffusion.extract(sched.posterior_variance, t, x)
           + diffusion.extract(sched.posterior_mean_coef1, t, x)**2 * _posterior_x0_var(ab))
    return jnp.concatenate([eps_model(x, t), jnp.broadcast_to(jnp.log(var), x.shape)], -1)
  return model


def test_vlb_of_exact_reverse_process_matches_true_nll(sched):
  """For Gaussian data the reverse conditionals are Gaussian, so the VLB of the exact model is
  the 8-bit NLL up to the decoder's discretization gap; fixed variances give larger bounds."""
  n = 2000
  rng = np.random.default_rng(0)
  bins = np.clip(np.round((MU + SD * rng.normal(size=(n, DIM)) + 1) * 127.5), 0, 255).astype(int)
  x0 = jnp.asarray(bins / 127.5 - 1, jnp.float32)
  grid = np.linspace(-1, 1, 256)
  p_bin = stats.norm.cdf(grid + 1 / 255, MU, SD) - stats.norm.cdf(grid - 1 / 255, MU, SD)
  nll = (-np.log2(p_bin[bins])).mean(axis=1)  # bits/dim per example

  eps_model = analytic.gaussian_eps_model(sched, jnp.full((DIM,), MU), SD)
  process = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  bounds = {}
  for var_type, net in [("learned", _exact_reverse_model(sched, eps_model)),
                        ("fixed_large", eps_model), ("fixed_small", eps_model)]:
    model = denoiser.make(net, process, "ddpm", var_type=var_type)
    total, terms, prior = jax.jit(lambda x, k: losses.vlb_bpd(model, x, k))(  # noqa: B023
        x0, jax.random.key(1))
    assert terms.shape == (1000, n) and prior.shape == (n,)
    np.testing.assert_allclose(total, terms.sum(0) + prior, rtol=1e-5)
    gap = np.asarray(total) - nll
    bounds[var_type] = (gap.mean(), gap.std() / np.sqrt(n))
  gap, se = bounds["learned"]
  assert -4 * se < gap < 0.06, bounds  # measured: 0.035 bits/dim
  assert bounds["learned"][0] < bounds["fixed_large"][0] < bounds["fixed_small"][0]


def test_timestep_samplers():
  keys = lambda n: jax.random.split(jax.random.key(0), n)  # noqa: E731
  t, w = losses.sample_timesteps(keys(8), 1000, "antithetic")
  np.testing.assert_array_equal(t[:4] + t[4:], 999)
  assert np.all(w == 1.0)
  t, _ = losses.sample_timesteps(keys(100_000), 10, "uniform")
  counts = np.bincount(np.asarray(t), minlength=10)
  assert stats.chisquare(counts).pvalue > 1e-4
  with pytest.raises(ValueError, match="even batch"):
    losses.sample_timesteps(keys(7), 1000, "antithetic")
  with pytest.raises(ValueError, match="second_moment_probs"):
    losses.sample_timesteps(keys(8), 1000, "importance")
  with pytest.raises(ValueError, match="uniform"):
    losses.sample_timesteps(keys(8), 1000, "sobol")


def test_importance_sampling_is_unbiased():
  """E_{t~p}[w(t) f(t)] = mean_t f(t) for the weights 1/(T p_t)."""
  f = jnp.linspace(1.0, 30.0, 50)**2
  history = jnp.tile(f[:, None], (1, 10)) * 1.0
  probs = losses.second_moment_probs(history)
  assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
  assert float(probs[-1] / probs[0]) > 100  # follows √E[L²]
  t, w = losses.sample_timesteps(jax.random.split(jax.random.key(3), 400_000), 50, "importance", probs)
  estimate = jnp.mean(w * f[t])
  assert float(estimate) == pytest.approx(float(f.mean()), rel=5e-3)


def test_hybrid_loss_trains_variance_only_through_vlb(sched):
  """With the mean output frozen inside L_vlb, ∂L_hybrid/∂(mean params) = ∂L_simple/∂(mean params)."""
  def make_model(params):
    return lambda x, t: jnp.concatenate([params["a"] * x, jnp.tanh(params["b"]) * jnp.ones_like(x)], -1)

  params = {"a": jnp.array(0.3), "b": jnp.array(0.2)}
  x0 = jax.random.uniform(jax.random.key(0), (64, 3), minval=-1, maxval=1)
  keys = jax.random.split(jax.random.key(1), 64)

  def loss(p, loss_type):
    return losses.diffusion_loss(make_model(p), sched, x0, keys, loss_type=loss_type,
                                 var_type="learned_range")[0]

  g_hybrid = jax.grad(loss)(params, "hybrid")
  g_simple = jax.grad(loss)(params, "simple")
  g_vlb = jax.grad(loss)(params, "vlb")
  assert float(g_hybrid["a"]) == pytest.approx(float(g_simple["a"]), rel=1e-5)
  assert float(g_simple["b"]) == 0.0 and float(g_hybrid["b"]) != 0.0
  assert float(g_vlb["a"]) != 0.0  # the pure VLB trains the mean too
  # The VLB part is weighted by λ·T.
  _, m = losses.diffusion_loss(make_model(params), sched, x0, keys, loss_type="hybrid",
                               var_type="learned_range")
  _, m_vlb = losses.diffusion_loss(make_model(params), sched, x0, keys, loss_type="vlb",
                                   var_type="learned_range")
  assert float(m["vb"]) == pytest.approx(1e-3 * float(m_vlb["vb"]), rel=1e-5)


def test_bad_loss_options(sched):
  model = lambda x, t: x  # noqa: E731
  x0 = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="hybrid"):
    losses.diffusion_loss(model, sched, x0, jax.random.split(jax.random.key(0), 4), loss_type="l1")
  with pytest.raises(ValueError, match="learned_range"):
    losses.diffusion_loss(model, sched, x0, jax.random.split(jax.random.key(0), 4), loss_type="hybrid")


def _improved_ddpm_history(num_timesteps, per_term, ts, values):
  """improved DDPM's LossSecondMomentResampler bookkeeping, written out as its loop."""
  history = np.zeros((num_timesteps, per_term))
  counts = np.zeros(num_timesteps, int)
  for t, v in zip(ts, values):
    if counts[t] == per_term:
      history[t, :-1] = history[t, 1:]
      history[t, -1] = v
    else:
      history[t, counts[t]] = v
      counts[t] += 1
  return history, counts


def test_loss_history_is_improved_ddpms_bookkeeping():
  rng = np.random.default_rng(0)
  h = losses.empty_loss_history(6, per_timestep=4)
  ts, values = [], []
  for _ in range(5):  # batches with repeated timesteps, some rows overflowing
    t = rng.integers(0, 6, 12)
    v = rng.uniform(0, 3, 12).astype(np.float32)
    h = jax.jit(losses.update_loss_history)(h, jnp.asarray(t), jnp.asarray(v))
    ts += list(t)
    values += list(v)
    want, counts = _improved_ddpm_history(6, 4, ts, values)
    np.testing.assert_allclose(h["losses"], want, rtol=1e-6)
    np.testing.assert_array_equal(h["counts"], counts)
  # Uniform until every timestep holds 4 losses, then √E[L²] mixed with 1e-3 uniform.
  cold = losses.empty_loss_history(6, per_timestep=4)
  np.testing.assert_allclose(losses.history_probs(cold), np.full(6, 1 / 6))
  assert np.all(counts == 4)
  w = np.sqrt(np.mean(want**2, axis=-1))
  np.testing.assert_allclose(losses.history_probs(h), 0.999 * w / w.sum() + 1e-3 / 6, rtol=1e-5)
