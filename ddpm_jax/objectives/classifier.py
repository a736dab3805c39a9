"""Training a noise-conditional classifier p_φ(y | x_t) for classifier guidance (Dhariwal &
Nichol 2021; Song et al. 2021, appendix I): the cross-entropy of the labels given data noised
by the same forward process, at the levels the guided model is trained at,

  L = E_{u, x_0, y, ε} [ −log softmax(f_φ(x_in, c))_y ],  x_t = α x_0 + σ ε,

with (x_in, c) what the guided network is fed at that level (core/denoiser.py network_input)
and u ~ U[0, 1) the level's position: the chain step ⌊u N⌋ (DDPM), t = ε + u (T − ε)
(score SDEs), the level ⌊u L⌋ (NCSN), or σ = exp(P_mean + P_std Φ⁻¹(u)) (EDM's log-normal).
Its minimum over all classifiers is the Bayes cross-entropy E[−log p(y | x_t)].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ddpm_jax.core import denoiser
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.objectives import noise

NOISE_BINS = 4  # accuracy is reported per quarter of u: u ∈ [0, ¼) is the least noisy


def level_sampler(probe, *, train_eps: float = 1e-5, p_mean: float = -1.2, p_std: float = 1.2
                  ) -> Callable:
  """u [B] ↦ (noise input, α, σ) [B] of the guided model's process, as its Denoiser `probe`
  reads them (the module docstring's levels; `train_eps` the SDEs' first time, p_mean / p_std EDM's
  σ distribution)."""
  process = probe.process
  if probe.objective == "ddpm":
    def levels(u):
      i = jnp.minimum(jnp.floor(u * process.N), process.N - 1).astype(jnp.int32)
      return (i, *process.step_coef(i))
  elif probe.objective == "dsm":
    def levels(u):
      t = train_eps + u * (process.T - train_eps)
      alpha, sigma = process.marginal_coef(t)
      return probe.noise_input_at(t, sigma), alpha, sigma
  elif probe.objective == "ncsn":
    sigmas = jnp.asarray(process.discrete_sigmas(), jnp.float32)

    def levels(u):
      sigma = sigmas[jnp.minimum(jnp.floor(u * len(sigmas)), len(sigmas) - 1).astype(jnp.int32)]
      return jnp.log(sigma), jnp.ones_like(sigma), sigma
  elif probe.objective == "edm":
    def levels(u):
      sigma = jnp.exp(p_mean + p_std * jax.scipy.special.ndtri(jnp.clip(u, 1e-6, 1 - 1e-6)))
      return jnp.log(sigma), jnp.ones_like(sigma), sigma
  else:
    raise ValueError(f"A classifier guides networks trained by objective ddpm, dsm, ncsn or edm, not "
                     f"{probe.objective!r}.")
  return levels


def classifier_loss(net, probe, levels: Callable, x0, labels, keys):
  """(mean cross-entropy, metrics) of the logits net(x_in, c) [B, K] for labels [B] on x_0
  [B, ...] noised per example from keys [B] at levels(u); metrics: "loss", "accuracy",
  "accuracy_noise_q1…q4" (per quarter of u, over the examples in it), "per_example_loss" and
  "t" (= u)."""
  u_keys, eps_keys = noise.split(keys)
  u = noise.uniform(u_keys)
  noise_input, alpha, sigma = levels(u)
  eps = noise.normal(eps_keys, x0.shape[1:], x0.dtype)
  x_t = per_example(alpha, x0) * x0 + per_example(sigma, x0) * eps
  logits = net(*probe.network_input(x_t, noise_input, alpha, sigma))
  per_example_loss = -denoiser.label_log_probs(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  metrics = {"loss": jnp.mean(per_example_loss), "accuracy": jnp.mean(correct),
             "per_example_loss": per_example_loss, "t": u}
  bins = jnp.minimum(jnp.floor(u * NOISE_BINS), NOISE_BINS - 1)
  for b in range(NOISE_BINS):
    inside = (bins == b).astype(jnp.float32)
    metrics[f"accuracy_noise_q{b + 1}"] = jnp.sum(correct * inside) / jnp.maximum(
        jnp.sum(inside), 1.0)
  return metrics["loss"], metrics
