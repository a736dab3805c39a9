"""EDM state dicts (NVlabs/edm SongUNet and DhariwalUNet) ↔ parameter trees, name by name.

The rule: a state-dict key is the tree path joined by "."; the encoder's and decoder's
ModuleDict entries make one Flax name ("enc.32x32_block0"), so the first two parts of an
`enc.`/`dec.` key are one tree level. Arrays keep their layouts (models/edm_layers.py). The
constant `resample_filter` buffers are not parameters here: they are dropped on the way in
and written on the way out (`buffers`), so that EDM's load_state_dict(strict=True) takes the
file.

EDM publishes its networks only as pickles of Python objects (network-snapshot-*.pkl), which
run code when unpickled: `read` refuses them and gives the one command that exports the
network's state dict with EDM's own code, once; a state dict (.npz or .safetensors; the
preconditioner's "model." prefix is dropped) loads onto SongUNet or DhariwalUNet, and the
config's objective supplies the preconditioning it was trained with (config/weights.py):

  EDMPrecond  training.objective "edm": as it is.
  VPPrecond   "dsm" on the VP SDE (β 0.1 to 20, 1000 scales): D = x − σ F(x/√(1 + σ²),
              999 t), the network predicts ε of the VP state x/√(1 + σ²) at the time t of σ,
              fed 999 t: exactly this library's VP model of an ε network; as it is.
  VEPrecond   "dsm" on the VE SDE: D = x + σ F(x, log(σ/2)), so F = −ε̂ fed log σ − log 2;
              this library's VE model is fed log σ and predicts ε, so the import shifts the
              noise input (`shift_noise_input`) and negates the output (`negate_output`), both
              exact, and the export undoes them.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from flax import traverse_util

from ddpm_jax.interop import tensors

EXPORT = ("export the network's state dict once with EDM's own code, in a checkout of "
          "NVlabs/edm: python -c \"import pickle, numpy as np; net = pickle.load(open('NET.pkl', "
          "'rb'))['ema']; np.savez('NET.npz', **{k: v.cpu().numpy() for k, v in "
          "net.model.state_dict().items()})\", then load NET.npz.")
GROUPED = ("enc", "dec")  # the ModuleDicts whose entries are one tree level


def tree_path(key: str) -> tuple[str, ...]:
  """'enc.32x32_block0.conv0.weight' → ('enc.32x32_block0', 'conv0', 'weight')."""
  parts = key.split(".")
  if parts[0] in GROUPED:
    parts = [f"{parts[0]}.{parts[1]}"] + parts[2:]
  return tuple(parts)


def state_dict(params, resample_filter=(1, 1), encoder_type: str = "standard",
               decoder_type: str = "standard") -> dict[str, np.ndarray]:
  """The reference's whole state dict of a parameter tree: its parameters and the constant
  resample filters (`buffers`) of a network with these settings (DhariwalUNet's are the
  defaults)."""
  out = {".".join(path): np.asarray(v) for path, v in traverse_util.flatten_dict(params).items()}
  return {**out, **buffers(params, resample_filter, encoder_type, decoder_type)}


def buffers(params, resample_filter=(1, 1), encoder_type: str = "standard",
            decoder_type: str = "standard") -> dict[str, np.ndarray]:
  """EDM's `resample_filter` buffers, outer(f, f) / (Σf)² of shape [1, 1, k, k], of every
  convolution that resamples: conv0 and skip of each down/up block, the residual encoder's
  aux_residual, and the weightless (kernel 0) aux_down / aux_up of the skip encoder and
  decoder, one per down/up block."""
  f = np.asarray(resample_filter, np.float32)
  value = (np.outer(f, f) / np.square(f.sum()))[None, None]
  names = []
  for block in params:
    section, _, name = block.partition(".")
    res, _, role = name.partition("_")
    if role in ("down", "up"):
      names += [f"{block}.conv0", f"{block}.skip"]
      if section == "enc" and encoder_type == "skip":
        names.append(f"enc.{res}_aux_down")
      if section == "dec" and decoder_type == "skip":
        names.append(f"dec.{res}_aux_up")
    elif role == "aux_residual":
      names.append(block)
  return {f"{n}.resample_filter": value.copy() for n in names}


def params_from_state_dict(state: Mapping[str, np.ndarray], template) -> dict:
  """The parameter tree of `state` (a name → array mapping), checked against `template` (the
  network's parameters or their shapes): every name present, none extra, the same shapes,
  every value finite."""
  state = {k: v for k, v in state.items() if not k.endswith("resample_filter")}
  want = {".".join(p): tuple(np.shape(v))
          for p, v in traverse_util.flatten_dict(template).items()}
  missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
  if missing or extra:
    raise ValueError(f"The state dict does not fit this network: missing {missing[:3]}, "
                     f"unexpected {extra[:3]} ({len(missing)} and {len(extra)} in all); "
                     f"check the network options (model.*) against the checkpoint's.")
  for key, shape in want.items():
    if tuple(np.shape(state[key])) != shape:
      raise ValueError(f"{key} has shape {tuple(np.shape(state[key]))} in the state dict and "
                       f"{shape} in this network; check the network options (model.*).")
  tensors.finite({k: state[k] for k in want}, "the EDM state dict")
  return traverse_util.unflatten_dict(
      {tree_path(k): np.asarray(state[k], np.float32) for k in want})


def read(path: str) -> dict[str, np.ndarray]:
  """The network's state dict in an .npz or .safetensors file (a pickle is refused with the
  export recipe), without the preconditioner's "model." prefix."""
  state = tensors.read(path, EXPORT)
  if state and all(k.startswith("model.") for k in state):
    state = {k.removeprefix("model."): v for k, v in state.items()}
  return state


