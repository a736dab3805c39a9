"""Flow matching (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023) on a
Gaussian path x_t = α(t) x_0 + σ(t) ε (core/paths.py):

  L = E_t E_{x_0, ε} w(t) ‖v̂(x_t, t) − (α' x_0 + σ' ε)‖²,

v̂ the model's velocity (core/denoiser.py velocity: the network's own output for a velocity
network). `weighting` w: "velocity" (w = 1, flow matching's), or the equivalent ε-MSE
(w = (α/d)², since ε̂ − ε = α (v̂ − v)/d) or x̂_0-MSE (w = (σ/d)²), d = α σ' − σ α'.

Times t are drawn by `t_sampler`:
  uniform       t ~ U[0, 1);
  logit_normal  t = sigmoid(m + s n), n ~ N(0, 1) (SD3's "rf/lognorm(m, s)", Esser et al. 2024);
  mode          t = 1 − u − c (cos²(πu/2) − 1 + u), u ~ U[0, 1) (SD3's mode sampling, scale c
                ∈ [−1, 2/(π − 2)]: c > 0 puts more weight on the middle of the path);
and kept at ≥ 10⁻⁵, where an x̂_0 network's ε̂ = (x − α x̂_0)/σ divides by σ.

Reflow (Liu et al. 2023) trains on coupled pairs (x_0, ε) = (ODE(z), z) drawn from a trained
flow model instead of independent ones (`noise`); its straightness on such pairs,
S = E_t ‖(ε − x_0) − v̂(x_t, t)‖² (`straightness`, on the linear path), is 0 exactly when every
trajectory is a straight line, where one Euler step is exact.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import paths
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.objectives import noise

T_SAMPLERS = ("uniform", "logit_normal", "mode")
WEIGHTINGS = ("velocity", "eps", "x0")
T_MIN = 1e-5
MODE_SCALE_MAX = 2 / (np.pi - 2)  # above it t(u) is not monotone in u


def sample_t(u, n, t_sampler: str, *, logit_mean: float = 0.0, logit_std: float = 1.0,
             mode_scale: float = 1.29):
  """Times t ∈ [T_MIN, 1] from u ~ U[0, 1) and n ~ N(0, 1) per example (module docstring)."""
  if t_sampler == "uniform":
    t = u
  elif t_sampler == "logit_normal":
    t = jax.nn.sigmoid(logit_mean + logit_std * n)
  elif t_sampler == "mode":
    t = 1 - u - mode_scale * (jnp.cos(0.5 * jnp.pi * u)**2 - 1 + u)
  else:
    raise ValueError(f"Unknown flow t_sampler {t_sampler!r}; use one of {T_SAMPLERS}.")
  return jnp.clip(t, T_MIN, 1.0)


def loss_weight(path, t, weighting: str):
  """w(t) of the velocity MSE that makes it the `weighting`'s MSE (module docstring)."""
  if weighting == "velocity":
    return jnp.ones_like(t)
  (alpha, sigma), (d_alpha, d_sigma) = path.marginal_coef(t), paths.marginal_rates(path, t)
  det = alpha * d_sigma - sigma * d_alpha
  if weighting == "eps":
    return (alpha / det)**2
  if weighting == "x0":
    return (sigma / det)**2
  raise ValueError(f"Unknown flow weighting {weighting!r}; use one of {WEIGHTINGS}.")


def flow_loss(velocity_fn: Callable, path, x0, keys, *, t_sampler: str = "uniform",
              logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29,
              weighting: str = "velocity", coupled_noise=None):
  """The flow-matching loss on a batch x0, example i's t and ε from keys[i], or ε the
  `coupled_noise` paired with x0 (reflow). Returns (loss, metrics)."""
  t_keys, z_keys = noise.split(keys)
  u_keys, n_keys = noise.split(t_keys)
  t = sample_t(noise.uniform(u_keys), jax.vmap(lambda k: jax.random.normal(k, ()))(n_keys),
               t_sampler, logit_mean=logit_mean, logit_std=logit_std, mode_scale=mode_scale)
  eps = (noise.normal(z_keys, x0.shape[1:], x0.dtype) if coupled_noise is None
         else coupled_noise.astype(x0.dtype))
  per = loss_weight(path, t, weighting) * _velocity_error(velocity_fn, path, x0, eps, t)
  loss = jnp.mean(per)
  return loss, {"loss": loss, "per_example_loss": per, "t": t}


def straightness(velocity_fn: Callable, path, x0, x1, keys):
  """Per-example S = ‖(α' x_0 + σ' x_1) − v̂(x_t, t)‖² / D at one t ~ U[T_MIN, 1) from keys[i],
  x_t = α x_0 + σ x_1, for pairs (x_0, x_1) = (ODE(z), z) of the model's own coupling: v̂ on the
  line between the pair's ends against the line's velocity (x_1 − x_0 on the linear path). Like
  Liu et al. 2023's S, which follows the flow's own trajectories instead, it is 0 exactly when
  they are straight."""
  return _velocity_error(velocity_fn, path, x0, x1, jnp.clip(noise.uniform(keys), T_MIN, 1.0))


def _velocity_error(velocity_fn: Callable, path, x0, x1, t):
  """‖v̂(x_t, t) − (α' x_0 + σ' x_1)‖² / D per example, x_t = α x_0 + σ x_1 at times t [B]."""
  (alpha, sigma), (d_alpha, d_sigma) = path.marginal_coef(t), paths.marginal_rates(path, t)
  x_t = per_example(alpha, x0) * x0 + per_example(sigma, x0) * x1
  err = velocity_fn(x_t, t).astype(jnp.float32) - (per_example(d_alpha, x0) * x0
                                                   + per_example(d_sigma, x0) * x1)
  return jnp.mean(err**2, axis=tuple(range(1, x0.ndim)))
