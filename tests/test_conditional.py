"""Inpainting, colorization and classifier-free guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax import analytic, parallel, schedules
from ddpm_jax import sde as sde_lib
from ddpm_jax.samplers import common, ddim, dpm_solver, edm, guidance, ode, pc

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower


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


def _class_model(per_class, marginal):
  """model(x, t, y): class y's exact model, the marginal for the null label 2."""
  def model(x, t, y):
    outs = jnp.stack([per_class[0](x, t), per_class[1](x, t), marginal(x, t)])
    return jnp.take_along_axis(outs, y[None, :, None], 0)[0]
  return model


def test_classifier_free_guidance_combines_the_two_passes():
  sched = schedules.make_schedule(schedules.beta_schedule("linear", 1000))
  means = jnp.array([[0.6, 0.6], [-0.6, -0.6]])
  model = jax.jit(_class_model([analytic.gaussian_eps_model(sched, means[k], 0.1) for k in range(2)],
                               analytic.mixture_eps_model(sched, means, 0.1)))
  x = jax.random.normal(jax.random.key(0), (4, 2))
  t = jnp.array([10, 300, 600, 900])
  y = jnp.array([0, 1, 0, 1])
  w = 2.5
  guided = jax.jit(guidance.classifier_free_guidance(model, w, 2))
  np.testing.assert_allclose(guided(x, t, y), (1 + w) * model(x, t, y) - w * model(x, t, jnp.full(4, 2)),
                             rtol=1e-5)


def test_guidance_weight_0_is_the_conditional_and_minus_1_the_unconditional_model():
  """For each kind of sampler (ε-model DDIM, the exponential integrators, EDM with churn, the
  ODE with each example's own label): guidance weight 0 samples the conditional model and
  w = −1 the unconditional one (one program, the weight its argument), and the labels reach
  their examples (class means of the conditional samples). The adaptive ODE's step choices
  follow rounding, so it matches to its tolerance (a wrong label moves a sample by ~1.7).
  (Labels split over devices: test_efficiency.py.)"""
  means = jnp.array([[0.6, 0.6], [-0.6, -0.6]])
  sched, sde = schedules.make_schedule(schedules.beta_schedule("linear", 1000)), sde_lib.VPSDE()
  scores = ([analytic.mixture_score_model(sde, means[k:k + 1], 0.1) for k in range(2)],
            analytic.mixture_score_model(sde, means, 0.1))
  cases = {  # name: (loop, (per-class models, marginal model))
      "ddim_eta1": (ddim.ddim_loop(sched, (2,), num_steps=20, eta=1.0, clip_x0=False),
                    ([analytic.gaussian_eps_model(sched, means[k], 0.1) for k in range(2)],
                     analytic.mixture_eps_model(sched, means, 0.1))),
      "ode": (ode.ode_loop(sde, (2,), rtol=1e-3, atol=1e-3), scores),
      "dpm_solver": (dpm_solver.dpm_solver_loop(sde, (2,), num_steps=10), scores),
      "edm_churn": (edm.edm_loop(sde, (2,), num_steps=10, churn=5), scores),
  }
  labels, key = np.arange(32) % 2, jax.random.key(1)
  for name, (loop, (per_class, marginal)) in cases.items():
    model = _class_model(per_class, marginal)
    out = lambda v: np.asarray(v[0] if name == "ode" else v)  # noqa: E731
    guided = common.compile_loop(
        loop, lambda w: guidance.classifier_free_guidance(model, w, 2))  # noqa: B023
    conditional = out(common.run(loop, model, key, 32, cond=labels))
    atol = 5e-3 if name == "ode" else 1e-4  # the ODE: rtol = atol = 1e-3
    np.testing.assert_allclose(out(guided(jnp.float32(0), key, 32, cond=labels)), conditional,
                               atol=atol, err_msg=name)
    np.testing.assert_allclose(out(guided(jnp.float32(-1), key, 32, cond=labels)),
                               out(common.run(loop, marginal, key, 32)), atol=atol, err_msg=name)
    for k in range(2):
      np.testing.assert_allclose(conditional[labels == k].mean(0), means[k], atol=0.1,
                                 err_msg=name)


def test_bad_pc_options():
  sde = sde_lib.SubVPSDE()
  score = analytic.mixture_score_model(sde, jnp.zeros((1, 2)), 1.0)
  with pytest.raises(ValueError, match="euler_maruyama"):
    pc.pc_sample(score, sde, jax.random.key(0), (2, 2), predictor="leapfrog")
  with pytest.raises(ValueError, match="reverse_diffusion"):
    pc.pc_sample(score, sde, jax.random.key(0), (2, 2), predictor="ancestral")
