"""One adapter per objective: every trained network, whatever it predicts and whatever it
is fed, becomes the same `Denoiser`, which gives the data prediction x̂_0, the noise
prediction ε̂ and the score at a time t of its process (core/sde.py), at a step of a discrete
chain, or at a noise level σ. Samplers and likelihoods see only this object.

With x_t = α x_0 + σ ε (α, σ of the process at t), a network output o of each prediction type
is converted once, here (`convert`):

  eps:    ε̂ = o,                 x̂_0 = (x − σ ε̂) / α
  x0:     x̂_0 = o,               ε̂ = (x − α x̂_0) / σ
  v:      x̂_0 = (α x − σ o)/r,   ε̂ = (σ x + α o)/r     (v = α ε − σ x_0, r = α² + σ²: 1 on VP)
  score:  ε̂ = −σ o,              x̂_0 = (x + σ² o) / α
  velocity: x̂_0 = (σ' x − σ o)/d,  ε̂ = (α o − α' x)/d  (flow matching's v = α' x_0 + σ' ε,
          d = α σ' − σ α': 1 on the linear path, π/2 on the cosine one; finite at α = 0)
  edm:    x̂_0 = c_skip x̃ + c_out o(c_in x̃, c_noise)  with x̃ = x/α, σ̃ = σ/α (Karras et al.
          2022, Table 1: c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃ σ_d/√(σ̃² + σ_d²),
          c_in = 1/√(σ̃² + σ_d²), c_noise = ¼ ln σ̃)

and the score is −ε̂/σ; the probability-flow ODE's velocity is dx/dt = α' x̂_0 + σ' ε̂ (`velocity`,
the same drift as f − ½ g² ∇log p_t for every SDE). With `clip_x0`, x̂_0 is clipped to [−1, 1] and ε̂ recomputed from it,
so every sampler that reads either (and the score) sees the same clipped model.

The network is called as net(x, noise_input[, cond]) with the noise input of its objective: the
chain step t (N − 1) ("index": DDPM networks and score_sde's VP models), log σ ("log_sigma":
VE and NCSN models), EDM's c_noise, or a flow model's scaled time s·t ("t", `time_scale` s);
a network of your own (`Denoiser.from_fn`) may also be fed the process time t ("t", e.g.
t ∈ [0, 1]) or k-diffusion's convention ("sigma": the
network sees x/α and σ/α, the state and noise level of the equivalent VE process; on a VE
process, x and σ). Whatever it is fed, its output is read in terms of x: ε, x̂_0,
v = α ε − σ x_0, the score ∇_x log p_t(x) or the velocity. Classifier-free guidance (Ho & Salimans 2022) is applied
here, to the network's mean output: õ = (1 + w) o(x, y) − w o(x, ∅), which is the same
combination of ε̂, x̂_0, v̂ or the score since each is affine in o at fixed x and t; a learned
variance is not extrapolated: it is the conditional pass's (GLIDE).

Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, controllable generation) is
applied here too, after it: with a noise-conditional classifier p_φ(y | x_t) fed what the
network is fed (x and the noise input; EDM's c_in x̃ and c_noise), the score of the guided
model is ∇ log p_t(x) + s ∇_x log p_φ(y | x_t), i.e.

  ε̃ = ε̂ − s σ ∇_x log p_φ(y | x_t),   x̂_0 = (x − σ ε̃) / α,

one gradient (`jax.grad`) per prediction, inside the sampler's compiled loop. At s = 1 with
the exact p(y | x_t) this is exactly the score of p_t(x | y).

Inpainting (`known` = (data, mask)) replaces the known part of x̂_0 by the data, x̂_0 ←
m data + (1 − m) x̂_0 (and ε̂ from it), so that every sampler carries the known pixels along
the noised data's path α data + σ ε and ends on the data.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ddpm_jax.core import chain, paths
from ddpm_jax.core.broadcast import per_example

OBJECTIVES = ("ddpm", "dsm", "ncsn", "edm", "flow")  # what trained it (training.objective)
PREDICTIONS = ("eps", "x0", "v", "score", "velocity", "edm")
FLOW_PREDICTIONS = ("velocity", "x0")  # both finite at α = 0, where a flow path starts
NOISE_INPUTS = ("index", "log_sigma", "edm", "t", "sigma")


class Prediction(NamedTuple):
  x0: jnp.ndarray
  eps: jnp.ndarray
  var_out: jnp.ndarray | None  # a DDPM network's variance channels (learned variances)


def convert(prediction: str, output, x, alpha, sigma, rates=None):
  """(x̂_0, ε̂) of a network output of type eps, x0, v, score or velocity at a state x whose
  marginal coefficients α, σ (and for velocity their rates (α', σ')) broadcast against it."""
  if prediction == "eps":
    return (x - sigma * output) / alpha, output
  if prediction == "x0":
    return output, (x - alpha * output) / sigma
  if prediction == "v":
    r = alpha**2 + sigma**2
    return (alpha * x - sigma * output) / r, (sigma * x + alpha * output) / r
  if prediction == "score":
    return (x + sigma**2 * output) / alpha, -sigma * output
  if prediction == "velocity":
    d_alpha, d_sigma = rates
    det = alpha * d_sigma - sigma * d_alpha
    return (d_sigma * x - sigma * output) / det, (alpha * output - d_alpha * x) / det
  raise ValueError(f"Unknown prediction {prediction!r}; use one of {PREDICTIONS[:-1]}.")


def label_log_probs(logits, labels):
  """log p(y | x) = log softmax(logits)_y per example (float32), logits [B, K], labels [B]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, jnp.asarray(labels)[:, None].astype(jnp.int32), 1)[:, 0]


