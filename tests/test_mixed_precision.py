"""Samplers under a network that computes in bfloat16: the state, the schedules and the step
coefficients stay float32 (the Denoiser casts the network's output to the state's dtype), so
samples of exact Gaussian data agree with the float32 network's within the bf16 rounding of
its outputs (8 bits of mantissa: ~0.4% relative)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.core import denoiser, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

MU, SD = jnp.array([0.3, -0.2, 0.5, 0.0]), jnp.array([0.2, 0.4, 0.1, 0.3])
CHAIN = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
CASES = [("ddim", CHAIN, "ddpm", "eps", {"num_steps": 50}),
         ("ddpm", CHAIN, "ddpm", "eps", {}),
         ("dpm_solver", sde_lib.VPSDE(), "dsm", "eps", {"num_steps": 20}),
         ("unipc", sde_lib.VPSDE(), "dsm", "x0", {"num_steps": 20}),
         ("edm", sde_lib.VESDE(0.002, 80.0), "edm", "edm", {"num_steps": 18}),
         ("pc", sde_lib.VESDE(0.01, 5.0, N=300), "dsm", "score", {"corrector": "none"})]


def _bf16(net):
  """The network fed and returning bfloat16, as a bf16-compute network is."""
  return jax.tree_util.Partial(
      lambda net, x, t: net(x.astype(jnp.bfloat16).astype(jnp.float32), t).astype(jnp.bfloat16),
      net)


@pytest.mark.parametrize("method,process,objective,prediction,options", CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_bf16_and_float32_networks_sample_the_same_gaussian(method, process, objective, prediction,
                                                            options):
  net = analytic.mixture_network(process, MU[None], SD[None], objective=objective, prediction=prediction)
  n = 2000
  out = {}
  for name, network in (("float32", net), ("bfloat16", _bf16(net))):
    model = denoiser.make(network, process, objective, mean_type=prediction)
    x, _ = table.sample(method, model, jax.random.key(0), (n, 4), **options)
    assert x.dtype == jnp.float32  # the state stays float32
    out[name] = np.asarray(x)
  # the same keys: sample by sample within a few bf16 roundings of the data's scale (measured
  # max 5e-4–1.1e-2; means within 3.5e-4, standard deviations within 0.26%)
  assert np.max(np.abs(out["bfloat16"] - out["float32"])) < 0.02
  np.testing.assert_allclose(out["bfloat16"].mean(0), out["float32"].mean(0), atol=0.002)
  np.testing.assert_allclose(out["bfloat16"].std(0), out["float32"].std(0), rtol=0.01)
  np.testing.assert_allclose(out["bfloat16"].mean(0), MU,
                             atol=4 * float(SD.max()) / np.sqrt(n) + 0.01)


def _float16_run():
  from conftest import tiny_config

  from ddpm_jax.config import build
  from ddpm_jax.data import batches
  from ddpm_jax.infra import parallel
  config = tiny_config(**{"model.dtype": "float16", "training.loss_scale_init": 1024.0,
                          "training.loss_scale_every": 2})
  source = build.source(config)
  shape = build.image_shape(config, source)
  model = build.model(config, shape[-1])
  mesh = parallel.make_mesh()
  step = build.train_step(config, model, mesh)
  state = parallel.replicate(build.train_state(config, model, shape), mesh)
  data = [batches.get_batch(source, s, global_batch=16, image_size=8, seed=0) for s in range(4)]
  return step, state, [parallel.shard_batch(b, mesh) for b in data], mesh


@pytest.mark.slow
def test_float16_loss_scaling_skips_exactly_the_overflowing_step():
  """Step 2's batch overflows float16 (pixels of 1e5): that update is skipped (parameters,
  Adam state and EMA unchanged), the scale halves, and steps 3–4 are bit for bit those of a
  run that never took step 2 (its state after step 1 at step 2 with the halved scale). Two
  finite steps in a row then double the scale."""
  step, state, data, mesh = _float16_run()
  after_1, m1 = step(state, data[0])
  assert float(m1["skipped"]) == 0.0 and float(m1["loss_scale"]) == 1024.0
  host_1 = jax.device_get(after_1)  # the step donates its input state
  bad = {**data[1], "image": data[1]["image"] * 1e5}
  after_2, m2 = step(after_1, bad)
  assert float(m2["skipped"]) == 1.0 and np.isfinite(float(m2["grad_norm"]))
  host_2 = jax.device_get(after_2)
  assert float(host_2.loss_scale["scale"]) == 512.0 and int(host_2.step) == 2
  assert float(m2["skipped_steps"]) == 1.0
  for new, old in ((host_2.params, host_1.params), (host_2.opt_state, host_1.opt_state),
                   (host_2.ema_params, host_1.ema_params)):
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old), strict=True):
      np.testing.assert_array_equal(a, b)
  from ddpm_jax.infra import parallel
  straight = parallel.replicate(host_1.replace(step=host_1.step + 1,
                                               loss_scale=host_2.loss_scale), mesh)
  skipped = after_2
  for batch in data[2:]:
    skipped, ms = step(skipped, batch)
    straight, _ = step(straight, batch)
    assert float(ms["skipped"]) == 0.0
  skipped, straight = jax.device_get(skipped), jax.device_get(straight)
  for a, b in zip(jax.tree.leaves(skipped), jax.tree.leaves(straight), strict=True):
    np.testing.assert_array_equal(a, b)
  assert float(skipped.loss_scale["scale"]) == 1024.0  # two finite steps: doubled
  assert int(skipped.loss_scale["skips"]) == 1
