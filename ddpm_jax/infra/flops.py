"""Model FLOPs read from the traced program, the same on every backend: 2 × the multiply-adds
of each matrix product and convolution in the jaxpr (a convolution's taps on padding not
counted) (nested jaxprs included, a scan's body
times its length, the costliest branch of a cond). Elementwise work is left out; on the DDPM
U-Net it is under 2% of the total. XLA's GPU cost analysis does not count the convolutions it
hands to cuDNN, so utilization on a GPU is measured with this count.

  flops.count(lambda x: model.apply(variables, x, t), x)   # forward FLOPs of the batch x
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np
from jax.extend import core

# Dense peak TFLOP/s of one device by compute dtype (vendor data sheets, without sparsity).
# XLA computes float32 matrix products and convolutions in TF32 on these GPUs by default, so
# float32 is held against the TF32 peak.
PEAK_TFLOPS = {
    "bfloat16": {"H100": 989.4, "H200": 989.4, "A100": 312.0},
    "float32": {"H100": 494.7, "H200": 494.7, "A100": 156.0},
}


def count(fn: Callable, *args) -> float:
  """FLOPs of one call fn(*args), from its jaxpr."""
  return float(_jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr))


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The dense peak of a device (e.g. "NVIDIA H100 80GB HBM3") for `dtype`, if known."""
  return next((v for k, v in PEAK_TFLOPS.get(dtype, {}).items() if k in device_kind), None)


def _dot_general(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2 * math.prod(lhs) * math.prod(rhs_free)


def _taps(size_in: int, size_out: int, kernel: int, stride: int, pad_lo: int, lhs_dil: int,
          rhs_dil: int) -> int:
  """(output position, kernel tap) pairs along one spatial axis that read a real input
  element: padding and the holes of a dilated input (transposed convolutions) excluded."""
  o = np.arange(size_out)[:, None]
  k = np.arange(kernel)[None, :]
  pos = o * stride + k * rhs_dil - pad_lo
  return int(((pos >= 0) & (pos <= (size_in - 1) * lhs_dil) & (pos % lhs_dil == 0)).sum())


def _conv(eqn) -> int:
  """2 × batch × output features × input features per group × the valid taps of each
  spatial axis (the multiply-adds with a real input element)."""
  p = eqn.params
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  taps = math.prod(
      _taps(lhs[lhs_spec[2 + i]], out[out_spec[2 + i]], rhs[rhs_spec[2 + i]],
            p["window_strides"][i], p["padding"][i][0], p["lhs_dilation"][i],
            p["rhs_dilation"][i])
      for i in range(len(lhs_spec) - 2))
  return 2 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * taps


def _sub_jaxprs(value):
  if isinstance(value, core.ClosedJaxpr):
    return [value.jaxpr]
  if isinstance(value, core.Jaxpr):
    return [value]
  return []


def _jaxpr_flops(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_general(eqn)
    elif name == "conv_general_dilated":
      total += _conv(eqn)
    elif name == "cond":
      total += max(_jaxpr_flops(b.jaxpr) for b in eqn.params["branches"])
    elif name == "while":
      raise ValueError("A while loop has no static trip count; count its body instead.")
    else:
      inner = sum(_jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
      total += inner * (eqn.params["length"] if name == "scan" else 1)
  return total