VE_NOISE_SHIFT = math.log(0.5)  # VEPrecond's c_noise = log(σ/2) = log σ + log ½


def _rotation(omega: np.ndarray, shift: float) -> np.ndarray:
  """R with [sin(a + θ), cos(a + θ)] = R [sin a, cos a] for the SongUNet embedding's halves
  (sin first), a_k = ω_k c, θ_k = ω_k shift."""
  theta = np.asarray(omega, np.float64) * shift
  c, s = np.diag(np.cos(theta)), np.diag(np.sin(theta))
  return np.block([[c, s], [-s, c]])


def noise_frequencies(params, embedding_type: str) -> np.ndarray:
  """ω_k of a SongUNet's noise embedding: 2π f_k of its Fourier frequencies, or the positional
  embedding's (1/10⁴)^{k/(C/2 − 1)} (models/edm_layers.py)."""
  if embedding_type == "fourier":
    return 2 * np.pi * np.asarray(params["map_noise"]["freqs"], np.float64)
  half = np.shape(params["map_layer0"]["weight"])[1] // 2
  return (1 / 10_000) ** (np.arange(half, dtype=np.float64) / (half - 1))


def shift_noise_input(params, shift: float, embedding_type: str) -> dict:
  """The parameters of a SongUNet fed c whose outputs are those of `params` fed c + shift
  (exact): its embedding is then R e, so map_layer0's weight becomes W R and what is added to
  the embedding before it (map_label, map_augment) is rotated back by Rᵀ."""
  r = _rotation(noise_frequencies(params, embedding_type), shift)
  out = {**params, "map_layer0": {**params["map_layer0"],
                                  "weight": _f32(np.asarray(params["map_layer0"]["weight"]) @ r)}}
  for name in ("map_label", "map_augment"):
    if name in params:
      out[name] = {leaf: _f32(r.T @ np.asarray(v)) for leaf, v in params[name].items()}
  return out


def negate_output(params) -> dict:
  """The parameters of a SongUNet with its output negated (exact): the output is the sum of
  the decoder's aux_conv outputs (upsampled linearly on the skip decoder), so each aux_conv's
  weight and bias change sign."""
  return {name: ({leaf: -np.asarray(v) for leaf, v in block.items()}
                 if name.startswith("dec.") and name.endswith("_aux_conv") else block)
          for name, block in params.items()}


def from_ve_precond(params, embedding_type: str) -> dict:
  """VEPrecond's SongUNet (fed log(σ/2), predicting −ε) as this library's VE network (fed
  log σ, predicting ε)."""
  return negate_output(shift_noise_input(params, VE_NOISE_SHIFT, embedding_type))


def to_ve_precond(params, embedding_type: str) -> dict:
  """The inverse of from_ve_precond."""
  return shift_noise_input(negate_output(params), -VE_NOISE_SHIFT, embedding_type)


def _f32(a) -> np.ndarray:
  return np.asarray(a, np.float32)
