"""Predictor–corrector sampling of the reverse SDE (Song et al. 2021, Alg. 1–4), one lax.scan.

On the grid t_i = linspace(T, ε, N), each step runs the corrector then the predictor:
  predictors  euler_maruyama   x ← x + [f − g² s] Δt + g √|Δt| z,  Δt = −1/N
              reverse_diffusion x ← x − f_i + G_i² s + G_i z  (the SDE's own discretization)
              ancestral        DDPM (VP) / NCSN (VE) ancestral step
              none
  correctors  langevin         x ← x + δ s + √(2δ) z,  δ = 2 α_i (r ‖z‖ / ‖s‖)²
              ald              the same with δ = 2 α_i (r σ(t))² (annealed Langevin)
              none
with s the score and r the signal-to-noise ratio. Norms are per example (score_sde averages
them over the batch), so samples do not depend on the batch or device split. Inpainting and
colorization replace the known part by the data noised to t after every step.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import sde as sde_lib
from ddpm_jax.core.broadcast import per_example
from ddpm_jax.samplers import common, grids

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")


def _norm(v):
  return jnp.sqrt(jnp.sum(v**2, axis=tuple(range(1, v.ndim))))


def _alpha_i(sde, t):
  """α_i = 1 − β_i of the discrete chain for VP-type SDEs, 1 for VE."""
  if isinstance(sde, sde_lib.VESDE):
    return jnp.ones_like(t)
  return 1 - sde.discrete_beta(t)


def predictor_step(name, sde, score_fn, x, t, z):
  """One predictor update; returns (x, x_mean)."""
  b = lambda v: per_example(v, x)  # noqa: E731
  if name == "none":
    return x, x
  if name == "euler_maruyama":
    dt = -1.0 / sde.N
    drift, g = sde_lib.reverse_sde(sde, score_fn, x, t)
    x_mean = x + drift * dt
    return x_mean + b(g) * np.sqrt(-dt) * z, x_mean
  if name == "reverse_diffusion":
    rev_f, rev_g = sde_lib.reverse_discretize(sde, score_fn, x, t)
    x_mean = x - rev_f
    return x_mean + b(rev_g) * z, x_mean
  if name == "ancestral":
    score = score_fn(x, t)
    if isinstance(sde, sde_lib.VESDE):
      sigma, adj = sde.adjacent_sigmas(t)
      x_mean = x + b(sigma**2 - adj**2) * score
      return x_mean + b(jnp.sqrt(adj**2 * (sigma**2 - adj**2) / sigma**2)) * z, x_mean
    if isinstance(sde, (sde_lib.VPSDE, sde_lib.DiscreteVPSDE)) and not isinstance(
        sde, sde_lib.SubVPSDE):
      beta = sde.discrete_beta(t)
      x_mean = (x + b(beta) * score) / b(jnp.sqrt(1 - beta))
      return x_mean + b(jnp.sqrt(beta)) * z, x_mean
    raise ValueError("The ancestral predictor needs a VP or VE SDE; use 'euler_maruyama' "
                     "for sub-VP.")
  raise ValueError(f"Unknown predictor {name!r}; use one of {PREDICTORS}.")


def corrector_step(name, sde, score_fn, x, t, z, snr):
  """One Langevin corrector update; returns (x, x_mean)."""
  if name == "none":
    return x, x
  score = score_fn(x, t)
  alpha = _alpha_i(sde, t)
  if name == "langevin":
    step = 2 * alpha * (snr * _norm(z) / _norm(score))**2
  elif name == "ald":
    step = 2 * alpha * (snr * sde.marginal_coef(t)[1])**2
  else:
    raise ValueError(f"Unknown corrector {name!r}; use one of {CORRECTORS}.")
  step = per_example(step, x)
  x_mean = x + step * score
  return x_mean + jnp.sqrt(2 * step) * z, x_mean


def check_options(sde, predictor: str, corrector: str) -> None:
  """Known names, and a predictor that the SDE has: sub-VP has no discrete chain for the
  reverse_diffusion and ancestral predictors."""
  if predictor not in PREDICTORS:
    raise ValueError(f"Unknown predictor {predictor!r}; use one of {PREDICTORS}.")
  if corrector not in CORRECTORS:
    raise ValueError(f"Unknown corrector {corrector!r}; use one of {CORRECTORS}.")
  if isinstance(sde, sde_lib.SubVPSDE) and predictor in ("reverse_diffusion", "ancestral"):
    raise ValueError(f"The PC predictor {predictor!r} steps the SDE's discrete chain, which "
                     f"the sub-VP SDE does not have; use predictor 'euler_maruyama' "
                     f"(sampling.predictor) or the probability-flow ODE.")


def pc_loop(sde, shape: Sequence[int], *, predictor: str = "reverse_diffusion",
            corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
            eps: float = 1e-3, denoise: bool = True, task: str | None = None,
            t_start: float | None = None):
  """The per-device PC loop (samplers/common.py) over the N levels of `sde` for examples of
  `shape` from x_T ~ N(0, σ_T² I) unless x is given; the model's score drives it. With a
  `task` ("inpaint" or "colorize"), extra = (data, mask) and the known part follows the
  data. With a t_start ∈ (0, 1], the round(t_start N) levels from t_start·T down, x the data to
  edit (SDEdit)."""
  check_options(sde, predictor, corrector)
  grids.check_log_snr(sde, eps)
  shape, snr, n_steps, eps = tuple(shape), float(snr), int(n_steps), float(eps)
  levels = num_levels(sde, t_start)
  t_first = float(common.check_t_start(t_start) * sde.T)
  alpha, sigma = grids.coefficients_at(sde, t_first)

  def loop(model, keys, x, extra):
    score_fn = model.score
    x = common.first_state(keys, shape, x, t_start, alpha, sigma, sde.prior_std())
    timesteps = jnp.linspace(t_first, eps, levels)
    known = _known_fn(sde, task, extra, keys, shape)
    x = known(x, timesteps[0], 0)

    def body(carry, i):
      x, _ = carry
      t = jnp.full(x.shape[:1], timesteps[i])
      for j in range(n_steps):
        x, _ = corrector_step(corrector, sde, score_fn, x, t,
                              common.step_noise(keys, i * (n_steps + 1) + j, shape), snr)
        x = known(x, timesteps[i], 1 + i * (n_steps + 1) + j)
      x, x_mean = predictor_step(predictor, sde, score_fn, x, t,
                                 common.step_noise(keys, i * (n_steps + 1) + n_steps, shape))
      return (known(x, timesteps[i], 1 + i * (n_steps + 1) + n_steps), x_mean), None

    (x, x_mean), _ = jax.lax.scan(body, (x, x), jnp.arange(levels))
    return _finish(task, extra, x_mean if denoise else x), {}
  return loop


def num_levels(sde, t_start: float) -> int:
  """The levels a PC run started at t_start·T steps: N, or round(t_start N) (at least 1)."""
  return max(1, int(round(common.check_t_start(t_start) * sde.N)))


def nfe(sde, *, predictor: str, corrector: str, n_steps: int, t_start: float | None = None,
        **_) -> int:
  """Network evaluations per sample: the levels × (predictor + corrector steps)."""
  return num_levels(sde, t_start) * ((predictor != "none") + (corrector != "none") * n_steps)


# ------------------------------------------------------------------ conditional tasks

def colorization_matrix(channels: int = 3) -> np.ndarray:
  """An orthogonal M whose first row is (1, …, 1)/√C: in y = x Mᵀ, channel 0 is √C × the
  grey value, the rest are colour directions orthogonal to it."""
  a = np.eye(channels)
  a[:, 0] = 1.0
  q, _ = np.linalg.qr(a)
  return (q * np.sign(q[0, 0])).T


def _to_task_space(task, v):
  return v @ colorization_matrix(v.shape[-1]).T if task == "colorize" else v


def _from_task_space(task, v):
  return v @ colorization_matrix(v.shape[-1]) if task == "colorize" else v


def _known_fn(sde, task, extra, keys, shape):
  """x ← (1 − m) x + m · (α(t) data + σ(t) z) in the task's space; identity without a task."""
  if task is None:
    return lambda x, t, step: x
  data, mask = extra

  def known(x, t, step):
    tt = jnp.full(x.shape[:1], t)
    mean, std = sde_lib.marginal_prob(sde, _to_task_space(task, data), tt)
    noisy = mean + per_example(std, x) * common.data_noise(keys, step, shape)
    y = _to_task_space(task, x)
    return _from_task_space(task, y * (1 - mask) + noisy * mask)
  return known