def edm_coefficients(sigma, sigma_data: float):
  """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning at noise levels σ."""
  total = sigma**2 + sigma_data**2
  return (sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1 / jnp.sqrt(total),
          0.25 * jnp.log(sigma))


@struct.dataclass
class Denoiser:
  """A network as a denoiser of its process (see the module docstring). `net` (a pytree: the
  arrays bound in a jax.tree_util.Partial stay arguments of a compiled program), `cond` the
  batch's condition (labels), `guidance` the classifier-free weight, `classifier` (logits of
  (x, noise input), a pytree like `net`) with its `classifier_scale`, and `known` (inpainting
  data and mask) are leaves; the rest is static. `net_labels` False: the labels in `cond` are
  the classifier's only (an unconditional network guided by a classifier)."""
  net: Callable
  process: Any = struct.field(pytree_node=False)
  objective: str = struct.field(pytree_node=False, default="ddpm")
  prediction: str = struct.field(pytree_node=False, default="eps")
  noise_input: str = struct.field(pytree_node=False, default="index")
  var_type: str = struct.field(pytree_node=False, default="fixed_small")
  sigma_data: float = struct.field(pytree_node=False, default=0.5)
  time_scale: float = struct.field(pytree_node=False, default=1.0)
  clip_x0: bool = struct.field(pytree_node=False, default=False)
  null_label: int = struct.field(pytree_node=False, default=0)
  net_labels: bool = struct.field(pytree_node=False, default=True)
  cond: Any = None
  guidance: Any = None
  classifier: Any = None
  classifier_scale: Any = None
  known: Any = None

  @classmethod
  def from_fn(cls, fn: Callable, process, *, predicts: str = "eps", noise_input: str = "t",
              clip_x0: bool = False) -> "Denoiser":
    """A network of your own, fn(x, noise_input[, labels]) -> output, trained on `process`
    (core/sde.py: VPSDE, VESDE, DiscreteVPSDE, …; core/paths.py: LinearPath, CosinePath), as
    a Denoiser every sampler reads. `predicts`: "eps", "x0", "v" (α ε − σ x_0), "score" or
    "velocity" (α' x_0 + σ' ε); `noise_input`: "t" (the process time), "sigma"
    (k-diffusion's D(x/α, σ/α)), "log_sigma", or "index" (the chain step t (N − 1)/T; on a
    DiscreteVPSDE this also gives the chain samplers ddpm and ddim)."""
    if predicts not in PREDICTIONS[:-1]:
      raise ValueError(f"predicts={predicts!r}: use one of {PREDICTIONS[:-1]}.")
    if noise_input not in ("t", "sigma", "log_sigma", "index"):
      raise ValueError(f"noise_input={noise_input!r}: use one of ('t', 'sigma', 'log_sigma', "
                       f"'index').")
    if paths.is_path(process):
      if predicts not in FLOW_PREDICTIONS:
        raise ValueError(f"predicts={predicts!r} on a flow path: use one of "
                         f"{FLOW_PREDICTIONS} (ε̂ gives no x̂_0 where the path starts, α = 0).")
      if noise_input != "t":
        raise ValueError(f"noise_input={noise_input!r} on a flow path: use 't' (x/α and log σ "
                         f"are infinite where the path starts, α = 0).")
      objective = "flow"
    else:
      objective = "ddpm" if noise_input == "index" and hasattr(process, "step_coef") else "dsm"
    return cls(fn, process, objective, predicts, noise_input, clip_x0=bool(clip_x0))

  @property
  def evaluations_per_call(self) -> int:
    """Evaluations per prediction: the network's (two under classifier-free guidance) and
    the classifier's gradient (counted as one)."""
    return (1 if self.guidance is None else 2) + (self.classifier is not None)

  def bind(self, cond, known=None) -> "Denoiser":
    """The denoiser with the batch's condition (e.g. labels [B]; None for none) and, for
    inpainting, known = (data [B, ...], mask [B, ...], 1 = known; samplers/common.py
    compile_loop broadcasts a shared mask to the batch)."""
    return self.replace(cond=cond, known=known)

  def classifier_guided(self, classifier, scale, *, net_labels: bool) -> "Denoiser":
    """Classifier guidance with scale s (an array leaf) by `classifier`(x, noise input) ->
    logits [B, K] of the labels bound with `bind`; the network is fed them only where it is
    class-conditional (`net_labels`). Not on a flow path: at t = 1 (α = 0) the classifier's
    gradient is 0 and x̂_0 = (x − σ ε̃)/α undefined."""
    if paths.is_path(self.process):
      raise ValueError("Classifier guidance needs a process with α > 0 where sampling starts; "
                       "guide a flow model by classifier-free guidance (guided).")
    return self.replace(classifier=classifier, classifier_scale=jnp.asarray(scale, jnp.float32),
                        net_labels=bool(net_labels))

  def guided(self, weight, null_label: int) -> "Denoiser":
    """Classifier-free guidance with weight w (an array leaf, so one program serves every
    w) and the label the network was trained with for "no class"."""
    return self.replace(guidance=jnp.asarray(weight, jnp.float32), null_label=int(null_label))

  def predict(self, x, t) -> Prediction:
    """x̂_0, ε̂ (and variance channels) at times t [B] of the process."""
    alpha, sigma = self.process.marginal_coef(t)
    rates = paths.marginal_rates(self.process, t) if self.prediction == "velocity" else None
    return self._predict(x, self.noise_input_at(t, sigma), alpha, sigma, rates)

  def velocity(self, x, t, prediction: Prediction | None = None):
    """The probability-flow ODE's drift dx/dt = α' x̂_0 + σ' ε̂ at times t [B] (flow
    matching's marginal velocity; on an SDE, f − ½ g² ∇log p_t), of `prediction` where the
    caller has predict(x, t) already."""
    p = self.predict(x, t) if prediction is None else prediction
    d_alpha, d_sigma = (per_example(r, x).astype(x.dtype)
                        for r in paths.marginal_rates(self.process, t))
    return d_alpha * p.x0 + d_sigma * p.eps

  def noise_input_at(self, t, sigma):
    """The network's noise input at times t [B] with marginal σ(t): t (N − 1)/T ("index"),
    s·t ("t", s the time_scale), σ/α ("sigma") or log σ (from which EDM's c_noise is made)."""
    if self.noise_input == "index":
      return t * (self.process.N - 1) / self.process.T
    if self.noise_input == "t":
      return t * self.time_scale
    if self.noise_input == "sigma":
      return sigma / self.process.marginal_coef(t)[0]
    return jnp.log(sigma)

  def predict_step(self, x, i) -> Prediction:
    """The same at integer steps i [B] of a discrete chain (DDPM networks on a
    DiscreteVPSDE), with the chain's own α_i = √ᾱ_i, σ_i = √(1 − ᾱ_i) and the integer step as
    the network's input, as in training."""
    if self.noise_input != "index" or not hasattr(self.process, "step_coef"):
      raise ValueError("Stepping a discrete chain needs a DDPM network on its DiscreteVPSDE.")
    return self._predict(x, i, *self.process.step_coef(i))

  def predict_at_sigma(self, x, sigma) -> Prediction:
    """The same at noise levels σ [B] of a process with α = 1 (VE: NCSN, EDM)."""
    if self.noise_input in ("index", "t"):
      raise ValueError("A network fed the chain step or the time has no noise-level input; "
                       "use predict.")
    c = sigma if self.noise_input == "sigma" else jnp.log(sigma)
    return self._predict(x, c, jnp.ones_like(sigma), sigma)

  def x0(self, x, t):
    return self.predict(x, t).x0

  def score(self, x, t):
    """∇_x log p_t(x) = −ε̂ / σ(t)."""
    return -self.predict(x, t).eps / per_example(self.process.marginal_coef(t)[1], x)

  def score_at_sigma(self, x, sigma):
    return -self.predict_at_sigma(x, sigma).eps / per_example(sigma, x)

  def network_input(self, x, noise_input, alpha, sigma):
    """(x_in, c): what the network (and a classifier of its process) is fed for a state x at
    marginal coefficients α, σ [B] with noise input c: x itself, x / α (noise input
    "sigma"), or EDM's c_in x / α and c_noise."""
    if self.noise_input == "sigma":
      return x / per_example(alpha, x).astype(x.dtype), jnp.broadcast_to(noise_input, x.shape[:1])
    if self.prediction != "edm":
      return x, jnp.broadcast_to(noise_input, x.shape[:1])
    _, _, c_in, c_noise = edm_coefficients(sigma / alpha, self.sigma_data)
    a = per_example(alpha, x).astype(x.dtype)
    return per_example(c_in, x).astype(x.dtype) * x / a, c_noise

  def classifier_grad(self, x, noise_input, alpha, sigma):
    """∇_x log p_φ(y | x_t) for the bound labels y (float32, one backward pass)."""
    def log_prob(x):
      logits = self.classifier(*self.network_input(x, noise_input, alpha, sigma))
      return jnp.sum(label_log_probs(logits, self.cond))
    return jax.grad(log_prob)(x.astype(jnp.float32)).astype(x.dtype)

  def _predict(self, x, noise_input, alpha, sigma, rates=None) -> Prediction:
    a, s = per_example(alpha, x).astype(x.dtype), per_example(sigma, x).astype(x.dtype)
    x_in, c = self.network_input(x, noise_input, alpha, sigma)
    out, var_out = self._network(x_in, c)
    if self.prediction == "edm":
      c_skip, c_out, _, _ = edm_coefficients(sigma / alpha, self.sigma_data)
      c_skip, c_out = (per_example(v, x).astype(x.dtype) for v in (c_skip, c_out))
      x0 = c_skip * x / a + c_out * out
      eps = (x - a * x0) / s
    else:
      rates = None if rates is None else tuple(per_example(r, x).astype(x.dtype) for r in rates)
      x0, eps = convert(self.prediction, out, x, a, s, rates)
    if self.classifier is not None:
      eps = eps - self.classifier_scale.astype(x.dtype) * s * self.classifier_grad(
          x, noise_input, alpha, sigma)
      x0 = (x - s * eps) / a
    if self.clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (x - a * x0) / s
    if self.known is not None:
      data, mask = self.known
      x0 = mask * data + (1 - mask) * x0
      eps = (x - a * x0) / s
    return Prediction(x0, eps, var_out)

  def _network(self, x, noise_input):
    """(mean output, variance channels or None), guided where a weight is set."""
    if self.cond is None or not self.net_labels:
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


