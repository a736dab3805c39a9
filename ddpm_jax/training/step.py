"""TrainState with EMA parameters, the optimizer, and the pure per-device training step.

`make_train_step` returns (state, batch) -> (state, metrics) for one device's slice of the
global batch, to be run under `parallel.data_parallel_train_step` (shard_map over "data"):
gradients and metrics are averaged with `lax.pmean`. The noise and timestep of example i of
the global batch come from fold_in(step key, i), so one device and many devices compute the
same update for the same global batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

from ddpm_jax.infra import parallel
from ddpm_jax.training import power_ema


class TrainState(train_state.TrainState):
  """params, opt_state and step (flax) + EMA parameters, the run's key (raw key data), for
  importance-sampled timesteps the recent losses per timestep (its `history` callables), for
  float16 compute the dynamic loss scale ({"scale": float32, "good": int32 finite steps since
  the last change, "skips": int32 steps skipped so far}) and, for post-hoc EMA, one parameter
  tree per tracked power-function profile (training/power_ema.py)."""
  ema_params: Any = None
  rng: jax.Array = None
  loss_history: Any = None
  loss_scale: Any = None
  phema_params: Any = None


def initial_loss_scale(scale: float) -> dict:
  return {"scale": jnp.asarray(scale, jnp.float32), "good": jnp.asarray(0, jnp.int32),
          "skips": jnp.asarray(0, jnp.int32)}


def update_loss_scale(loss_scale: dict, finite, grow_every: int) -> dict:
  """Dynamic loss scaling (Micikevicius et al. 2018): halve the scale after a non-finite
  gradient, double it after `grow_every` finite steps in a row."""
  good = jnp.where(finite, loss_scale["good"] + 1, 0)
  grow = good >= grow_every
  scale = jnp.where(finite, jnp.where(grow, 2 * loss_scale["scale"], loss_scale["scale"]),
                    loss_scale["scale"] / 2)
  return {"scale": scale, "good": jnp.where(grow, 0, good).astype(jnp.int32),
          "skips": loss_scale["skips"] + (1 - finite.astype(jnp.int32))}


def make_optimizer(*, learning_rate: float, warmup_steps: int, grad_clip: float,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
                   ) -> optax.GradientTransformation:
  """Adam with a linear warmup to `learning_rate` over `warmup_steps`, after clipping the
  global gradient norm to `grad_clip` (DDPM: 2e-4, 5000, 1.0)."""
  lr = (optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps > 0
        else learning_rate)
  chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  return optax.chain(*chain, optax.adam(lr, b1=beta1, b2=beta2, eps=eps))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key,
                       image_shape, num_classes: int | None, loss_history=None, *,
                       abstract: bool = False, loss_scale: float | None = None,
                       phema_profiles: int = 0) -> TrainState:
  """Initializes parameters on a dummy batch of one; EMA (and each of `phema_profiles`
  power-function EMAs) starts equal to the parameters. `loss_history` (objectives/ddpm.py
  empty_loss_history) turns on importance-sampled timesteps. With `abstract`, only the shapes and dtypes (jax.ShapeDtypeStruct leaves),
  computed without running anything: what a checkpoint of this state holds."""
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  t = jnp.zeros((1,), jnp.float32)
  y = None if num_classes is None else jnp.zeros((1,), jnp.int32)

  def state(init, key):
    init_key, run_key = jax.random.split(key)
    params = init(init_key, x, t, y)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             ema_params=jax.tree.map(jnp.copy, params),  # distinct buffers
                             rng=jax.random.key_data(run_key), loss_history=loss_history,
                             loss_scale=None if loss_scale is None else initial_loss_scale(
                                 loss_scale),
                             phema_params=tuple(jax.tree.map(jnp.copy, params)
                                                for _ in range(phema_profiles)) or None)
  if abstract:
    return jax.eval_shape(lambda k: state(model.init, k), key)
  # Run once: compiled unoptimized, which is ~3× faster to compile (the initializers' random
  # bits are most of the program) for the same values.
  return state(jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 0}), key)


def ema_update(ema, params, decay: float):
  """θ_ema ← decay · θ_ema + (1 − decay) · θ."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


