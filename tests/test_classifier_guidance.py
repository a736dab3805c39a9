"""Classifier guidance in every sampler, against an exact classifier.

For x_0 ~ Σ_k w_k N(μ_k, s² I) the noised marginal is a mixture with known components, so
p(y = k | x_t) is exactly component k's posterior responsibility (testing/analytic.py
mixture_classifier). Guiding the exact unconditional model with it at scale 1 gives the exact
score of p_t(x | y = k): every sampler must then sample component k alone.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.core import denoiser, paths, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

MEANS = jnp.array([[0.8, 0.4], [-0.8, -0.4], [0.0, -0.9]])
STD = 0.15
WEIGHTS = jnp.array([0.5, 0.3, 0.2])
N = 1500

DISCRETE = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
VP, VE = sde_lib.VPSDE(N=500), sde_lib.VESDE(0.01, 5.0, N=500)
# (sampler, process, objective, prediction, options): every sampler of samplers/table.py.
CASES = [
    ("ddpm", DISCRETE, "ddpm", "eps", {}),
    ("ddim", DISCRETE, "ddpm", "eps", {"num_steps": 100}),
    ("pc", VP, "dsm", "score", {"corrector": "none"}),
    ("ode", VE, "dsm", "score", {"solver": "tsit5"}),
    ("dpm_solver", VP, "dsm", "eps", {"num_steps": 30, "order": 2}),
    ("unipc", VP, "dsm", "x0", {"num_steps": 30, "order": 2}),
    ("edm", sde_lib.VESDE(0.002, 80.0), "edm", "edm", {"num_steps": 30}),
    ("ald", sde_lib.VESDE(0.01, 5.0, N=100), "ncsn", "eps",
     {"step_lr": 2e-5, "n_steps_each": 20}),
    ("flow_euler", paths.LinearPath(), "flow", "velocity", {"num_steps": 100}),
    ("flow_heun", paths.CosinePath(), "flow", "x0", {"num_steps": 30}),
    ("flow_sde", paths.LinearPath(), "flow", "velocity", {"num_steps": 200}),
]
assert {c[0] for c in CASES} == set(table.SAMPLERS)
# A classifier guides models of every process but a flow path's (at t = 1, α = 0, its
# gradient is 0 and x̂_0 = (x − σ ε̃)/α undefined): those cases are the editing tests'.
GUIDED = [c for c in CASES if c[2] != "flow"]


def _guided(process, objective, prediction, scale, means=MEANS, weights=WEIGHTS):
  model = analytic.mixture_denoiser(process, means, STD, weights, objective=objective,
                                    prediction=prediction)
  classifier = analytic.mixture_classifier(process, means, STD, weights, objective=objective,
                                           prediction=prediction)
  return model.classifier_guided(classifier, scale, net_labels=False)


def _per_class(process, objective, prediction):
  """The exact class-conditional model: label y's network is component y's alone."""
  nets = [analytic.mixture_network(process, MEANS[k:k + 1], STD, objective=objective,
                                   prediction=prediction) for k in range(3)]

  def net(x, t, y):
    return jnp.take_along_axis(jnp.stack([n(x, t) for n in nets]), y[None, :, None], 0)[0]
  return denoiser.make(net, process, objective, mean_type=prediction)


def _assigned(x, means=MEANS, weights=WEIGHTS):
  """The component each sample most likely came from, by the exact responsibilities of the
  data mixture (t = 0)."""
  logits = analytic._log_likelihoods(jnp.asarray(means), jnp.full(means.shape, STD),
                                     jnp.log(weights), jnp.asarray(x), 1.0, 0.0)
  return np.asarray(jnp.argmax(logits, axis=1))


@pytest.mark.parametrize("method,process,objective,prediction,options", GUIDED,
                         ids=[c[0] for c in GUIDED])
@pytest.mark.slow
def test_scale_1_with_the_exact_classifier_samples_the_class_alone(method, process, objective,
                                                                   prediction, options):
  """Guided samples equal, example by example (same keys), those of component y's own exact
  model, and have its moments; the exact responsibilities assign ≥ 99% of them to y."""
  labels = jnp.arange(N) % 3
  model = _guided(process, objective, prediction, 1.0)
  x, info = table.sample(method, model, jax.random.key(0), (N, 2), cond=labels, **options)
  alone, _ = table.sample(method, _per_class(process, objective, prediction), jax.random.key(0),
                          (N, 2), cond=labels, **options)
  np.testing.assert_allclose(x, alone, atol=2e-3)
  x, labels = np.asarray(x), np.asarray(labels)
  for k in range(3):
    mine = x[labels == k]
    assert np.mean(_assigned(mine) == k) >= 0.99
    se = STD / np.sqrt(len(mine))
    np.testing.assert_allclose(mine.mean(0), MEANS[k], atol=5 * se + 0.015)
    np.testing.assert_allclose(mine.std(0), STD, rtol=0.2)  # DDIM's 100 steps: 0.13
  unguided = table.nfe(method, process, options)
  if unguided is not None:  # the classifier's gradient counts as one evaluation per call
    assert info["nfe"] == 2 * unguided


def test_the_class_weight_grows_with_the_scale():
  """Well-separated components, y = 0: at s = 0 the weights are w (the unguided model); the
  weight of component 0 grows with s, and from s = 1 on all samples are on it. (The tilt
  p(x) p(y|x)^s puts weight ≈ 1 on component 0 for every s > 0, but guidance with a noised
  classifier does not sample it for s ≠ 1: at s = 0.5 the weight is 0.83 here.)"""
  labels = jnp.zeros((N,), jnp.int32)
  weights = {}
  for scale in (0.0, 0.5, 1.0, 3.0):
    model = _guided(VP, "dsm", "eps", scale)
    x, _ = table.sample("dpm_solver", model, jax.random.key(1), (N, 2), cond=labels,
                        num_steps=30)
    weights[scale] = np.bincount(_assigned(x), minlength=3) / N
  np.testing.assert_allclose(weights[0.0], WEIGHTS, atol=4 * np.sqrt(0.25 / N))
  assert WEIGHTS[0] + 0.1 < weights[0.5][0] < weights[1.0][0] - 0.1
  assert weights[1.0][0] >= 0.99 and weights[3.0][0] >= 0.99


def test_scale_s_on_overlapping_classes():
  """Two overlapping components (means ±0.2, s = 0.15), y = 0: at s = 1 the samples' mean is
  component 0's, 0.2, as p(x) p(y=0|x) = w_0 N_0 says; at s = 2 guidance sharpens beyond the
  tilt p(x) p(y=0|x)² (computed by quadrature: mean 0.231; guided: 0.294)."""
  means, weights = jnp.array([[0.2], [-0.2]]), jnp.array([0.5, 0.5])
  grid = np.linspace(-1.5, 1.5, 6001)
  dens = [np.exp(-0.5 * ((grid - float(m[0])) / STD) ** 2) for m in means]
  p0 = dens[0] / (dens[0] + dens[1])
  tilt = (dens[0] + dens[1]) * p0**2
  labels = jnp.zeros((4000,), jnp.int32)
  got = {}
  for scale in (1.0, 2.0):
    model = _guided(VP, "dsm", "eps", scale, means, weights)
    x, _ = table.sample("dpm_solver", model, jax.random.key(2), (4000, 1), cond=labels,
                        num_steps=30)
    got[scale] = float(np.mean(np.asarray(x)))
  assert abs(got[1.0] - 0.2) < 4 * STD / np.sqrt(4000) + 0.005
  assert got[2.0] > np.sum(grid * tilt) / np.sum(tilt) + 0.03


def test_classifier_and_classifier_free_guidance_combine():
  """A class-conditional network under classifier-free weight w plus a classifier at scale s:
  ε̃ = (1 + w) ε(x, y) − w ε(x, ∅) − s σ ∇ log p(y | x_t), and 3 evaluations per call."""
  process = VP
  per_class = [analytic.mixture_network(process, MEANS[k:k + 1], STD, objective="dsm",
                                        prediction="eps") for k in range(3)]
  marginal = analytic.mixture_network(process, MEANS, STD, WEIGHTS, objective="dsm",
                                      prediction="eps")

  def net(x, t, y):
    outs = jnp.stack([p(x, t) for p in per_class] + [marginal(x, t)])
    return jnp.take_along_axis(outs, y[None, :, None], 0)[0]

  classifier = analytic.mixture_classifier(process, MEANS, STD, WEIGHTS, objective="dsm",
                                           prediction="eps")
  both = denoiser.make(net, process, "dsm", mean_type="eps").guided(1.5, 3).classifier_guided(
      classifier, 0.7, net_labels=True)
  assert both.evaluations_per_call == 3
  x = jax.random.normal(jax.random.key(3), (8, 2))
  y = jnp.arange(8) % 3
  t = jnp.full((8,), 0.4)
  got = both.bind(y).predict(x, t).eps
  _, sigma = process.marginal_coef(t)
  grad = jax.grad(lambda v: jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(
      classifier(v, t * (process.N - 1)), -1), y[:, None], 1)))(x)
  want = (2.5 * net(x, t * (process.N - 1), y) - 1.5 * net(x, t * (process.N - 1),
                                                           jnp.full_like(y, 3))
          - 0.7 * sigma[:, None] * grad)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_guided_samples_do_not_depend_on_the_device_count():
  """The classifier's gradient is per example: one device and eight give the same samples."""
  from ddpm_jax.infra import parallel
  labels = jnp.arange(64) % 3
  model = _guided(VP, "dsm", "eps", 2.0)
  one, info = table.sample("dpm_solver", model, jax.random.key(4), (64, 2), cond=labels,
                           num_steps=10)
  eight, _ = table.sample("dpm_solver", model, jax.random.key(4), (64, 2), cond=labels,
                          num_steps=10, mesh=parallel.make_mesh())
  assert parallel.make_mesh().size == 8
  np.testing.assert_allclose(one, eight, atol=2e-5)
  assert info["nfe"] == 2 * 11
