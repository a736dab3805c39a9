"""The samplers, one row each: what builds its loop, the options it reads (the builder's
keyword and the `sampling.*` field behind it), the network evaluations it costs, its default
step grid, whether it honours clipping (sampling.clip_x0: the Denoiser's clip_x0), and the
objectives it runs on. config/sampler.py, the config's checks and docs/samplers.md's table read
it; adding a sampler is one module and one row.

Every sampler is run the same way: `sample(method, denoiser, key, shape, **options)` ->
(samples, info) with info["nfe"] the network evaluations per sample.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Sequence

import numpy as np

from ddpm_jax.samplers import (
  ancestral,
  common,
  ddim,
  dpm_solver,
  edm_heun,
  rectified_flow,
  langevin,
  ode,
  pc,
  unipc,
)

SDE_MODELS = ("ddpm", "dsm", "edm")  # objectives (core/denoiser.py) with a continuous time
ODE_MODELS = SDE_MODELS + ("flow",)  # and those on a flow path (α(T) = 0: no reverse SDE at T)


@dataclasses.dataclass(frozen=True)
class Sampler:
  build: Callable                  # build(sde, shape, **options) -> the per-device loop
  options: dict                    # builder keyword -> the sampling.* field it reads
  nfe: Callable                    # nfe(sde, **options) -> evaluations per sample, or None
  objectives: tuple                     # the objectives it samples
  clips: bool                      # whether the Denoiser's clip_x0 (sampling.clip_x0) applies
  grid: str | None = None          # its default spacing (sampling.spacing "")
  choices: dict = dataclasses.field(default_factory=dict)  # field -> the values it accepts
  summary: str = ""                # the docs' line: what it is, its NFE


GRID = {"num_steps": "num_steps", "spacing": "spacing", "eps": "eps", "denoise": "denoise"}
_FLOW = {"num_steps": "num_steps", "eps": "eps", "shift": "flow_shift", "denoise": "denoise"}

SAMPLERS = {
    "ddpm": Sampler(ancestral.ddpm_loop, {}, ancestral.nfe, ("ddpm",), True,
                    summary="ancestral sampling (Ho et al. 2020) over all T steps of the chain | T"),
    "ddim": Sampler(ddim.ddim_loop, {"num_steps": "num_steps", "eta": "eta",
                                     "skip_type": "skip_type"}, ddim.nfe, ("ddpm",), True,
                    choices={"skip_type": ddim.SKIP_TYPES},
                    summary="DDIM (Song et al. 2021) on a sub-sequence of the chain, η ∈ [0, 1] | N"),
    "pc": Sampler(pc.pc_loop, {"predictor": "predictor", "corrector": "corrector",
                               "snr": "snr", "n_steps": "n_steps_each", "eps": "eps",
                               "denoise": "denoise"}, pc.nfe, SDE_MODELS, False,
                  choices={"predictor": pc.PREDICTORS, "corrector": pc.CORRECTORS},
                  summary="predictor–corrector (Song et al. 2021) on the reverse SDE's N "
                          "levels | N × (1 + corrector steps)"),
    "ode": Sampler(ode.ode_loop, {"solver": "ode_solver", "rtol": "rtol", "atol": "atol",
                                  "num_steps": "num_steps", "eps": "eps",
                                  "denoise": "denoise"}, lambda sde, **_: None, ODE_MODELS,
                   True, choices={"ode_solver": ode.SOLVERS},
                   summary="probability-flow ODE, adaptive (tsit5, dopri5) or fixed steps "
                           "(heun, euler) | counted"),
    "dpm_solver": Sampler(dpm_solver.dpm_solver_loop, {
        **GRID, "order": "solver_order", "variant": "dpm_solver_variant",
        "lower_order_final": "lower_order_final", "third_order": "dpm_solver_3m",
        "start": "dpm_solver_start"}, dpm_solver.nfe, ODE_MODELS, True,
        dpm_solver.SPACING, {"solver_order": dpm_solver.ORDERS,
                             "dpm_solver_variant": dpm_solver.VARIANTS,
                             "dpm_solver_3m": dpm_solver.THIRD_ORDER,
                             "dpm_solver_start": dpm_solver.STARTS},
        "DPM-Solver++ (Lu et al. 2022) 1M/2M/3M multistep and 2S in log-SNR on data "
        "predictions | N + 1 (3M with the 2S start: N + 2; 2S: 2N + 1)"),
    "unipc": Sampler(unipc.unipc_loop, {
        **GRID, "order": "solver_order", "variant": "unipc_variant",
        "corrector": "unipc_corrector", "lower_order_final": "lower_order_final"},
        unipc.nfe, ODE_MODELS, True, unipc.SPACING,
        {"solver_order": unipc.ORDERS, "unipc_variant": unipc.VARIANTS},
        "UniPC (Zhao et al. 2023): the UniP-p predictor (p = 1–3, bh1/bh2) with the free "
        "UniC corrector | N + 1"),
    "edm": Sampler(edm_heun.edm_loop, {
        **GRID, "churn": "edm_churn", "s_tmin": "edm_s_tmin", "s_tmax": "edm_s_tmax",
        "s_noise": "edm_s_noise"}, edm_heun.nfe, ODE_MODELS, True, edm_heun.SPACING,
        summary="EDM's Heun (Karras et al. 2022) in x/α and σ/α, optional stochastic churn "
                "| 2N + 1"),
    "flow_euler": Sampler(rectified_flow.flow_euler_loop, _FLOW, rectified_flow.nfe,
                          ODE_MODELS, True,
                          summary="Euler on the probability-flow ODE dx/dt = v in t (rectified "
                                  "flow), SD3's time shift | N + 1"),
    "flow_heun": Sampler(rectified_flow.flow_heun_loop, _FLOW,
                         lambda sde, **o: rectified_flow.nfe(sde, heun=True, **o),
                         ODE_MODELS, True,
                         summary="Heun on the same ODE and grid, the last step Euler's | 2N"),
    "flow_sde": Sampler(rectified_flow.flow_sde_loop, {**_FLOW, "noise": "flow_noise"},
                        rectified_flow.nfe, ODE_MODELS, True,
                        summary="Euler–Maruyama on the reverse SDE with diffusion g² = "
                                "flow_noise · σ(t) (SiT's), same grid | N + 1"),
    "ald": Sampler(langevin.ald_loop, {"step_lr": "step_lr", "n_steps_each": "n_steps_each",
                                       "denoise": "denoise"}, langevin.nfe, ("ncsn",), False,
                   summary="annealed Langevin dynamics (Song & Ermon 2019) over NCSN's L levels | "
                           "L × steps + 1"),
}


def markdown() -> str:
  """docs/samplers.md's table of samplers, one row per entry of SAMPLERS
  (tests/test_readme.py checks the page holds it)."""
  lines = ["| `sampling.method` | what | NFE for `num_steps` = N | objectives | options "
           "(`sampling.*`) | clips |", "|---|---|---|---|---|---|"]
  for name, e in SAMPLERS.items():
    what, cost = e.summary.split(" | ")
    fields = ", ".join(f"`{f}`" for f in dict.fromkeys(e.options.values()))
    lines.append(f"| `{name}` | {what} | {cost} | {', '.join(e.objectives)} | {fields or '—'} | "
                 f"{'yes' if e.clips else 'no'} |")
  return "\n".join(lines)


def get(method: str) -> Sampler:
  if method not in SAMPLERS:
    raise ValueError(f"Unknown sampler {method!r}; use one of {tuple(SAMPLERS)}.")
  return SAMPLERS[method]


def nfe(method: str, sde, options: dict) -> int | None:
  """Network evaluations per sample of `method` with `options` (the builder's defaults for
  the rest), before guidance doubles them; None where the solver counts its own (the ODE)."""
  entry = get(method)
  bound = inspect.signature(entry.build).bind(sde, (), **options)
  bound.apply_defaults()
  return entry.nfe(sde, **{k: v for k, v in bound.arguments.items() if k not in ("sde", "shape")})


def sample(method: str, model, key, shape: Sequence[int], *, x_T=None, cond=None, known=None,
           mesh=None, **options):
  """Samples [B, ...] of `shape` from the Denoiser `model` with sampler `method` and its
  `options` (the builder's keywords), from x_T where given (with `t_start`, the images that
  are noised to it and edited), with labels `cond` and inpainting's known = (data, mask):
  returns (samples, info), info holding "nfe", the evaluations per sample (both passes under
  classifier-free guidance, and the classifier's gradients), and what the sampler records.
  This compiles for the call; config/sampler.py compiles once per run."""
  entry = get(method)
  if model.objective not in entry.objectives:
    raise ValueError(f"Sampler {method!r} samples networks trained by {entry.objectives}, not "
                     f"{model.objective!r}.")
  loop = entry.build(model.process, tuple(shape[1:]), **options)
  x, info = common.run(loop, model, key, shape[0], mesh=mesh, x_init=x_T, cond=cond,
                       known=known)
  fixed = nfe(method, model.process, options)
  counted = np.mean(np.asarray(info["nfe"])) if fixed is None else fixed
  return x, {**info, "nfe": float(counted) * model.evaluations_per_call}
