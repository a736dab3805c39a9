"""Continuous-time diffusions dx = f(x, t) dt + g(t) dw on t ∈ [0, T] (Song et al. 2021).

Each SDE is a frozen (hashable) dataclass; its marginal is x_t | x_0 ~ N(α(t) x_0, σ(t)² I).
  VP:     f = −½ β(t) x,  g = √β(t),  β(t) = β_min + t (β_max − β_min);
          α = exp(−¼ t² (β_max − β_min) − ½ t β_min),  σ = √(1 − α²).
  sub-VP: f as VP,  g = √(β(t) (1 − α(t)⁴)),  σ = 1 − α².
  VE:     f = 0,  g = σ(t) √(2 log(σ_max/σ_min)),  σ(t) = σ_min (σ_max/σ_min)^t,  α = 1.
  discrete VP: the VP process of any DDPM β schedule, log α interpolated between its steps.
`discretize` gives the N-step chains: VP is the DDPM chain with β_i = β(i/N)/N spaced linearly,
VE the NCSN chain over geometric σ levels (both from `schedules`). A time t ∈ [0, T] maps to
step i = ⌊t (N − 1)/T⌋ of the chain (`time_index`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax.core import schedules
from ddpm_jax.core.broadcast import per_example

SDE_NAMES = ("vp", "subvp", "ve")


def time_index(sde, t):
  """The step i = ⌊t (N − 1)/T⌋ of the N-step chain at time t (floor, as score_sde)."""
  return (t * (sde.N - 1) / sde.T).astype(jnp.int32)


class _VariancePreserving:
  """What the VP SDEs share, given their β(t) and the chain's β_i (discrete_betas)."""
  T = 1.0

  def discrete_beta(self, t):
    """β_i of the chain's step at time t."""
    return jnp.asarray(self.discrete_betas(), jnp.float32)[time_index(self, t)]

  def sde(self, x, t):
    beta = per_example(self.beta(t), x)
    return -0.5 * beta * x, jnp.sqrt(self.beta(t))

  def prior_std(self) -> float:
    return 1.0

  def discretize(self, x, t):
    """x_{i+1} = √(1 − β_i) x_i + √β_i z as x + f_i + G_i z."""
    beta = self.discrete_beta(t)
    return (per_example(jnp.sqrt(1 - beta), x) - 1) * x, jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class VPSDE(_VariancePreserving):
  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000

  def beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def integrated_beta(self, t):
    """B(t) = ∫_0^t β(s) ds = β_min t + ½ (β_max − β_min) t² (numpy or jax)."""
    return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

  def discrete_betas(self) -> np.ndarray:
    """β_i = linspace(β_min/N, β_max/N): with the defaults, DDPM's 1e-4 → 0.02."""
    return schedules.beta_schedule("linear", self.N, beta_start=self.beta_min / self.N,
                                   beta_end=self.beta_max / self.N)

  def marginal_coef(self, t):
    """(α(t), σ(t)) of x_t | x_0 ~ N(α x_0, σ² I)."""
    log_mean = -0.5 * self.integrated_beta(t)
    return jnp.exp(log_mean), jnp.sqrt(-jnp.expm1(2 * log_mean))


@dataclasses.dataclass(frozen=True)
class DiscreteVPSDE(_VariancePreserving):
  """The VP process of a discrete chain with any β_0…β_{N−1} (cosine, quadratic, …): step i
  sits at t_i = i T/(N − 1), where α(t_i) = √ᾱ_i; log α is linear in between, so
  β(t) = −2 d log α/dt is constant on each interval, and a DDPM network of step i is
  evaluated at t (N − 1) = i as with VPSDE. (α(0) = √(1 − β_0), not 1.)"""
  betas: tuple[float, ...]

  @property
  def N(self) -> int:
    return len(self.betas)

  def discrete_betas(self) -> np.ndarray:
    return np.asarray(self.betas, np.float64)

  def schedule(self) -> schedules.Schedule:
    """The chain's per-step coefficients (float32), for the samplers that step it."""
    return schedules.make_schedule(self.discrete_betas())

  def step_coef(self, i):
    """(α_i, σ_i) = (√ᾱ_i, √(1 − ᾱ_i)) of step i (integers [B]) from the float64 table (in
    float32, or float64 where enabled)."""
    alpha_bars = schedules.alpha_bars_of(self.discrete_betas())
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    return (jnp.asarray(np.sqrt(alpha_bars), dtype)[i],
            jnp.asarray(np.sqrt(1 - alpha_bars), dtype)[i])

  def _log_alphas(self, t):
    with np.errstate(divide="ignore"):  # ᾱ = 0 at the end of a zero-terminal-SNR chain
      table = 0.5 * np.log(schedules.alpha_bars_of(self.discrete_betas()))
    return jnp.asarray(table, jnp.result_type(t, jnp.float32))

  def beta(self, t):
    log_alpha = self._log_alphas(t)
    i = jnp.clip(jnp.floor(t * (self.N - 1) / self.T), 0, self.N - 2).astype(jnp.int32)
    return -2 * (log_alpha[i + 1] - log_alpha[i]) * (self.N - 1) / self.T

  def marginal_coef(self, t):
    """(α(t), σ(t)) with log α interpolated linearly between the steps."""
    log_alpha = self._log_alphas(t)
    log_mean = jnp.interp(t * (self.N - 1) / self.T, jnp.arange(self.N, dtype=log_alpha.dtype),
                          log_alpha)
    return jnp.exp(log_mean), jnp.sqrt(-jnp.expm1(2 * log_mean))


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):

  def sde(self, x, t):
    drift, _ = VPSDE.sde(self, x, t)
    discount = -jnp.expm1(-2 * self.integrated_beta(t))
    return drift, jnp.sqrt(self.beta(t) * discount)

  def marginal_coef(self, t):
    alpha, _ = VPSDE.marginal_coef(self, t)
    return alpha, 1 - alpha**2

  def discretize(self, x, t):
    raise NotImplementedError("The sub-VP SDE has no standard discrete chain; use the "
                              "euler_maruyama predictor or the probability-flow ODE.")


