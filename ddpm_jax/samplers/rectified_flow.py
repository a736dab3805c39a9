"""The rectified-flow samplers (Liu et al. 2023; Esser et al. 2024): Euler and Heun on the
probability-flow ODE dx/dt = v(x, t) in the process's own time, and Euler–Maruyama on a reverse
SDE with the same marginals, for any process here (v the Denoiser's velocity α' x̂_0 + σ' ε̂).

The grid runs from T (t_start·T when editing) to eps, uniform in u and shifted as SD3's
t = s u / (1 + (s − 1) u) (grids.shifted_times; s = 1 uniform). With h = t_{i+1} − t_i < 0:

  Euler:  x_{i+1} = x_i + h v(x_i, t_i)                                (N evaluations)
  Heun:   x' = x_i + h v_i,  x_{i+1} = x_i + ½ h (v_i + v(x', t_{i+1})), the last step an
          Euler step (2N − 1 evaluations): as EDM's last step to σ = 0, it does not read the
          velocity where the path ends, whose roughness near t = 0 cost the demo model 6 FID
          at 19 NFE (17.7 against 11.5 with the grid ending at 0.05)
  SDE:    x_{i+1} = x_i + h (v_i + ½ g̃² ε̂_i/σ_i) + g̃ √|h| z,  g̃(t)² = η σ(t)
          (the reverse-time SDE dx = [v − ½ g̃² ∇log p_t] dt + g̃ dw̄, whose marginals are
          p_t for every g̃; SiT's "sigma" diffusion (Ma et al. 2024) with its norm η/2)  (N)

then (`denoise`) x̂_0(x, eps), one more evaluation. On the linear path Euler's step is DDIM's,
x_{i+1} = α_{i+1} x̂_0 + σ_{i+1} ε̂ exactly.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ddpm_jax.core.broadcast import per_example
from ddpm_jax.samplers import common, grids


def nfe(sde, *, num_steps: int, denoise: bool, heun: bool = False, **_) -> int:
  return (2 * num_steps - 1 if heun else num_steps) + denoise


def _grid(sde, num_steps, eps, shift, t_start):
  grids.check_log_snr(sde, eps)
  times = grids.shifted_times(common.check_t_start(t_start) * sde.T, float(eps),
                              int(num_steps), float(shift))
  return times, grids.coefficients_at(sde, times[0])


def _ode_loop(sde, shape, num_steps, eps, shift, denoise, t_start, heun: bool):
  shape = tuple(shape)
  times, (alpha_0, sigma_0) = _grid(sde, num_steps, eps, shift, t_start)
  steps = (jnp.asarray(times[:-1]), jnp.asarray(times[1:]))

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha_0, sigma_0, sde.prior_std())
    v = lambda y, t: model.velocity(y, jnp.full(y.shape[:1], t, y.dtype))  # noqa: E731

    def step(y, s, corrected: bool):
      t, t_next = s
      h = (t_next - t).astype(y.dtype)
      d = v(y, t)
      if corrected:
        d = 0.5 * (d + v(y + h * d, t_next))
      return y + h * d, None

    if heun:
      x, _ = jax.lax.scan(lambda y, s: step(y, s, True), x, tuple(a[:-1] for a in steps))
    x, _ = jax.lax.scan(lambda y, s: step(y, s, False), x,
                        tuple(a[-1:] if heun else a for a in steps))
    return (model.x0(x, jnp.full(x.shape[:1], times[-1], x.dtype)) if denoise else x), {}
  return loop


def flow_euler_loop(sde, shape: Sequence[int], *, num_steps: int = 50, eps: float = 1e-3,
                    shift: float = 1.0, denoise: bool = True, t_start: float | None = None):
  """The per-device Euler loop (module docstring; samplers/common.py) from x_T ~ N(0, σ_T² I)
  unless x is given (with a t_start ∈ (0, 1]: the images to edit, SDEdit)."""
  return _ode_loop(sde, shape, num_steps, eps, shift, denoise, t_start, heun=False)


def flow_heun_loop(sde, shape: Sequence[int], *, num_steps: int = 25, eps: float = 1e-3,
                   shift: float = 1.0, denoise: bool = True, t_start: float | None = None):
  """The per-device Heun loop (module docstring), as flow_euler_loop."""
  return _ode_loop(sde, shape, num_steps, eps, shift, denoise, t_start, heun=True)


def flow_sde_loop(sde, shape: Sequence[int], *, num_steps: int = 100, eps: float = 1e-3,
                  shift: float = 1.0, noise: float = 1.0, denoise: bool = True,
                  t_start: float | None = None):
  """The per-device Euler–Maruyama loop (module docstring) with g̃² = `noise` · σ(t) (0: the
  Euler ODE step), per-example noise from the keys."""
  if noise < 0:
    raise ValueError(f"The flow SDE's noise scale must be >= 0, got {noise}.")
  shape = tuple(shape)
  times, (alpha_0, sigma_0) = _grid(sde, num_steps, eps, shift, t_start)
  steps = (jnp.arange(num_steps), jnp.asarray(times[:-1]), jnp.asarray(times[1:]))

  def loop(model, keys, x, _):
    x = common.first_state(keys, shape, x, t_start, alpha_0, sigma_0, sde.prior_std())

    def step(y, s):
      i, t, t_next = s
      tb = jnp.full(y.shape[:1], t, y.dtype)
      h = (t_next - t).astype(y.dtype)
      pred, sigma = model.predict(y, tb), sde.marginal_coef(tb)[1]
      g2 = per_example(noise * sigma, y).astype(y.dtype)
      drift = (model.velocity(y, tb, pred)
               + 0.5 * g2 * pred.eps / per_example(sigma, y).astype(y.dtype))
      z = common.step_noise(keys, i, shape).astype(y.dtype)
      return y + h * drift + jnp.sqrt(g2 * -h) * z, None

    x, _ = jax.lax.scan(step, x, steps)
    return (model.x0(x, jnp.full(x.shape[:1], times[-1], x.dtype)) if denoise else x), {}
  return loop
