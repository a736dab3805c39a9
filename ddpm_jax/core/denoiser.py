"""One adapter per network kind: every trained network, whatever it predicts and whatever it
is fed, becomes the same `Denoiser`, which gives the data prediction x̂_0, the noise
prediction ε̂ and the score at a time t of its process (core/sde.py), at a step of a discrete
chain, or at a noise level σ. Samplers and likelihoods see only this object.

With x_t = α x_0 + σ ε (α, σ of the process at t), a network output o of each prediction type
is converted once, here (`convert`):

  eps:    ε̂ = o,                 x̂_0 = (x − σ ε̂) / α
  x0:     x̂_0 = o,               ε̂ = (x − α x̂_0) / σ
  v:      x̂_0 = (α x − σ o)/r,   ε̂ = (σ x + α o)/r     (v = α ε − σ x_0, r = α² + σ²: 1 on VP)
  score:  ε̂ = −σ o,              x̂_0 = (x + σ² o) / α
  edm:    x̂_0 = c_skip x̃ + c_out o(c_in x̃, c_noise)  with x̃ = x/α, σ̃ = σ/α (Karras et al.
          2022, Table 1: c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃ σ_d/√(σ̃² + σ_d²),
          c_in = 1/√(σ̃² + σ_d²), c_noise = ¼ ln σ̃)

and the score is −ε̂/σ. With `clip_x0`, x̂_0 is clipped to [−1, 1] and ε̂ recomputed from it,
so every sampler that reads either (and the score) sees the same clipped model.

The network is called as net(x, noise_input[, cond]) with the noise input of its kind: the
chain step t (N − 1) ("index": DDPM networks and score_sde's VP models), log σ ("log_sigma":
VE and NCSN models) or EDM's c_noise. Classifier-free guidance (Ho & Salimans 2022) is applied
here, to the network's mean output: õ = (1 + w) o(x, y) − w o(x, ∅), which is the same
combination of ε̂, x̂_0, v̂ or the score since each is affine in o at fixed x and t; a learned
variance is not extrapolated: it is the conditional pass's (GLIDE).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
from flax import struct

from ddpm_jax.core import chain
from ddpm_jax.core.broadcast import per_example

KINDS = ("ddpm", "dsm", "ncsn", "edm")  # what trained the network (training.objective)
PREDICTIONS = ("eps", "x0", "v", "score", "edm")
NOISE_INPUTS = ("index", "log_sigma", "edm")


class Prediction(NamedTuple):
  x0: jnp.ndarray
  eps: jnp.ndarray
  var_out: jnp.ndarray | None  # a DDPM network's variance channels (learned variances)


def convert(prediction: str, output, x, alpha, sigma):
  """(x̂_0, ε̂) of a network output of type eps, x0, v or score at a state x whose marginal
  coefficients α, σ broadcast against it."""
  if prediction == "eps":
    return (x - sigma * output) / alpha, output
  if prediction == "x0":
    return output, (x - alpha * output) / sigma
  if prediction == "v":
    r = alpha**2 + sigma**2
    return (alpha * x - sigma * output) / r, (sigma * x + alpha * output) / r
  if prediction == "score":
    return (x + sigma**2 * output) / alpha, -sigma * output
  raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS[:-1]}.")


def edm_coefficients(sigma, sigma_data: float):
  """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning at noise levels σ."""
  total = sigma**2 + sigma_data**2
  return (sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1 / jnp.sqrt(total),
          0.25 * jnp.log(sigma))


@struct.dataclass
class Denoiser:
  """A network as a denoiser of its process (see the module docstring). `net` (a pytree: the
  arrays bound in a jax.tree_util.Partial stay arguments of a compiled program), `cond` the
  batch's condition (labels) and `guidance` the classifier-free weight are leaves; the rest is
  static."""
  net: Callable
  process: Any = struct.field(pytree_node=False)
  kind: str = struct.field(pytree_node=False, default="ddpm")
  prediction: str = struct.field(pytree_node=False, default="eps")
  noise_input: str = struct.field(pytree_node=False, default="index")
  var_type: str = struct.field(pytree_node=False, default="fixed_small")
  sigma_data: float = struct.field(pytree_node=False, default=0.5)
  clip_x0: bool = struct.field(pytree_node=False, default=False)
  null_label: int = struct.field(pytree_node=False, default=0)
  cond: Any = None
  guidance: Any = None

  @property
  def evaluations_per_call(self) -> int:
    """Network evaluations per prediction: two under classifier-free guidance."""
    return 1 if self.guidance is None else 2

  def bind(self, cond) -> "Denoiser":
    """The denoiser with the batch's condition (e.g. labels [B]; None for none)."""
    return self.replace(cond=cond)

  def guided(self, weight, null_label: int) -> "Denoiser":
    """Classifier-free guidance with weight w (an array leaf, so one program serves every
    w) and the label the network was trained with for "no class"."""
    return self.replace(guidance=jnp.asarray(weight, jnp.float32), null_label=int(null_label))

  def predict(self, x, t) -> Prediction:
    """x̂_0, ε̂ (and variance channels) at times t [B] of the process."""
    alpha, sigma = self.process.marginal_coef(t)
    if self.noise_input == "index":
      noise_input = t * (self.process.N - 1) / self.process.T
    else:
      noise_input = jnp.log(sigma)
    return self._predict(x, noise_input, alpha, sigma)

  def predict_step(self, x, i) -> Prediction:
    """The same at integer steps i [B] of a discrete chain (DDPM networks on a
    DiscreteVPSDE), with the chain's own α_i = √ᾱ_i, σ_i = √(1 − ᾱ_i) and the integer step as
    the network's input, as in training."""
    if self.noise_input != "index" or not hasattr(self.process, "step_coef"):
      raise ValueError("Stepping a discrete chain needs a DDPM network on its DiscreteVPSDE.")
    return self._predict(x, i, *self.process.step_coef(i))

  def predict_at_sigma(self, x, sigma) -> Prediction:
    """The same at noise levels σ [B] of a process with α = 1 (VE: NCSN, EDM)."""
    if self.noise_input == "index":
      raise ValueError("A network fed the chain step has no noise-level input; use predict.")
    return self._predict(x, jnp.log(sigma), jnp.ones_like(sigma), sigma)

  def x0(self, x, t):
    return self.predict(x, t).x0

  def score(self, x, t):
    """∇_x log p_t(x) = −ε̂ / σ(t)."""
    return -self.predict(x, t).eps / per_example(self.process.marginal_coef(t)[1], x)

  def score_at_sigma(self, x, sigma):
    return -self.predict_at_sigma(x, sigma).eps / per_example(sigma, x)

  def _predict(self, x, noise_input, alpha, sigma) -> Prediction:
    a, s = per_example(alpha, x).astype(x.dtype), per_example(sigma, x).astype(x.dtype)
    if self.prediction == "edm":
      c_skip, c_out, c_in, c_noise = edm_coefficients(sigma / alpha, self.sigma_data)
      c_skip, c_out, c_in = (per_example(c, x).astype(x.dtype) for c in (c_skip, c_out, c_in))
      out, var_out = self._network(c_in * x / a, c_noise)
      x0 = c_skip * x / a + c_out * out
      eps = (x - a * x0) / s
    else:
      out, var_out = self._network(x, noise_input)
      x0, eps = convert(self.prediction, out, x, a, s)
    if self.clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (x - a * x0) / s
    return Prediction(x0, eps, var_out)

  def _network(self, x, noise_input):
    """(mean output, variance channels or None), guided where a weight is set."""
    noise_input = jnp.broadcast_to(noise_input, x.shape[:1])
    if self.cond is None:
      out = self.net(x, noise_input)
    elif self.guidance is None:
      out = self.net(x, noise_input, self.cond)
    else:
      both = self.net(jnp.concatenate([x, x]), jnp.concatenate([noise_input, noise_input]),
                      jnp.concatenate([self.cond, jnp.full_like(self.cond, self.null_label)]))
      (mean_c, var_c), (mean_u, _) = (chain.split_output(o.astype(x.dtype), self.var_type)
                                      for o in jnp.split(both, 2))
      w = self.guidance.astype(x.dtype)
      return (1 + w) * mean_c - w * mean_u, var_c
    return chain.split_output(out.astype(x.dtype), self.var_type)


