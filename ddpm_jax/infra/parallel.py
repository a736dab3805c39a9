"""Device mesh and the data-parallel wrappers: shard_map over the 1-D mesh axis "data";
multi-host initialization and what processes share.

A batched function runs per device on its slice of the batch while replicated arguments
(parameters, the arrays of a model callable) are copied to every device. Each wrapper returns
a function compiled once by `jax.jit`; build it once and call it many times.

On several processes (one per host, or per GPU) the mesh holds every process's devices; each
process feeds its own rows of a global batch (`local_rows`, `shard_batch`), results come back
to every process with `to_host`, decisions that read the filesystem are taken once and shared
with `agree`, and only `is_main_process()` writes files.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int = 300) -> None:
  """jax.distributed.initialize with each value given, else read from the environment
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else left to JAX's
  auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes), waiting `timeout` seconds for every
  process to join. CPU processes talk through gloo."""
  def from_env(value, name, kind):
    text = os.environ.get(name)
    return value if value is not None else (kind(text) if text else None)
  address = from_env(coordinator_address, "JAX_COORDINATOR_ADDRESS", str)
  process_id = from_env(process_id, "JAX_PROCESS_ID", int)
  if address and process_id:  # XLA aborts the process when the coordinator never answers
    _wait_for(address, timeout)
  collectives = jax.config.jax_cpu_collectives_implementation
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=from_env(num_processes, "JAX_NUM_PROCESSES", int), process_id=process_id,
        initialization_timeout=timeout)
  except BaseException:
    jax.config.update("jax_cpu_collectives_implementation", collectives)
    raise


def _wait_for(address: str, timeout: float) -> None:
  """Returns once HOST:PORT accepts a connection; TimeoutError after `timeout` seconds."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
      return
    except (OSError, ValueError):
      if time.monotonic() > deadline:
        raise TimeoutError(f"no coordinator answered at {address} within {timeout}s") from None
      time.sleep(0.5)


def is_main_process() -> bool:
  """The process that writes files (logs, images, results): process 0."""
  return jax.process_index() == 0


def local_rows(global_size: int) -> slice:
  """This process's rows of a global batch (equal, contiguous, in process order)."""
  n = global_size // jax.process_count()
  return slice(jax.process_index() * n, (jax.process_index() + 1) * n)


