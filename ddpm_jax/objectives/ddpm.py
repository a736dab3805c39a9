"""DDPM training objectives. Each takes a model callable `model(x_t, t) -> output` and returns
(loss, metrics), the loss a scalar mean over the batch.

  simple: L_simple = E_t ‖target − f_θ(x_t, t)‖² with target ε, x_0 or v (DDPM, eq. 14)
  vlb:    T · L_t, an unbiased one-term estimate of the variational bound Σ_t L_t (bits/dim)
  hybrid: L_simple + λ T L_t with the mean output frozen inside L_t (improved DDPM, λ = 1e-3)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ddpm_jax.core import chain, denoiser
from ddpm_jax.core.schedules import Schedule
from ddpm_jax.objectives import noise as noise_lib

LOSS_TYPES = ("simple", "vlb", "hybrid")
TIMESTEP_SAMPLERS = ("uniform", "antithetic", "importance")
HISTORY_PER_TIMESTEP = 10  # losses kept per timestep for importance sampling (improved DDPM)


def sample_timesteps(keys, num_timesteps: int, method: str = "uniform", probs=None):
  """Draws t ∈ {0..T−1} for each example from its own key, and the importance weights
  1/(T p_t) that keep the loss an unbiased estimate of the uniform-t average.

  uniform: t ~ U; antithetic: the first half ~ U, the second half T−1−t (pairs within this
  batch; needs an even size); importance: t ~ probs (e.g. from `second_moment_probs`).
  """
  batch_size = keys.shape[0]
  uniform = lambda k: jax.random.randint(k, (), 0, num_timesteps)  # noqa: E731
  ones = jnp.ones((batch_size,), jnp.float32)
  if method == "uniform":
    return jax.vmap(uniform)(keys), ones
  if method == "antithetic":
    if batch_size % 2:
      raise ValueError(f"Antithetic timesteps need an even batch size, got {batch_size}.")
    half = jax.vmap(uniform)(keys[:batch_size // 2])
    return jnp.concatenate([half, num_timesteps - 1 - half]), ones
  if method == "importance":
    if probs is None:
      raise ValueError("Importance-sampled timesteps need probs (length T); "
                       "compute them with second_moment_probs.")
    t = jax.vmap(lambda k: jax.random.choice(k, num_timesteps, p=probs))(keys)
    return t, 1.0 / (num_timesteps * probs[t])
  raise ValueError(f"Unknown timestep sampler {method!r}; use one of {TIMESTEP_SAMPLERS}.")


def second_moment_probs(loss_history, uniform_prob: float = 1e-3):
  """p_t ∝ √E[L_t²] over a [T, K] history of recent per-t losses, mixed with
  `uniform_prob` of the uniform distribution (improved DDPM §3.3)."""
  w = jnp.sqrt(jnp.mean(loss_history**2, axis=-1))
  p = w / jnp.sum(w)
  return p * (1 - uniform_prob) + uniform_prob / loss_history.shape[0]


def empty_loss_history(num_timesteps: int, per_timestep: int = HISTORY_PER_TIMESTEP) -> dict:
  """{"losses": [T, K] the last K losses seen at each t, "counts": [T] how many are held}."""
  return {"losses": jnp.zeros((num_timesteps, per_timestep), jnp.float32),
          "counts": jnp.zeros((num_timesteps,), jnp.int32)}


def update_loss_history(history: dict, t, per_example_loss) -> dict:
  """Appends each example's loss to its timestep's history in batch order, the oldest of a
  full row dropped (improved DDPM's LossSecondMomentResampler.update_with_all_losses)."""
  k = history["losses"].shape[1]

  def add(h, t_and_loss):
    ti, loss = t_and_loss
    row, n = h["losses"][ti], h["counts"][ti]
    row = jnp.where(n == k, jnp.roll(row, -1).at[-1].set(loss),
                    row.at[jnp.minimum(n, k - 1)].set(loss))
    return {"losses": h["losses"].at[ti].set(row),
            "counts": h["counts"].at[ti].set(jnp.minimum(n + 1, k))}, None

  history, _ = jax.lax.scan(add, history, (t, per_example_loss.astype(jnp.float32)))
  return history


def history_probs(history: dict):
  """The importance distribution of t: uniform until every timestep holds K losses (the
  warm-up), then `second_moment_probs` of the history."""
  losses, counts = history["losses"], history["counts"]
  warm = jnp.all(counts == losses.shape[1])
  return jnp.where(warm, second_moment_probs(losses), 1.0 / losses.shape[0])


def _noised(schedule: Schedule, x0, keys, t_method, probs):
  t_keys, noise_keys = noise_lib.split(keys)
  t, weights = sample_timesteps(t_keys, schedule.num_timesteps, t_method, probs)
  noise = noise_lib.normal(noise_keys, x0.shape[1:], x0.dtype)
  return t, weights, noise, chain.q_sample(schedule, x0, t, noise)


def _reverse(schedule: Schedule, mean_type: str, var_type: str, mean_out, var_out, x_t, t):
  """p_θ(x_{t−1} | x_t) of a raw network output (its x̂_0 by denoiser.convert)."""
  alpha, sigma = (chain.extract(c, t, x_t) for c in (schedule.sqrt_alpha_bars,
                                                      schedule.sqrt_one_minus_alpha_bars))
  x0, _ = denoiser.convert(mean_type, mean_out, x_t, alpha, sigma)
  return chain.p_mean_variance(schedule, x0, var_out, x_t, t, var_type)


def diffusion_loss(model: Callable, schedule: Schedule, x0, keys, *, loss_type: str = "simple",
                   mean_type: str = "eps", var_type: str = "fixed_small",
                   vlb_weight: float = 1e-3, t_method: str = "uniform", probs=None):
  """One Monte-Carlo estimate of the chosen objective on a batch x0 (data scaled to [−1, 1]),
  with example i's timestep and noise drawn from keys[i].

  Returns (loss, metrics) where metrics holds the batch mean of each term and the per-example
  loss with its timesteps (for importance-sampling bookkeeping).
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"Unknown loss_type {loss_type!r}; use one of {LOSS_TYPES}.")
  if loss_type == "hybrid" and not chain.learns_variance(var_type):
    raise ValueError("The hybrid loss trains the variance: set var_type to 'learned' or "
                     f"'learned_range' (got {var_type!r}), or use loss_type 'simple'.")
  t, weights, noise, x_t = _noised(schedule, x0, keys, t_method, probs)
  mean_out, var_out = chain.split_output(model(x_t, t).astype(jnp.float32), var_type)
  terms = {}
  if loss_type in ("simple", "hybrid"):
    tgt = chain.target(schedule, mean_type, x0, t, noise)
    terms["mse"] = chain.mean_flat((tgt - mean_out)**2)
  if loss_type in ("vlb", "hybrid"):
    if loss_type == "hybrid":  # L_vlb trains only the variance
      mean_out = jax.lax.stop_gradient(mean_out)
    p = _reverse(schedule, mean_type, var_type, mean_out, var_out, x_t, t)
    vb = chain.vlb_term_bpd(schedule, p, x0, x_t, t)
    terms["vb"] = vb * schedule.num_timesteps * (vlb_weight if loss_type == "hybrid" else 1.0)
  per_example = sum(terms.values())
  loss = jnp.mean(weights * per_example)
  metrics = {k: jnp.mean(v) for k, v in terms.items()}
  metrics.update(loss=loss, per_example_loss=per_example, t=t)
  return loss, metrics


def vlb_bpd(model: denoiser.Denoiser, x0, key):
  """The full variational bound in bits/dim per example: Σ_{t=0}^{T−1} L_t + L_prior, each
  L_t evaluated at one x_t ~ q(x_t | x_0) (improved DDPM `calc_bpd_loop`), of a DDPM network's
  denoiser (on its discrete chain).

  `key` is one (typed) key, split per example, or [B] keys, one per example; example i's noise at
  step t comes from fold_in(its key, t), so its bound does not depend on the batch it is in.
  Returns (total [B], terms [T, B], prior [B]).
  """
  keys = jax.random.split(key, x0.shape[0]) if jnp.ndim(key) == 0 else key
  schedule = model.process.schedule()

  def term(_, t):
    tt = chain.timesteps_like(x0, t)
    noise = noise_lib.normal(jax.vmap(lambda k: jax.random.fold_in(k, t))(keys), x0.shape[1:],
                             x0.dtype)
    x_t = chain.q_sample(schedule, x0, tt, noise)
    pred = model.predict_step(x_t, tt)
    p = chain.p_mean_variance(schedule, pred.x0, pred.var_out, x_t, tt, model.var_type)
    return None, chain.vlb_term_bpd(schedule, p, x0, x_t, tt)

  _, terms = jax.lax.scan(term, None, jnp.arange(schedule.num_timesteps))
  prior = chain.prior_bpd(schedule, x0)
  return jnp.sum(terms, axis=0) + prior, terms, prior
