"""Inpainting, colorization and classifier-free guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.infra import parallel
from ddpm_jax.samplers import ancestral, common, ddim, dpm_solver, edm_heun, ode, pc, table
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower


def test_inpainting_keeps_known_pixels_and_conditions_the_rest():
  """Two modes ±(0.6, 0.6): knowing x₀ = 0.6 puts x₁ on the + mode, x₀ = −0.6 on the − mode."""
  means = jnp.array([[0.6, 0.6], [-0.6, -0.6]])
  sde = sde_lib.VESDE(0.01, 5.0)
  score = _exact(sde, means, 0.05)
  n = 512
  data = jnp.concatenate([jnp.full((n // 2, 2), 0.6), jnp.full((n // 2, 2), -0.6)])
  data = data.at[:, 1].set(0.0)  # the unknown coordinate's value is irrelevant
  mask = jnp.array([1.0, 0.0])
  x = pc.pc_inpaint(score, jax.random.key(0), data, mask, corrector="none",
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
  score = _exact(sde, jnp.asarray(mean)[None], 0.2)
  gray = jnp.asarray(rng.uniform(-0.5, 0.5, (64, 2, 2, 1)).repeat(3, -1), jnp.float32)
  x = pc.pc_colorize(score, jax.random.key(1), gray, corrector="none")
  np.testing.assert_allclose(x.mean(-1), gray.mean(-1), atol=1e-5)
  # The colour is sampled: it varies between samples with the same grey level.
  assert float(jnp.std(x - x.mean(-1, keepdims=True), axis=0).mean()) > 0.05
  m = pc.colorization_matrix(3)
  np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)


def _exact(sde, means, stds, weights=None):
  return analytic.mixture_denoiser(sde, means, stds, weights, objective="dsm", prediction="score")


def _class_net(per_class, marginal):
  """net(x, t, y): class y's exact network, the marginal's for the null label 2."""
  def net(x, t, y):
    outs = jnp.stack([per_class[0](x, t), per_class[1](x, t), marginal(x, t)])
    return jnp.take_along_axis(outs, y[None, :, None], 0)[0]
  return net


MEANS = jnp.array([[0.6, 0.6], [-0.6, -0.6]])


def _class_denoiser(process, objective="dsm", prediction="score", **options):
  """The exact class-conditional denoiser of the two-mode data (std 0.1 about MEANS)."""
  nets = [analytic.mixture_network(process, MEANS[k:k + 1], 0.1, objective=objective,
                                   prediction=prediction) for k in range(2)]
  marginal = analytic.mixture_network(process, MEANS, 0.1, objective=objective, prediction=prediction)
  return denoiser.make(_class_net(nets, marginal), process, objective, mean_type=prediction,
                       **options), marginal


def test_classifier_free_guidance_combines_the_two_passes():
  process = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  model, _ = _class_denoiser(process, "ddpm", "eps")
  x = jax.random.normal(jax.random.key(0), (4, 2))
  t = jnp.array([10, 300, 600, 900])
  y = jnp.array([0, 1, 0, 1])
  w = 2.5
  guided = jax.jit(lambda x, t, y: model.bind(y).guided(w, 2).predict_step(x, t).eps)
  eps = lambda labels: model.bind(labels).predict_step(x, t).eps  # noqa: E731
  np.testing.assert_allclose(guided(x, t, y), (1 + w) * eps(y) - w * eps(jnp.full(4, 2)),
                             rtol=1e-5)


def test_guidance_leaves_a_learned_variance_unextrapolated():
  """GLIDE guides the mean only: with a learned variance the guided prediction's variance
  channels are the conditional pass's, and DDPM ancestral sampling with guidance equals
  sampling a network whose mean is the guided mean and whose variance is the conditional one
  (written out here). A variance that differs between the passes makes the check bite."""
  process = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 100)))
  eps_model, _ = _class_denoiser(process, "ddpm", "eps")
  w, null = 3.0, 2

  def net(x, t, y):  # ε of class y and a learned_range variance v = ±0.5 by the label's parity
    v = jnp.where((y % 2 == 0)[:, None], 0.5, -0.5) * jnp.ones_like(x)
    return jnp.concatenate([eps_model.net(x, t, y), v], axis=-1)

  def written_out(x, t, y):
    cond, uncond = net(x, t, y), net(x, t, jnp.full_like(y, null))
    mean = (1 + w) * cond[:, :2] - w * uncond[:, :2]
    return jnp.concatenate([mean, cond[:, 2:]], axis=-1)

  labels = np.arange(64) % 2
  x = jax.random.normal(jax.random.key(0), (64, 2))
  guided = denoiser.make(net, process, "ddpm", var_type="learned_range").guided(w, null)
  pred = guided.bind(jnp.asarray(labels)).predict_step(x, jnp.full((64,), 50))
  np.testing.assert_array_equal(pred.var_out, np.where((labels % 2 == 0)[:, None], 0.5, -0.5)
                                * np.ones((1, 2)))
  reference = denoiser.make(written_out, process, "ddpm", var_type="learned_range")
  loop = ancestral.ddpm_loop(process, (2,))
  a = common.run(loop, guided, jax.random.key(1), 64, cond=labels)[0]
  b = common.run(loop, reference, jax.random.key(1), 64, cond=labels)[0]
  np.testing.assert_allclose(a, b, atol=1e-5)
  extrapolated = denoiser.make(lambda x, t, y: (1 + w) * net(x, t, y) - w * net(
      x, t, jnp.full_like(y, null)), process, "ddpm", var_type="learned_range")
  c = common.run(loop, extrapolated, jax.random.key(1), 64, cond=labels)[0]
  assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-2  # what guiding all channels did


@pytest.mark.slow
def test_guidance_weight_0_is_the_conditional_and_minus_1_the_unconditional_model():
  """For each kind of sampler (ε-model DDIM, the exponential integrators, EDM with churn, the
  ODE with each example's own label): guidance weight 0 samples the conditional model and
  w = −1 the unconditional one (one program, the weight its argument), and the labels reach
  their examples (class means of the conditional samples). The adaptive ODE's step choices
  follow rounding, so it matches to its tolerance (a wrong label moves a sample by ~1.7).
  (Labels split over devices: test_efficiency.py.)"""
  chain = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  sde = sde_lib.VPSDE()
  cases = {  # name: (loop, (class-conditional denoiser, marginal network))
      "ddim_eta1": (ddim.ddim_loop(chain, (2,), num_steps=20, eta=1.0),
                    _class_denoiser(chain, "ddpm", "eps")),
      "ode": (ode.ode_loop(sde, (2,), rtol=1e-3, atol=1e-3), _class_denoiser(sde)),
      "dpm_solver": (dpm_solver.dpm_solver_loop(sde, (2,), num_steps=10), _class_denoiser(sde)),
      "edm_churn": (edm_heun.edm_loop(sde, (2,), num_steps=10, churn=5), _class_denoiser(sde)),
  }
  labels, key = np.arange(32) % 2, jax.random.key(1)
  for name, (loop, (model, marginal)) in cases.items():
    guided = common.compile_loop(loop, lambda w: model.guided(w, 2))  # noqa: B023
    conditional = np.asarray(common.run(loop, model, key, 32, cond=labels)[0])
    unconditional = np.asarray(common.run(loop, model.replace(net=marginal), key, 32)[0])
    atol = 5e-3 if name == "ode" else 1e-4  # the ODE: rtol = atol = 1e-3
    np.testing.assert_allclose(guided(jnp.float32(0), key, 32, cond=labels)[0], conditional,
                               atol=atol, err_msg=name)
    np.testing.assert_allclose(guided(jnp.float32(-1), key, 32, cond=labels)[0], unconditional,
                               atol=atol, err_msg=name)
    for k in range(2):
      np.testing.assert_allclose(conditional[labels == k].mean(0), MEANS[k], atol=0.1,
                                 err_msg=name)


def test_guided_nfe_counts_both_passes():
  sde = sde_lib.VPSDE()
  model, _ = _class_denoiser(sde)
  labels = jnp.asarray(np.arange(8) % 2)
  for method, options in (("dpm_solver", {"num_steps": 5}), ("ode", {"rtol": 1e-2, "atol": 1e-2})):
    _, plain = table.sample(method, model, jax.random.key(0), (8, 2), cond=labels, **options)
    _, guided = table.sample(method, model.guided(0.0, 2), jax.random.key(0), (8, 2),
                             cond=labels, **options)
    assert guided["nfe"] == 2 * plain["nfe"], method


def test_bad_pc_options():
  sde = sde_lib.SubVPSDE()
  with pytest.raises(ValueError, match="Unknown predictor 'leapfrog'; use one of"):
    pc.pc_loop(sde, (2,), predictor="leapfrog")
  for predictor in ("ancestral", "reverse_diffusion"):
    with pytest.raises(ValueError, match="the sub-VP SDE does not have; use predictor "
                                         "'euler_maruyama'"):
      pc.pc_loop(sde, (2,), predictor=predictor)