AUGMENT_STREAM = 2  # folded into each example's key for its augmentation draw


def make_train_step(model: nn.Module, loss_fn: Callable, *, ema_decay: float,
                    num_classes: int | None = None, label_dropout: float = 0.0,
                    augment_fn: Callable | None = None, history: tuple | None = None,
                    grad_accum_steps: int = 1, unroll: bool = True,
                    loss_scale_every: int = 2000, phema_gammas: tuple = ()) -> Callable:
  """The per-device step. batch = {"image": [b, H, W, C] in [−1, 1], "label": [b]} and, for
  reflow's pairs, "noise" [b, H, W, C], passed to the loss as coupled_noise;
  loss_fn(net, x0, keys, probs, labels) -> (loss, metrics) with net(x, t) the network, keys[i]
  the key of example i, probs the importance distribution of t (None unless the state keeps
  a loss history) and labels the batch's (a classifier's targets); metrics hold
  "per_example_loss" and "t" (objectives/ddpm.py diffusion_loss, objectives/dsm.py dsm_loss,
  … with their options bound). The history takes the losses of the
  whole global batch in order, so every device keeps the same one.

  For class-conditional models, each label is replaced by the null label `num_classes`
  with probability `label_dropout` (classifier-free guidance training). With
  augment_fn(keys [b], images) -> (images, augment labels), each image is augmented from a key
  of its own (EDM's augmentation: objectives/augment.py) and the network is given the labels.
  With history = (probs(history) -> p_t, update(history, t, losses) -> history), the state's
  loss history gives the importance distribution of t and takes the global batch's losses
  (improved DDPM's importance sampling: objectives/ddpm.py).

  With `grad_accum_steps` = k > 1 the device's batch is split into k micro-batches of
  consecutive examples whose gradients are averaged (a lax.scan, unrolled where `unroll`:
  XLA's CPU backend runs gradient convolutions inside a while loop ~30× slower) before the one
  optimizer and EMA update: every example keeps its own keys (from its global index), so the
  update is that of the whole batch up to float32 rounding, except dropout, whose masks are
  drawn per network call (a key per micro-batch).

  Where the state holds a loss scale (float16 compute), the loss is multiplied by it before
  the backward pass and the gradient divided by it; a non-finite gradient skips the update
  (parameters, optimizer state and EMA unchanged, metrics "skipped" = 1) and halves the
  scale, `loss_scale_every` finite steps double it (update_loss_scale).

  With `phema_gammas`, the state's power-function EMAs of those exponents are updated after
  the step (training/power_ema.py update; a skipped step counts, its parameters unchanged).
  """

  def step(state: TrainState, batch):
    example_keys, dropout_key = _keys(state, batch["image"].shape[0])
    loss_keys, label_keys = jax.vmap(jax.random.split, out_axes=1)(example_keys)
    images, extra = batch["image"], {}
    if augment_fn is not None:
      augment_keys = jax.vmap(lambda k: jax.random.fold_in(k, AUGMENT_STREAM))(example_keys)
      images, extra["augment"] = augment_fn(augment_keys, images)
    y = None
    if num_classes is not None:
      drop = jax.vmap(lambda k: jax.random.bernoulli(k, label_dropout))(label_keys)
      y = jnp.where(drop, num_classes, batch["label"])
    losses = state.loss_history
    probs = None if losses is None else history[0](losses)
    scale = None if state.loss_scale is None else state.loss_scale["scale"]

    def loss_of(params, micro, dropout_key):
      def net(x_t, t):
        return model.apply({"params": params}, x_t, t, micro["y"], train=True,
                           rngs={"dropout": dropout_key}, **micro["extra"])
      coupled = {} if micro["noise"] is None else {"coupled_noise": micro["noise"]}
      loss, metrics = loss_fn(net, micro["images"], micro["keys"], probs, micro["labels"],
                              **coupled)
      return (loss if scale is None else loss * scale), metrics

    whole = {"images": images, "keys": loss_keys, "labels": batch["label"], "y": y,
             "extra": extra, "noise": batch.get("noise")}
    grads, metrics = _gradients(jax.value_and_grad(loss_of, has_aux=True), state.params, whole,
                                dropout_key, grad_accum_steps, unroll, scale)
    if losses is not None:
      gathered = [parallel.all_gather_invariant(metrics[k]) for k in ("t", "per_example_loss")]
      losses = history[1](losses, *gathered)
    metrics = jax.lax.pmean({k: v for k, v in metrics.items() if jnp.ndim(v) == 0},
                            parallel.DATA_AXIS)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.apply_gradients(grads=grads)
    new_state = new_state.replace(
        ema_params=ema_update(state.ema_params, new_state.params, ema_decay),
        loss_history=losses)
    if scale is not None:
      new_state, metrics = _skip_non_finite(state, new_state, metrics, loss_scale_every)
    if phema_gammas:
      new_state = new_state.replace(phema_params=tuple(
          power_ema.update(ema, new_state.params, new_state.step, gamma)
          for ema, gamma in zip(state.phema_params, phema_gammas, strict=True)))
    return new_state, metrics

  return step


