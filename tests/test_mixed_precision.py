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


@pytest.mark.parametrize("method,process,kind,prediction,options", CASES,
                         ids=[c[0] for c in CASES])
def test_bf16_and_float32_networks_sample_the_same_gaussian(method, process, kind, prediction,
                                                            options):
  net = analytic.mixture_network(process, MU[None], SD[None], kind=kind, prediction=prediction)
  n = 2000
  out = {}
  for name, network in (("float32", net), ("bfloat16", _bf16(net))):
    model = denoiser.make(network, process, kind, mean_type=prediction)
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
