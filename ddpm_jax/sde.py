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
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_jax import schedules
from ddpm_jax.broadcast import per_example

SDE_NAMES = ("vp", "subvp", "ve")
MEAN_TYPES = ("eps", "x0", "v", "score")
TIME_INPUTS = ("index", "log_sigma", "t")


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

  def discrete_betas(self) -> np.ndarray:
    """β_i = linspace(β_min/N, β_max/N): with the defaults, DDPM's 1e-4 → 0.02."""
    return schedules.beta_schedule("linear", self.N, beta_start=self.beta_min / self.N,
                                   beta_end=self.beta_max / self.N)

  def marginal_coef(self, t):
    """(α(t), σ(t)) of x_t | x_0 ~ N(α x_0, σ² I)."""
    log_mean = -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
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

  def _log_alphas(self, t):
    table = 0.5 * np.cumsum(np.log1p(-self.discrete_betas()))
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
    discount = -jnp.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
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


def reverse_discretize(sde: SDE, score_fn: Callable, x, t, probability_flow: bool = False):
  """The discrete reverse step x_{i} = x_{i+1} − f_i + G_i² s + G_i z (reverse diffusion)."""
  f, big_g = sde.discretize(x, t)
  rev_f = f - per_example(big_g**2, x) * score_fn(x, t) * (0.5 if probability_flow else 1.0)
  return rev_f, jnp.zeros_like(big_g) if probability_flow else big_g


def model_score_fn(model: Callable, sde: SDE, mean_type: str = "eps", time_input: str = "index"
                   ) -> jax.tree_util.Partial:
  """score(x, t[, cond]) from a network output at time t (cond, e.g. labels, passed on).

  mean_type: "eps" (score = −ε̂/σ(t)), "x0" (score = (α x̂_0 − x)/σ²), "v" (ε̂ = α v + σ x for
  VP-type SDEs), or "score" (the output is the score). time_input: what the network is given:
  "index" t·(N−1) (a DDPM-trained network, or score_sde's continuous VP models),
  "log_sigma" log σ(t) (NCSN++ with Fourier features), or "t". The model is a child of the
  returned Partial, so its bound arrays stay arguments of a compiled sampler.
  """
  if mean_type not in MEAN_TYPES:
    raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {MEAN_TYPES}.")
  if time_input not in TIME_INPUTS:
    raise ValueError(f"Unknown time_input {time_input!r}; use one of {TIME_INPUTS}.")
  return jax.tree_util.Partial(
      functools.partial(_score, sde=sde, mean_type=mean_type, time_input=time_input), model)


def _score(model, x, t, *cond, sde, mean_type, time_input):
  alpha, sigma = sde.marginal_coef(t)
  if time_input == "index":
    label = t * (sde.N - 1)
  elif time_input == "log_sigma":
    label = jnp.log(sigma)
  else:
    label = t
  out = model(x, label, *cond)
  a, s = per_example(alpha, x), per_example(sigma, x)
  if mean_type == "score":
    return out
  if mean_type == "eps":
    return -out / s
  if mean_type == "x0":
    return (a * out - x) / s**2
  return -(a * out + s * x) / s