def make(net: Callable, process, kind: str, *, mean_type: str = "eps",
         var_type: str = "fixed_small", sigma_data: float = 0.5,
         clip_x0: bool = False) -> Denoiser:
  """The adapter of a network trained as `kind` on `process`:
    ddpm  ε/x_0/v network (mean_type; var_type) fed the chain step, on its DiscreteVPSDE;
    dsm   ε/x_0/v/score network on a VP or sub-VP SDE fed t (N − 1), on a VE SDE fed log σ;
    ncsn  NCSN network (predicts −σ s, i.e. ε) fed log σ, on the VE SDE of its levels;
    edm   EDM-preconditioned network F (its c_noise input), on the VE SDE of EDM's σ range.
  """
  if kind == "ddpm":
    chain.check_types(mean_type, var_type)
    return Denoiser(net, process, kind, mean_type, "index", var_type, clip_x0=clip_x0)
  if kind == "dsm":
    if mean_type not in PREDICTIONS[:-1]:
      raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {PREDICTIONS[:-1]}.")
    noise_input = "log_sigma" if _is_ve(process) else "index"
    return Denoiser(net, process, kind, mean_type, noise_input, clip_x0=clip_x0)
  if kind == "ncsn":
    return Denoiser(net, process, kind, "eps", "log_sigma", clip_x0=clip_x0)
  if kind == "edm":
    return Denoiser(net, process, kind, "edm", "edm", sigma_data=float(sigma_data),
                    clip_x0=clip_x0)
  raise ValueError(f"Unknown network kind {kind!r}; use one of {KINDS}.")


def _is_ve(process) -> bool:
  return hasattr(process, "sigma_max")