def _finish(task, extra, out):
  """The known part is set to the data exactly at the end."""
  if task is None:
    return out
  data, mask = extra
  y = _to_task_space(task, out)
  return _from_task_space(task, y * (1 - mask) + _to_task_space(task, data) * mask)


def pc_inpaint(model, key, data, mask, *, predictor="reverse_diffusion", corrector="langevin",
               snr=0.16, n_steps=1, eps=1e-3, cond=None, mesh=None):
  """Fills the pixels where mask = 0 (mask broadcastable to data, 1 = known) with PC sampling
  of the Denoiser `model`. The known pixels of the result equal `data` exactly."""
  mask = jnp.broadcast_to(jnp.asarray(mask, data.dtype), data.shape)
  loop = pc_loop(model.process, data.shape[1:], predictor=predictor, corrector=corrector,
                 snr=snr, n_steps=n_steps, eps=eps, task="inpaint")
  return common.run(loop, model, key, data.shape[0], mesh=mesh, cond=cond,
                    extra=(data, mask))[0]


def pc_colorize(model, key, gray, *, predictor="reverse_diffusion", corrector="langevin",
                snr=0.16, n_steps=1, eps=1e-3, cond=None, mesh=None):
  """Colour images [B, H, W, C] whose channel mean equals that of `gray` (any [B, H, W, C]
  array with the wanted grey level, e.g. the grey image repeated over channels); the
  result's channel mean equals it to float precision."""
  mask = jnp.zeros(gray.shape, gray.dtype).at[..., 0].set(1.0)
  data = jnp.broadcast_to(jnp.mean(gray, axis=-1, keepdims=True), gray.shape)
  loop = pc_loop(model.process, gray.shape[1:], predictor=predictor, corrector=corrector,
                 snr=snr, n_steps=n_steps, eps=eps, task="colorize")
  return common.run(loop, model, key, gray.shape[0], mesh=mesh, cond=cond,
                    extra=(data, mask))[0]
