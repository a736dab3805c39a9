"""DPM-Solver++(3M) in its forms against the exact probability-flow ODE map of Gaussian data,
at equal network evaluations, as JSON lines:

  python benchmarks/dpm_solver_3m.py [--nfe 5 10 20 40] [--sde linear]

Forms: third_order "taylor" (D_2 × 2) or "published" (× 1, DPM-Solver's code and diffusers),
start "singlestep" (a 2S first step, one more evaluation) or "lower_order" (orders 1, 2, 3);
2M beside them. The data: x_0 ~ N(μ, diag s²) in 3 dimensions with scales 0.1 to 1.5 (μ
= 0.5, −1, 2); the process: the discrete VP of the 1000-step linear β chain (the demo's and
every DDPM model's; --sde vp, subvp, ve for the SDEs). The final denoising step is included
(as users sample), so "error" is max |x̂_0 − exact x̂_0| over 256 paths, the exact x̂_0 being
the posterior mean at eps of the exact ODE endpoint. Each line: {"what", "sde", "spacing",
"form", "nfe", "num_steps", "error"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.core import schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import common, dpm_solver, table
from ddpm_jax.testing import analytic

MEAN, STD, EPS = np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.5, 1.5]), 1e-3
FORMS = {"2M": {"order": 2}, **{
    f"3M {third} {start}": {"order": 3, "third_order": third, "start": start}
    for third in dpm_solver.THIRD_ORDER for start in dpm_solver.STARTS}}


def process(name: str):
  if name == "linear":
    return sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 1000)))
  return sde_lib.make_sde(name)


def steps_for(nfe: int, options: dict):
  """The num_steps that spends `nfe` evaluations (denoising included), or None."""
  for n in range(1, nfe + 1):
    if table.nfe("dpm_solver", None, {**options, "num_steps": n, "denoise": True}) == nfe:
      return n
  return None


def error(sde, spacing: str, num_steps: int, options: dict, paths: int = 256) -> float:
  model = analytic.mixture_denoiser(sde, MEAN[None], STD[None], objective="dsm", prediction="score")
  x_T = sde.prior_std() * np.asarray(jax.random.normal(jax.random.key(0), (paths, 3),
                                                       jnp.float64))
  loop = dpm_solver.dpm_solver_loop(sde, (3,), num_steps=num_steps, spacing=spacing, eps=EPS,
                                    **options)
  out = common.run(loop, model, None, paths, x_init=jnp.asarray(x_T))[0]
  end = analytic.gaussian_flow_map(sde, MEAN, STD, x_T, EPS)
  alpha, sigma = (np.asarray(v) for v in sde.marginal_coef(jnp.asarray(EPS)))
  exact = MEAN + alpha * STD**2 * (end - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)
  return float(np.abs(np.asarray(out) - exact).max())


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 40])
  p.add_argument("--sde", default="linear", choices=("linear",) + sde_lib.SDE_NAMES)
  p.add_argument("--spacing", nargs="+", default=["logsnr", "karras", "time_uniform"])
  args = p.parse_args()
  sde = process(args.sde)
  with jax.enable_x64(True):
    for spacing in args.spacing:
      for nfe in args.nfe:
        for form, options in FORMS.items():
          n = steps_for(nfe, options)
          if n is None:
            continue
          print(json.dumps({"what": "dpm_solver_3m", "sde": args.sde, "spacing": spacing,
                            "form": form, "nfe": nfe, "num_steps": n,
                            "error": error(sde, spacing, n, options)}), flush=True)


if __name__ == "__main__":
  main()