def make(net: Callable, process, objective: str, *, mean_type: str = "eps",
         var_type: str = "fixed_small", sigma_data: float = 0.5, prediction: str = "velocity",
         time_scale: float = 1000.0, clip_x0: bool = False) -> Denoiser:
  """The adapter of a network trained as `objective` on `process`:
    ddpm  ε/x_0/v network (mean_type; var_type) fed the chain step, on its DiscreteVPSDE;
    dsm   ε/x_0/v/score network on a VP or sub-VP SDE fed t (N − 1), on a VE SDE fed log σ;
    ncsn  NCSN network (predicts −σ s, i.e. ε) fed log σ, on the VE SDE of its levels;
    edm   EDM-preconditioned network F (its c_noise input), on the VE SDE of EDM's σ range;
    flow  velocity or x̂_0 network (prediction) fed time_scale · t, on its Gaussian path.
  """
  if objective == "ddpm":
    chain.check_types(mean_type, var_type)
    return Denoiser(net, process, objective, mean_type, "index", var_type, clip_x0=clip_x0)
  if objective == "dsm":
    if mean_type not in PREDICTIONS[:-1]:
      raise ValueError(f"Unknown mean_type {mean_type!r}; use one of {PREDICTIONS[:-1]}.")
    noise_input = "log_sigma" if _is_ve(process) else "index"
    return Denoiser(net, process, objective, mean_type, noise_input, clip_x0=clip_x0)
  if objective == "ncsn":
    return Denoiser(net, process, objective, "eps", "log_sigma", clip_x0=clip_x0)
  if objective == "edm":
    return Denoiser(net, process, objective, "edm", "edm", sigma_data=float(sigma_data),
                    clip_x0=clip_x0)
  if objective == "flow":
    if prediction not in FLOW_PREDICTIONS:
      raise ValueError(f"Unknown flow prediction {prediction!r}; use one of {FLOW_PREDICTIONS}.")
    return Denoiser(net, process, objective, prediction, "t", time_scale=float(time_scale),
                    clip_x0=clip_x0)
  raise ValueError(f"Unknown objective {objective!r}; use one of {OBJECTIVES}.")


def _is_ve(process) -> bool:
  return hasattr(process, "sigma_max")
