"""The noise-conditional classifier's objective against the Bayes classifier of a mixture.

For x_0 ~ Σ_k w_k N(μ_k, s²) with y the component, the best any classifier of y from x_t can
do is the exact responsibility r_y(x_t); its expected cross-entropy (the Bayes risk) is a
one-dimensional integral per level, computed here by quadrature.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.models.half_unet import HalfUNet
from ddpm_jax.objectives import classifier as objective
from ddpm_jax.testing import analytic

MEANS, STD, WEIGHTS = jnp.array([[0.5], [-0.5]]), 0.3, jnp.array([0.6, 0.4])
PROCESS = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))


def _bayes_cross_entropy_by_quadrature(process) -> float:
  """(1/N) Σ_i ∫ Σ_k w_k N(x; α_i μ_k, α_i² s² + σ_i²) (−log r_k(x)) dx."""
  ab = np.asarray(process.schedule().alpha_bars, np.float64)
  x = np.linspace(-6, 6, 4001)
  total = 0.0
  for a, s in zip(np.sqrt(ab), np.sqrt(1 - ab)):
    var = a**2 * STD**2 + s**2
    dens = np.stack([float(w) * np.exp(-0.5 * (x - a * float(m[0]))**2 / var)
                     / np.sqrt(2 * np.pi * var) for w, m in zip(WEIGHTS, MEANS)])
    resp = dens / dens.sum(0)
    total += np.sum(dens * -np.log(np.maximum(resp, 1e-300))) * (x[1] - x[0])
  return total / len(ab)


def _data(key, n):
  k1, k2 = jax.random.split(key)
  y = jax.random.categorical(k1, jnp.log(WEIGHTS), shape=(n,))
  return MEANS[y] + STD * jax.random.normal(k2, (n, 1)), y


def _probe():
  return denoiser.make(None, PROCESS, "ddpm")


def test_the_exact_classifiers_loss_is_the_bayes_cross_entropy():
  bayes = _bayes_cross_entropy_by_quadrature(PROCESS)
  probe = _probe()
  exact = analytic.mixture_classifier(PROCESS, MEANS, STD, WEIGHTS)
  x0, y = _data(jax.random.key(0), 200_000)
  keys = jax.random.split(jax.random.key(1), len(y))
  loss, metrics = jax.jit(lambda x0, y, k: objective.classifier_loss(
      exact, probe, objective.level_sampler(probe), x0, y, k))(x0, y, keys)
  se = float(jnp.std(metrics["per_example_loss"])) / np.sqrt(len(y))
  assert abs(float(loss) - bayes) < 4 * se, (float(loss), bayes, se)


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x, c):
    h = jnp.concatenate([x.reshape(x.shape[0], -1), c[:, None] / 1000.0], axis=1)
    for _ in range(2):
      h = nn.swish(nn.Dense(64)(h))
    return nn.Dense(2)(h)


@pytest.mark.slow
def test_training_reaches_the_bayes_cross_entropy():
  """A small MLP trained with the objective ends within 0.01 nats of the Bayes risk."""
  bayes = _bayes_cross_entropy_by_quadrature(PROCESS)
  probe, mlp = _probe(), _MLP()
  levels = objective.level_sampler(probe)
  params = mlp.init(jax.random.key(0), jnp.zeros((1, 1)), jnp.zeros((1,)))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(3e-3, 3000))
  opt = tx.init(params)

  def loss_of(params, key):
    x0, y = _data(jax.random.fold_in(key, 0), 1024)
    keys = jax.random.split(jax.random.fold_in(key, 1), 1024)
    net = lambda x, c: mlp.apply({"params": params}, x, c)  # noqa: E731
    return objective.classifier_loss(net, probe, levels, x0, y, keys)[0]

  @jax.jit
  def train(params, opt):
    def body(carry, i):
      params, opt = carry
      grads = jax.grad(loss_of)(params, jax.random.fold_in(jax.random.key(2), i))
      updates, opt = tx.update(grads, opt)
      return (optax.apply_updates(params, updates), opt), None
    return jax.lax.scan(body, (params, opt), jnp.arange(3000))[0]

  params, _ = train(params, opt)
  held_out = float(jnp.mean(jnp.stack([loss_of(params, jax.random.key(100 + i))
                                       for i in range(50)])))
  print(f"classifier loss {held_out:.4f} nats, Bayes {bayes:.4f}")
  assert bayes - 0.01 < held_out < bayes + 0.01, (held_out, bayes)


@pytest.mark.parametrize("trained_by,process", [
    ("ddpm", PROCESS), ("dsm", sde_lib.VPSDE()), ("dsm", sde_lib.VESDE(0.01, 50.0)),
    ("ncsn", sde_lib.VESDE(0.01, 50.0, 10)), ("edm", sde_lib.VESDE(0.002, 80.0))])
def test_levels_are_those_the_guided_model_trains_at(trained_by, process):
  probe = denoiser.make(None, process, trained_by)
  u = jnp.linspace(0.0, 0.999, 1000)
  noise_input, alpha, sigma = objective.level_sampler(probe, train_eps=1e-5)(u)
  if trained_by == "ddpm":  # the chain's steps, each as often, with its own α_i, σ_i
    np.testing.assert_array_equal(noise_input, np.arange(1000))
    np.testing.assert_allclose(alpha**2, PROCESS.schedule().alpha_bars, rtol=1e-5)
  elif trained_by == "dsm":  # t = ε + u (T − ε), fed as its Denoiser feeds the network
    t = 1e-5 + u * (1 - 1e-5)
    np.testing.assert_allclose(noise_input, probe.noise_input_at(t, sigma), rtol=1e-6)
    np.testing.assert_allclose(np.stack([alpha, sigma]), np.stack(process.marginal_coef(t)),
                               rtol=1e-6)
  elif trained_by == "ncsn":  # the L levels, each as often
    np.testing.assert_allclose(np.unique(np.asarray(sigma)), np.sort(process.discrete_sigmas()),
                               rtol=1e-5)
    assert np.all(np.bincount(np.searchsorted(np.sort(process.discrete_sigmas()),
                                              np.asarray(sigma) * (1 - 1e-6))) == 100)
  else:  # EDM's log-normal: ln σ at quantile u is P_mean + P_std Φ⁻¹(u)
    np.testing.assert_allclose(np.median(np.log(sigma)), -1.2, atol=0.01)
    np.testing.assert_allclose(np.log(sigma[250]), -1.2 + 1.2 * -0.6745, atol=0.01)
  if trained_by in ("ncsn", "edm"):
    np.testing.assert_array_equal(alpha, 1.0)


def test_accuracy_per_noise_quarter():
  """An 'oracle' that is right exactly where u < ½ scores 1, 1, 0, 0 over the quarters."""
  probe = _probe()
  keys = jax.random.split(jax.random.key(3), 4000)
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.split(k)[0]))(keys)
  y = jnp.zeros((4000,), jnp.int32)
  right = jnp.where(u < 0.5, 0, 1)

  def net(x, c):  # c is the step ⌊u N⌋: right below N/2
    return jax.nn.one_hot(jnp.where(c < 500, 0, 1), 2) * 10.0

  _, m = objective.classifier_loss(net, probe, objective.level_sampler(probe),
                                   jnp.zeros((4000, 1)), y, keys)
  np.testing.assert_allclose([m[f"accuracy_noise_q{b}"] for b in range(1, 5)], [1, 1, 0, 0])
  np.testing.assert_allclose(m["accuracy"], jnp.mean(right == 0), atol=1e-6)


@pytest.mark.usefixtures("cheap_compile")
def test_the_half_unet_is_the_unets_encoder_with_a_pooled_head():
  net = HalfUNet(num_classes=10, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
  params = net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,)))["params"]
  assert set(params) >= {"conv_in", "temb_dense0", "temb_dense1", "norm_out", "logits"}
  logits = net.apply({"params": params}, jax.random.normal(jax.random.key(1), (2, 8, 8, 1)),
                     jnp.array([3.0, 900.0]))
  assert logits.shape == (2, 10)
  assert float(jnp.max(jnp.abs(logits))) < 1e-4  # the head starts at ~0: p ≈ uniform