def to_host(x) -> np.ndarray:
  """The whole of a (possibly multi-host sharded) array as numpy, on every process."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def agree(value):
  """Process 0's value (a bool, number or array) on every process: for choices that read the
  filesystem (which checkpoint or chunk exists), so that every process takes the same path."""
  if jax.process_count() == 1:
    return value
  shared = multihost_utils.broadcast_one_to_all(np.asarray(value))
  return shared.item() if np.ndim(value) == 0 else shared


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of every host) with axis "data"."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_divisible(batch_size: int, mesh: Mesh | None, name: str = "batch size") -> None:
  """A one-line error naming `name` (e.g. the config field) when the batch does not split."""
  n = 1 if mesh is None else mesh.shape[DATA_AXIS]
  if batch_size % n:
    where = (f"{jax.process_count()} processes × {n // jax.process_count()} local devices"
             if jax.process_count() > 1 else f"{n} devices")
    raise ValueError(f"{name}={batch_size} does not divide over {where}; use a "
                     f"multiple of {n}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def partition_arrays(tree) -> tuple[list, Callable]:
  """(arrays, rebuild): the array leaves of a pytree (e.g. the parameters bound in a
  `jax.tree_util.Partial`) and the function that puts them back beside its other leaves, so
  the arrays can be arguments of a compiled program while everything else stays static."""
  leaves, treedef = jax.tree.flatten(tree)
  is_array = [isinstance(v, (jax.Array, np.ndarray, np.generic)) for v in leaves]
  arrays = [v for v, a in zip(leaves, is_array) if a]

  def rebuild(new_arrays):
    it = iter(new_arrays)
    return treedef.unflatten([next(it) if a else v for v, a in zip(leaves, is_array)])
  return arrays, rebuild


def data_parallel(fn: Callable, mesh: Mesh | None) -> Callable:
  """fn(replicated, batched) compiled once as jit(shard_map(fn)) over `mesh`: `replicated` is
  copied to every device, `batched` (and the output) split on axis 0 over "data". The returned
  function checks that the batch divides, places its inputs explicitly and, once a call with
  the same input types has traced and compiled it (tracing may create constants), runs the
  program under `jax.transfer_guard("disallow")`: a call moves nothing else between host and
  device. With no mesh (or one device) it is plain jit.
  """
  if mesh is None or mesh.size == 1:
    program, place_replicated, place_batched = jax.jit(fn), jax.device_put, jax.device_put
  else:
    # No collectives here, so the replication check is off (diffrax's internal conds mix
    # per-device and replicated values, which the check rejects).
    program = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                                    out_specs=P(DATA_AXIS), check_vma=False))
    place_replicated = lambda tree: replicate(tree, mesh)  # noqa: E731
    place_batched = lambda tree: place(tree, batch_sharding(mesh))  # noqa: E731

  compiled_for = set()  # the input types of the calls that traced and compiled the program

  def call(replicated, batched):
    check_divisible(int(np.shape(jax.tree.leaves(batched)[0])[0]), mesh)
    args = (place_replicated(replicated), place_batched(batched))
    leaves, tree = jax.tree.flatten(args)
    types = (tree, tuple(jax.typeof(x) for x in leaves))
    if types not in compiled_for:
      compiled_for.add(types)
      return program(*args)
    with jax.transfer_guard("disallow"):
      return program(*args)
  return call


def data_parallel_train_step(step_fn: Callable, mesh: Mesh, steps_per_dispatch: int = 1
                             ) -> Callable:
  """jit(shard_map(step_fn)) with the state replicated and donated, the batch split on
  "data"; step_fn(state, batch) -> (state, metrics) must pmean what it returns.

  With steps_per_dispatch = k > 1 the batch carries a leading axis of k steps, run by an
  unrolled lax.scan in one dispatch; the metrics are those of the last step. (Unrolled: XLA's
  CPU backend runs the gradient convolutions inside a while loop about 30× slower.)
  """
  if steps_per_dispatch == 1:
    fn, batch_spec = step_fn, P(DATA_AXIS)
  else:
    def fn(state, batches):
      state, metrics = jax.lax.scan(step_fn, state, batches, unroll=True)
      return state, jax.tree.map(lambda m: m[-1], metrics)
    batch_spec = P(None, DATA_AXIS)
  # check_vma on: replicated inputs are typed invariant, so gradients with respect to them
  # come out summed over devices (make_train_step relies on this).
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), batch_spec), out_specs=(P(), P()),
                          check_vma=True)
  return jax.jit(sharded, donate_argnums=(0,))


def all_gather_invariant(x):
  """Inside shard_map: the global batch [n·b, ...] of a per-device [b, ...] value, in device
  order and typed as the same on every device (each device's slice placed in zeros, then
  psum; `lax.all_gather` gives the same values typed as varying)."""
  n, i = jax.lax.axis_size(DATA_AXIS), jax.lax.axis_index(DATA_AXIS)
  full = jax.numpy.zeros((n * x.shape[0],) + x.shape[1:], x.dtype)
  return jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(full, x, i * x.shape[0], 0), DATA_AXIS)


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on every device of `mesh`."""
  return place(tree, NamedSharding(mesh, P()))


def place(tree, sharding: NamedSharding):
  """jax.device_put of `tree`, whose value every process holds whole, onto `sharding`. On
  several processes device_put cannot split an array that lives on one local device over
  other processes' devices, so such arrays go through the host (keys as their key data)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)
  return jax.tree.map(put, tree)


def shard_batch(batch, mesh: Mesh, steps_per_dispatch: int = 1):
  """Places a host batch (leading batch axis, after a steps axis when k > 1) on the mesh.

  On several hosts each passes its own slice and the global array is assembled from them.
  """
  spec = P(DATA_AXIS) if steps_per_dispatch == 1 else P(None, DATA_AXIS)
  sharding = NamedSharding(mesh, spec)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def prefetch_to_device(batches: Iterator, mesh: Mesh, size: int = 2,
                       steps_per_dispatch: int = 1) -> Iterator:
  """Host batches placed on the mesh `size` ahead: the copy of the next batch (asynchronous,
  like every device_put) overlaps the step that runs before it needs it."""
  queue = collections.deque()
  for batch in batches:
    queue.append(shard_batch(batch, mesh, steps_per_dispatch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
