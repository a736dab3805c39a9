"""The model FLOP count (flops.py) against hand formulas and XLA's CPU cost analysis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from ddpm_jax.config import build
from ddpm_jax.infra import flops, parallel


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_matrix_products_and_convolutions_by_hand():
  a, b = jnp.zeros((3, 5, 7)), jnp.zeros((3, 7, 4))
  assert flops.count(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == 2 * 3 * 5 * 7 * 4
  x, w = jnp.zeros((2, 6, 6, 3)), jnp.zeros((3, 3, 3, 8))
  conv = lambda stride, pad: lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert flops.count(conv(1, "VALID"), x, w) == 2 * 2 * 4 * 4 * 8 * 9 * 3
  # SAME padding: along each axis of 6, the 3 taps of the 6 outputs read 6·3 − 2 real inputs.
  assert flops.count(conv(1, "SAME"), x, w) == 2 * 2 * 8 * 3 * 16 * 16
  # Stride 2 with TF's asymmetric padding ((0, 1)): outputs 0, 1, 2 read 3, 3, 2 real inputs.
  assert flops.count(conv(2, ((0, 1), (0, 1))), x, w) == 2 * 2 * 8 * 3 * 8 * 8
  # A scan multiplies its body; a cond counts its costlier branch.
  m = jnp.zeros((4, 4))
  scanned = lambda m: jax.lax.scan(lambda c, _: (c @ m, None), m, None, length=5)[0]  # noqa: E731
  assert flops.count(scanned, m) == 5 * 2 * 4**3
  branchy = lambda m, p: jax.lax.cond(p, lambda: m @ m @ m, lambda: m)  # noqa: E731
  assert flops.count(branchy, m, True) == 2 * 2 * 4**3


@pytest.fixture(scope="module")
def unet():
  """A 2-level U-Net with attention at 8×8 and a training step for it."""
  config = tiny_config(**{"model.ch": 32, "model.ch_mult": (1, 2),
                          "model.attn_resolutions": (8,), "data.image_size": 16})
  shape = (16, 16, 1)
  model = build.model(config, shape[-1])
  return config, model, shape, build.train_state(config, model, shape)


def test_forward_count_matches_xla_cost_analysis(unet):
  _, model, shape, state = unet
  x, t = jnp.zeros((4,) + shape), jnp.zeros((4,))
  fwd = lambda p, x: model.apply({"params": p}, x, t)  # noqa: E731
  ours, xla = flops.count(fwd, state.params, x), _xla_flops(fwd, state.params, x)
  assert ours == pytest.approx(xla, rel=0.03)  # XLA also counts the elementwise work


@pytest.mark.usefixtures("cheap_compile")
@pytest.mark.slow
def test_training_step_costs_three_forwards(unet):
  """Backward = 2 × forward for convolutions and products: the compiled step has no
  recomputation the count would miss (XLA cost of the step ≈ 3 × our forward)."""
  config, model, shape, state = unet
  bs = 4
  x, t = jnp.zeros((bs,) + shape), jnp.zeros((bs,))
  forward = flops.count(lambda p: model.apply({"params": p}, x, t), state.params)
  mesh = parallel.make_mesh(jax.devices()[:1])
  step = build.train_step(config, model, mesh)
  state = parallel.replicate(state, mesh)
  batch = parallel.shard_batch({"image": np.zeros((bs,) + shape, np.float32),
                                "label": np.zeros(bs, np.int32)}, mesh)
  assert flops.count(step, state, batch) == pytest.approx(3 * forward, rel=0.01)
  cost = step.lower(state, batch).compile().cost_analysis()
  xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  assert xla == pytest.approx(3 * forward, rel=0.05)


def test_peak_table():
  assert flops.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
  assert flops.peak_tflops("cpu", "bfloat16") is None
