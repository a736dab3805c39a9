"""What keeps the device busy, proven on CPU: no host↔device transfer inside a sampling run or a
training step beyond the explicit feed and fetch, sampling programs compiled once, donated
training state, and float32 master state under bf16 compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from ddpm_jax.config import build, sampler, schema
from ddpm_jax.data import batches
from ddpm_jax.infra import parallel

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

SAMPLERS = {
    "ddpm": {"sampling.method": "ddpm", "diffusion.num_timesteps": 4},
    "ddim": {"sampling.method": "ddim"},
    "pc": {"training.objective": "dsm", "sampling.method": "pc", "sde.num_scales": 3},
    "ode": {"training.objective": "dsm", "sampling.method": "ode", "sampling.ode_solver": "euler",
            "model.conditional": True},  # each example's own label inside the vmapped solve
    "edm_guided": {"training.objective": "edm", "sampling.method": "edm", "sampling.num_steps": 3,
                   "sampling.edm_churn": 5.0, "model.conditional": True,
                   "sampling.guidance_weight": 2.0},
    "ald": {"training.objective": "ncsn", "sampling.method": "ald", "sde.num_scales": 3},
}


@pytest.fixture
def count_compiles():
  """A list that grows by one for each program lowered for compilation (counted even where
  the session's compilation cache then skips the XLA compile)."""
  compiled = []
  listener = lambda event, *_, **__: compiled.append(event) if event == (  # noqa: E731
      "/jax/core/compile/jaxpr_to_mlir_module_duration") else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield compiled
  jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.slow
def test_a_sampling_run_is_one_compiled_program_with_no_transfers(name, count_compiles):
  config = tiny_config(**SAMPLERS[name])
  schema.check(config)
  shape = (8, 8, 1)
  model = build.model(config, shape[-1])
  params = build.train_state(config, model, shape).params
  mesh = parallel.make_mesh()
  sample_fn = sampler.make_sampler(config, model, shape, mesh)
  params = parallel.replicate(params, mesh)
  first = sample_fn(params, jax.random.key(0), 16)[0]
  key = jax.random.key(1)
  before = len(count_compiles)
  assert before > 0  # the listener sees the first run compile
  with jax.transfer_guard("disallow"):
    x, _ = sample_fn(params, key, 16)
    x.block_until_ready()
  assert len(count_compiles) == before  # the second run reuses the program
  assert x.shape == (16,) + shape and not np.array_equal(first, x)


def test_the_training_step_donates_the_previous_state():
  config = tiny_config()
  shape = (8, 8, 1)
  model = build.model(config, shape[-1])
  mesh = parallel.make_mesh()
  step = build.train_step(config, model, mesh)
  state = parallel.replicate(build.train_state(config, model, shape), mesh)
  source = build.source(config)
  batch = parallel.shard_batch(batches.get_batch(source, 0, global_batch=16, image_size=8, seed=0),
                               mesh)
  new_state, _ = step(state, batch)
  for name, tree in (("params", state.params), ("opt_state", state.opt_state),
                     ("ema_params", state.ema_params)):
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(tree)), name
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state.params))


@pytest.mark.slow
def test_bf16_compute_keeps_master_state_and_loss_in_float32():
  config = tiny_config(**{"model.dtype": "bfloat16"})
  shape = (8, 8, 1)
  model = build.model(config, shape[-1])
  mesh = parallel.make_mesh()
  state = build.train_state(config, model, shape)
  batch = batches.get_batch(build.source(config), 0, global_batch=16, image_size=8, seed=0)
  step = build.train_step(config, model, mesh)
  state, metrics = step(parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh))
  for name, tree in (("params", state.params), ("opt_state", state.opt_state),
                     ("ema_params", state.ema_params)):
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}, (name, dtypes)
  assert metrics["loss"].dtype == jnp.float32
  # ... while the convolutions and matrix products of the network run in bfloat16.
  # GroupNorm statistics and the attention softmax reduce in float32.
  x, t = jnp.zeros((2,) + shape), jnp.zeros((2,))
  for attention in ATTENTION_ON_CPU:
    model = model.clone(attention=attention)
    eqns = list(_equations(jax.make_jaxpr(lambda p: model.apply({"params": p}, x, t))(state.params).jaxpr))
    heavy = [e for e in eqns if e.primitive.name in ("conv_general_dilated", "dot_general")]
    assert heavy and all(v.aval.dtype == jnp.bfloat16 for e in heavy for v in e.invars)
    reductions = [e for e in eqns if e.primitive.name in ("reduce_sum", "reduce_max")]
    assert reductions and all(v.aval.dtype == jnp.float32 for e in reductions for v in e.invars)


ATTENTION_ON_CPU = ("einsum", "xla")


def _equations(jaxpr):
  """Every equation of a jaxpr, those of nested jaxprs (pjit, custom_jvp, …) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
          yield from _equations(getattr(sub, "jaxpr", sub))
