"""DDIM (Song et al. 2021): the non-Markovian reverse process on a timestep sub-sequence.

  x_{τ'} = √ᾱ_{τ'} x̂_0 + √(1 − ᾱ_{τ'} − σ²) ε̂ + σ z,
  σ = η √((1 − ᾱ_{τ'}) / (1 − ᾱ_τ)) √(1 − ᾱ_τ / ᾱ_{τ'}),

for consecutive τ > τ' of the sub-sequence, with ᾱ = 1 after the last step. η = 0 is the
deterministic sampler (and its inverse encodes x_0 → x_T); η = 1 on the full schedule is
DDPM ancestral sampling with σ² = β̃.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import chain
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.core.schedules import Schedule
from ddpm_jax.samplers import ancestral, common

SKIP_TYPES = ("uniform", "quadratic", "trailing")
ETA = (0.0, 1.0)  # the closed range of η


def ddim_timesteps(num_timesteps: int, num_steps: int, skip_type: str = "uniform") -> tuple:
  """The increasing sub-sequence τ_1 < … < τ_S of {0..T−1}.

  uniform:   τ_i = (i−1)·⌊T/S⌋ (DDIM repo);
  quadratic: ⌊(linspace(0, √(0.8T), S))²⌋ (DDIM repo), repeated small values raised to stay
             strictly increasing;
  trailing:  round(T − i·T/S) − 1, which starts at T−1 (Lin et al. 2023).
  """
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"num_steps must be in [1, {num_timesteps}] (the schedule's T), "
                     f"got {num_steps}.")
  if skip_type == "uniform":
    seq = np.arange(num_steps) * (num_timesteps // num_steps)
  elif skip_type == "quadratic":
    seq = (np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps)**2).astype(np.int64)
    steps = np.arange(num_steps)  # the floor repeats small t; raise them to stay increasing
    seq = np.maximum.accumulate(seq - steps) + steps  # still ends at ⌊0.8T⌋ or S−1
  elif skip_type == "trailing":
    seq = np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int64)[::-1] - 1
  else:
    raise ValueError(f"Unknown skip_type {skip_type!r}; use one of {SKIP_TYPES}.")
  return tuple(int(t) for t in seq)


def ddim_sigma(alpha_bar, alpha_bar_prev, eta):
  """σ(η) = η √((1 − ᾱ') / (1 − ᾱ)) √(1 − ᾱ / ᾱ')."""
  return eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))


def ddim_step(model, schedule: Schedule, x, t, t_prev, noise, *, eta):
  """x_τ → x_{τ'} with τ' = t_prev (−1 means ᾱ' = 1, i.e. the final x_0) for the Denoiser
  `model` (its clipping; a variance output is ignored). Returns (x_{τ'}, x̂_0)."""
  pred = model.predict_step(x, chain.timesteps_like(x, t))
  ab = schedule.alpha_bars[t]
  ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
  sigma = ddim_sigma(ab, ab_prev, eta)
  x_prev = (jnp.sqrt(ab_prev) * pred.x0 + jnp.sqrt(jnp.maximum(1 - ab_prev - sigma**2, 0.0))
            * pred.eps + sigma * noise)
  return x_prev, pred.x0


def check_eta(eta: float) -> float:
  if not ETA[0] <= eta <= ETA[1]:
    raise ValueError(f"eta must be in [{ETA[0]:g}, {ETA[1]:g}] (0: deterministic DDIM, 1: "
                     f"DDPM-like), got {eta}.")
  return float(eta)


def ddim_loop(sde, shape: Sequence[int], *, num_steps: int = 50, eta: float = 0.0,
              skip_type: str = "uniform", timesteps: Sequence[int] | None = None,
              record_steps: Sequence[int] = (), t_start: float | None = None):
  """The per-device DDIM loop (samplers/common.py) on a sub-sequence of the chain of `sde` (a
  DiscreteVPSDE) for examples of `shape`, from x_T ~ N(0, I) unless x is given; with
  a t_start ∈ (0, 1] on the steps up to round(t_start (N − 1)), x the data to edit (SDEdit)."""
  schedule = ancestral.chain_schedule(sde)
  eta, shape, record_steps = check_eta(eta), tuple(shape), tuple(int(t) for t in record_steps)
  seq = np.asarray(_sequence(schedule, num_steps, skip_type, timesteps, t_start))[::-1]
  prev = np.append(seq[1:], -1)
  ab = float(schedule.alpha_bars[seq[0]])

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, ab**0.5, (1 - ab)**0.5, 1.0)

    def step(x, s):
      t, t_prev = s
      noise = common.step_noise(keys, t, shape) if eta else jnp.zeros_like(x)
      x_prev, x0 = ddim_step(model, schedule, x, t, t_prev, noise, eta=eta)
      return x_prev, x0, t

    return common.scan_recorded(step, x, (jnp.asarray(seq), jnp.asarray(prev)), record_steps)
  return loop


def nfe(sde, *, num_steps: int, timesteps: Sequence[int] | None, **_) -> int:
  """Network evaluations per sample: one per step of the sub-sequence."""
  return num_steps if timesteps is None else len(timesteps)


def encode_loop(sde, *, num_steps: int = 50, skip_type: str = "uniform",
                timesteps: Sequence[int] | None = None):
  """The per-device DDIM inversion loop (samplers/common.py): x = x_0 → x_{τ_S}; no keys."""
  schedule = ancestral.chain_schedule(sde)
  seq = np.asarray(_sequence(schedule, num_steps, skip_type, timesteps))

  def loop(model, _, x, __):
    model = model.replace(clip_x0=False)  # encoding inverts the unclipped map

    def body(x, step):
      t_cur, t_next = step
      # ε is evaluated at the current state and the target timestep: the standard
      # approximation of the implicit inverse, exact as the steps shrink.
      eps = model.predict_step(x, chain.timesteps_like(x, t_next)).eps
      ab_cur = jnp.where(t_cur >= 0, schedule.alpha_bars[jnp.maximum(t_cur, 0)], 1.0)
      ab_next = schedule.alpha_bars[t_next]
      x0 = (x - jnp.sqrt(1 - ab_cur) * eps) / jnp.sqrt(ab_cur)
      return jnp.sqrt(ab_next) * x0 + jnp.sqrt(1 - ab_next) * eps, None

    x, _ = jax.lax.scan(body, x, (jnp.asarray(np.append(-1, seq[:-1])), jnp.asarray(seq)))
    return x, {}
  return loop


def ddim_encode(model, x0, *, num_steps: int = 50, skip_type: str = "uniform",
                timesteps: Sequence[int] | None = None, cond=None, mesh=None):
  """Deterministic DDIM inversion x_0 → x_{τ_S} of the Denoiser `model`: the η = 0 sampler
  run backwards. Decoding the result with DDIM (η = 0, x_T = the latent, no clipping) on the
  same sub-sequence gives x_0 back up to the discretization error."""
  loop = encode_loop(model.process, num_steps=num_steps, skip_type=skip_type,
                     timesteps=timesteps)
  return common.run(loop, model, None, x0.shape[0], mesh=mesh, x_init=x0, cond=cond)[0]


def _sequence(schedule, num_steps, skip_type, timesteps, t_start: float | None = None
              ) -> tuple:
  """The sub-sequence: given, or of the chain's steps up to the start step (all of them for
  t_start = 1)."""
  if timesteps is None:
    available = ancestral.start_step(schedule.num_timesteps, t_start) + 1
    if t_start is not None and num_steps > available:
      raise ValueError(f"DDIM from t_start={t_start:g} has {available} chain steps to take; "
                       f"lower num_steps (sampling.num_steps) to at most {available}.")
    return ddim_timesteps(available, num_steps, skip_type)
  if t_start is not None:
    raise ValueError("Give either DDIM timesteps or t_start, not both.")
  seq = tuple(int(t) for t in timesteps)
  if (list(seq) != sorted(set(seq)) or not seq or seq[0] < 0
      or seq[-1] >= schedule.num_timesteps):
    raise ValueError(f"timesteps must be strictly increasing within [0, "
                     f"{schedule.num_timesteps - 1}], got {seq[:5]}...")
  return seq


def slerp(z0, z1, alpha):
  """Spherical interpolation per example: sin((1−α)θ)/sin θ · z0 + sin(αθ)/sin θ · z1,
  θ the angle between the flattened z0 and z1 (DDIM §5.3)."""
  flat0 = z0.reshape(z0.shape[0], -1)
  flat1 = z1.reshape(z1.shape[0], -1)
  cos = jnp.sum(flat0 * flat1, -1) / (jnp.linalg.norm(flat0, axis=-1) * jnp.linalg.norm(flat1, axis=-1))
  theta = per_example(jnp.arccos(jnp.clip(cos, -1.0, 1.0)), z0)
  alpha = jnp.asarray(alpha, z0.dtype)
  return (jnp.sin((1 - alpha) * theta) * z0 + jnp.sin(alpha * theta) * z1) / jnp.sin(theta)