def _keys(state: TrainState, b: int):
  """(keys [b] of this device's examples, from their global indices; this device's dropout
  key), from the state's key and step."""
  examples_key, dropout_key = jax.random.split(
      jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step))
  device = jax.lax.axis_index(parallel.DATA_AXIS)
  example_keys = jax.vmap(lambda i: jax.random.fold_in(examples_key, i))(
      device * b + jnp.arange(b))
  return example_keys, jax.random.fold_in(dropout_key, device)


def _gradients(grad_fn, params, whole, dropout_key, k: int, unroll: bool, scale):
  """(gradient of the mean loss over the global batch, this device's metrics): over k
  micro-batches where k > 1, unscaled by the loss scale where there is one."""
  if k == 1:
    (_, metrics), grads = grad_fn(params, whole, dropout_key)
  else:
    grads, metrics = _accumulate(grad_fn, params, whole, dropout_key, k, unroll)
  # The parameters are replicated (device-invariant), so shard_map returns their gradient
  # already summed over devices (the transpose of the implicit broadcast is a psum): divide
  # by the device count for the gradient of the mean loss over the global batch.
  grads = jax.tree.map(lambda g: g / jax.lax.axis_size(parallel.DATA_AXIS), grads)
  if scale is not None:
    grads = jax.tree.map(lambda g: g / scale, grads)
  return grads, metrics


def _skip_non_finite(state, new_state, metrics, grow_every: int):
  """The update where the gradient is finite, else the old parameters, optimizer state and
  EMA (the step count and key stream still advance); the loss scale updated."""
  finite = jnp.isfinite(metrics["grad_norm"])
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
  loss_scale = update_loss_scale(state.loss_scale, finite, grow_every)
  new_state = new_state.replace(
      params=keep(new_state.params, state.params),
      opt_state=keep(new_state.opt_state, state.opt_state),
      ema_params=keep(new_state.ema_params, state.ema_params), loss_scale=loss_scale)
  return new_state, {**metrics, "grad_norm": jnp.where(finite, metrics["grad_norm"], 0.0),
                     "skipped": 1.0 - finite.astype(jnp.float32),
                     "skipped_steps": loss_scale["skips"].astype(jnp.float32),
                     "loss_scale": state.loss_scale["scale"]}


def _accumulate(grad_fn, params, whole, dropout_key, k: int, unroll: bool):
  """(mean gradient, metrics) over k micro-batches of `whole` (each [b, ...] leaf split into
  [k, b/k, ...]); scalar metrics averaged, per-example ones put back in batch order."""
  micro = jax.tree.map(lambda v: v.reshape((k, v.shape[0] // k) + v.shape[1:]), whole)

  def body(total, inputs):
    m, batch = inputs
    (_, metrics), grads = grad_fn(params, batch, jax.random.fold_in(dropout_key, m))
    return jax.tree.map(jnp.add, total, grads), metrics

  zeros = jax.tree.map(jnp.zeros_like, params)
  total, metrics = jax.lax.scan(body, zeros, (jnp.arange(k), micro), unroll=unroll)
  metrics = {name: jnp.mean(v, 0) if v.ndim == 1 else v.reshape((-1,) + v.shape[2:])
             for name, v in metrics.items()}
  return jax.tree.map(lambda g: g / k, total), metrics
