"""Inpainting, colorization and classifier-free guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import analytic, parallel, schedules
from ddpm_jax import sde as sde_lib
from ddpm_jax.samplers import ddim, guidance, pc


def test_inpainting_keeps_known_pixels_and_conditions_the_rest():
  """Two modes ±(0.6, 0.6): knowing x₀ = 0.6 puts x₁ on the + mode, x₀ = −0.6 on the − mode."""
  means = jnp.array([[0.6, 0.6], [-0.6, -0.6]])
  sde = sde_lib.VESDE(0.01, 5.0)
  score = analytic.mixture_score_model(sde, means, 0.05)
  n = 512
  data = jnp.concatenate([jnp.full((n // 2, 2), 0.6), jnp.full((n // 2, 2), -0.6)])
  data = data.at[:, 1].set(0.0)  # the unknown coordinate's value is irrelevant
  mask = jnp.array([1.0, 0.0])
  x = pc.pc_inpaint(score, sde, jax.random.key(0), data, mask, corrector="none",
                    mesh=parallel.make_mesh())
  np.testing.assert_array_equal(x[:, 0], data[:, 0])  # exactly the data
  np.testing.assert_allclose(np.mean(np.asarray(x[:n // 2, 1])), 0.6, atol=0.02)
  np.testing.assert_allclose(np.mean(np.asarray(x[n // 2:, 1])), -0.6, atol=0.02)
  assert float(jnp.std(x[:n // 2, 1])) < 0.1


def test_colorization_keeps_the_grey_level():
  rng = np.random.default_rng(0)
  shape = (2, 2, 3)
  mean = rng.uniform(-0.5, 0.5, shape)
  sde = sde_lib.VESDE(0.01, 5.0)
  score = analytic.mixture_score_model(sde, jnp.asarray(mean)[None], 0.2)
  gray = jnp.asarray(rng.uniform(-0.5, 0.5, (64, 2, 2, 1)).repeat(3, -1), jnp.float32)
  x = pc.pc_colorize(score, sde, jax.random.key(1), gray, corrector="none")
  np.testing.assert_allclose(x.mean(-1), gray.mean(-1), atol=1e-5)
  # The colour is sampled: it varies between samples with the same grey level.
  assert float(jnp.std(x - x.mean(-1, keepdims=True), axis=0).mean()) > 0.05
  m = pc.colorization_matrix(3)
  np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)


def test_classifier_free_guidance():
  sched = schedules.make_schedule(schedules.beta_schedule("linear", 1000))
  means = jnp.array([[0.6, 0.6], [-0.6, -0.6]])
  per_class = [analytic.gaussian_eps_model(sched, means[k], 0.1) for k in range(2)]
  marginal = analytic.mixture_eps_model(sched, means, 0.1)

  def model(x, t, y):  # an exact conditional model with null label 2
    outs = jnp.stack([per_class[0](x, t), per_class[1](x, t), marginal(x, t)])
    return jnp.take_along_axis(outs, y[None, :, None], 0)[0]

  x = jax.random.normal(jax.random.key(0), (4, 2))
  t = jnp.array([10, 300, 600, 900])
  y = jnp.array([0, 1, 0, 1])
  w = 2.5
  guided = guidance.classifier_free_guidance(model, w, 2)
  np.testing.assert_allclose(guided(x, t, y), (1 + w) * model(x, t, y) - w * model(x, t, jnp.full(4, 2)),
                             rtol=1e-5)
  # w = 0 samples each class; labels are split over devices with the batch.
  labels = jnp.arange(64) % 2
  s = ddim.ddim_sample(guidance.classifier_free_guidance(model, 0.0, 2), sched, jax.random.key(1),
                       (64, 2), num_steps=100, cond=labels, mesh=parallel.make_mesh())
  np.testing.assert_allclose(np.asarray(s)[labels == 0].mean(0), [0.6, 0.6], atol=0.05)
  np.testing.assert_allclose(np.asarray(s)[labels == 1].mean(0), [-0.6, -0.6], atol=0.05)
  # Guidance sharpens: w > 0 pulls samples away from the other class.
  sg = ddim.ddim_sample(guided, sched, jax.random.key(1), (64, 2), num_steps=100, cond=labels)
  assert float(np.asarray(sg)[labels == 0].mean()) > float(np.asarray(s)[labels == 0].mean()) - 0.01


def test_bad_pc_options():
  sde = sde_lib.SubVPSDE()
  score = analytic.mixture_score_model(sde, jnp.zeros((1, 2)), 1.0)
  with pytest.raises(ValueError, match="euler_maruyama"):
    pc.pc_sample(score, sde, jax.random.key(0), (2, 2), predictor="leapfrog")
  with pytest.raises(ValueError, match="reverse_diffusion"):
    pc.pc_sample(score, sde, jax.random.key(0), (2, 2), predictor="ancestral")
