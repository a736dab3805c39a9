"""Exact likelihood by the probability-flow ODE (Song et al. 2021, appendix D.2).

  log p_ε(x_ε) = log p_T(x_T) + ∫_ε^T ∇·f̃(x_t, t) dt,   f̃ = f − ½ g² ∇log p_t,

f̃ the Denoiser's velocity α' x̂_0 + σ' ε̂ (a flow model's too, from T = 1 where its prior is
exact),

integrated with diffrax from x_ε = x upward, the divergence exact (small dimensions) or by
Hutchinson's estimator zᵀ (∂f̃/∂x) z with one fixed probe z per example (Rademacher or
Gaussian). For 8-bit data in [−1, 1], uniform dequantization x + U(0, 2/256) and
bits/dim = −log p / (D ln 2) + 7 (the change of variables from [−1, 1] to [0, 256)).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import common, grids, ode

DIVERGENCES = ("rademacher", "gaussian", "exact")


def divergence(fn: Callable, x, probe, method: str):
  """∇·fn at a single example x: exact trace of the Jacobian, or zᵀ J z for the probe z."""
  if method == "exact":
    flat = lambda v: fn(v.reshape(x.shape)).reshape(-1)  # noqa: E731
    return jnp.trace(jax.jacfwd(flat)(x.reshape(-1)))
  _, jz = jax.jvp(fn, (x,), (probe,))
  return jnp.sum(probe * jz)


def check_divergence(method: str) -> None:
  if method not in DIVERGENCES:
    raise ValueError(f"Unknown divergence estimator {method!r}; use one of {DIVERGENCES}.")


def hutchinson_probe(key, shape, method: str):
  """The probe z of Hutchinson's estimator (zeros for the exact divergence, which needs none)."""
  check_divergence(method)
  if method == "rademacher":
    return jax.random.rademacher(key, shape, jnp.float32)
  if method == "gaussian":
    return jax.random.normal(key, shape)
  return jnp.zeros(shape)


def nll_loop(sde, *, method: str = "rademacher", solver: str = "tsit5", rtol: float = 1e-5,
             atol: float = 1e-5, num_steps: int = 100, eps: float = 1e-5):
  """The per-device likelihood loop (samplers/common.py): x [b, ...] data, keys [b] one probe
  key per example, the model's velocity drives the ODE. Returns (log p [b] in nats, nfe [b])."""
  check_divergence(method)
  ode.make_solver(solver)
  grids.check_log_snr(sde, eps)
  rtol, atol, num_steps, eps = float(rtol), float(atol), int(num_steps), float(eps)

  def loop(model, keys, x, _):
    def one(key, x1):
      probe = hutchinson_probe(key, x1.shape, method)

      def drift(t, y):
        return model.velocity(y[None], jnp.full((1,), t, y.dtype))[0]

      def field(t, state):
        y, _ = state
        return drift(t, y), divergence(functools.partial(drift, t), y, probe, method)

      (x_t, delta), nfe = ode.solve(field, (x1, jnp.zeros(())), eps, sde.T, solver=solver,
                                    rtol=rtol, atol=atol, num_steps=num_steps)
      return sde_lib.prior_logp(sde, x_t[None])[0] + delta, nfe

    return jax.vmap(one)(keys, x)
  return loop


def ode_log_likelihood(model, x, key, *, method: str = "rademacher", solver: str = "tsit5",
                       rtol: float = 1e-5, atol: float = 1e-5, num_steps: int = 100,
                       eps: float = 1e-5, mesh=None):
  """log p(x) in nats per example [B] under the probability-flow ODE of the Denoiser
  `model`, and the function evaluations per example."""
  loop = nll_loop(model.process, method=method, solver=solver, rtol=rtol, atol=atol,
                  num_steps=num_steps, eps=eps)
  return common.run(loop, model, key, x.shape[0], mesh=mesh, x_init=x)


def dequantize(key, x):
  """8-bit values in [−1, 1] (multiples of 2/255 shifted) → x·255/256 + U(0, 2/256) scaled so
  that the 256 bins tile [−1, 1)."""
  u = jnp.round((x + 1) * 127.5)
  return (u + jax.random.uniform(key, x.shape)) / 128.0 - 1.0


def bits_per_dim(log_likelihood, num_dims: int):
  """bits/dim of dequantized 8-bit data from log p of x ∈ [−1, 1]: −log p/(D ln 2) + 7."""
  return -log_likelihood / (num_dims * np.log(2.0)) + 7.0