@dataclasses.dataclass(frozen=True)
class VESDE:
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000
  T = 1.0

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min)**t

  def discrete_sigmas(self) -> np.ndarray:
    """σ_0 < … < σ_{N−1}: geometric from σ_min to σ_max (the NCSN levels, reversed)."""
    return schedules.geometric_sigmas(self.sigma_max, self.sigma_min, self.N)[::-1]

  def adjacent_sigmas(self, t):
    """(σ_i, σ_{i−1}) of the chain's step at time t, with σ_{−1} = 0."""
    i = time_index(self, t)
    sigmas = jnp.asarray(self.discrete_sigmas(), jnp.float32)
    return sigmas[i], jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])

  def sde(self, x, t):
    g = self.sigma(t) * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
    return jnp.zeros_like(x), g

  def marginal_coef(self, t):
    return jnp.ones_like(t), self.sigma(t)

  def prior_std(self) -> float:
    return self.sigma_max

  def discretize(self, x, t):
    """x_{i+1} = x_i + √(σ_{i+1}² − σ_i²) z (NCSN noise levels; σ_{−1} = 0)."""
    sigma, adjacent = self.adjacent_sigmas(t)
    return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)


SDE = VPSDE | SubVPSDE | DiscreteVPSDE | VESDE
for _cls in (VPSDE, SubVPSDE, DiscreteVPSDE, VESDE):  # hashable configuration: static inside jit, no leaves
  jax.tree_util.register_static(_cls)


def make_sde(name: str, *, beta_min=0.1, beta_max=20.0, sigma_min=0.01, sigma_max=50.0,
             num_scales=1000) -> SDE:
  if name == "vp":
    return VPSDE(beta_min, beta_max, num_scales)
  if name == "subvp":
    return SubVPSDE(beta_min, beta_max, num_scales)
  if name == "ve":
    return VESDE(sigma_min, sigma_max, num_scales)
  raise ValueError(f"Unknown SDE {name!r}; use one of {SDE_NAMES}.")


def marginal_prob(sde: SDE, x0, t):
  """(mean, std) of x_t | x_0."""
  alpha, sigma = sde.marginal_coef(t)
  return per_example(alpha, x0) * x0, sigma


def prior_logp(sde: SDE, z):
  """log N(z; 0, σ_T² I) per example."""
  d = np.prod(z.shape[1:])
  s2 = sde.prior_std()**2
  return -0.5 * d * np.log(2 * np.pi * s2) - 0.5 * jnp.sum(z**2, axis=tuple(range(1, z.ndim))) / s2


def reverse_sde(sde: SDE, score_fn: Callable, x, t, probability_flow: bool = False):
  """Drift and diffusion of the reverse-time SDE dx = [f − g² ∇log p_t] dt + g dw̄, or of the
  probability-flow ODE dx = [f − ½ g² ∇log p_t] dt (diffusion 0)."""
  drift, g = sde.sde(x, t)
  g2 = per_example(g**2, x)
  drift = drift - g2 * score_fn(x, t) * (0.5 if probability_flow else 1.0)
  return drift, jnp.zeros_like(g) if probability_flow else g


def reverse_discretize(sde: SDE, score_fn: Callable, x, t):
  """The discrete reverse step x_{i} = x_{i+1} − f_i + G_i² s + G_i z (reverse diffusion):
  returns (f_i − G_i² s, G_i)."""
  f, big_g = sde.discretize(x, t)
  return f - per_example(big_g**2, x) * score_fn(x, t), big_g
