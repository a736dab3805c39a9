"""FID against network evaluations per sample (NFE) on one trained model, per sampler: DDIM
(η = 0), DPM-Solver++(2M), DPM-Solver++(3M) in its two third-order forms
(`dpm_solver_3m_taylor`, `dpm_solver_3m_published`; not run unless asked for), UniPC (bh2,
order 2), EDM's Heun (Karras grid) and the adaptive probability-flow ODE (Tsit5 over a
ladder of tolerances, its NFE measured).

  python benchmarks/fid_vs_nfe.py --config configs/fashion_mnist_ddpm.py --workdir RUN \
      --nfe 5,10,20,50,100 --out fid_vs_nfe.jsonl --plot fid_vs_nfe.png \
      --config.fid.num_samples=10000 --config.fid.inception_weights=../shared/weights/inception_fid.npz

Each point is `--mode eval` (modes/evaluate.py) with the sampler's settings: its chunks
resume after an interruption, the reference features are computed once, and its JSON lands in
WORKDIR/eval as usual. One JSON line per point on --out (appended), then a markdown table on
stdout and, with --plot, FID against NFE on log axes (needs matplotlib), of every point on
--out (the last line of each sampler and budget, its steps or the ODE's rtol; `--samplers=`
only redraws them). Each fixed-step sampler gets the most steps whose evaluations
(config/sampler.nfe_per_sample, the final denoising one included) fit the budget: EDM's Heun
costs 2 per step, so a budget of n gets ⌊(n − 1)/2⌋ steps; DPM-Solver++ and UniPC get n − 1.
The NFE reported is the one spent.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.config import sampler  # noqa: E402
from ddpm_jax.modes import evaluate  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "The trained run's workdir.", required=True)
flags.DEFINE_list("nfe", ["5", "10", "20", "50", "100"], "Evaluation budgets per sample.")
flags.DEFINE_list("samplers", ["ddim", "dpm_solver", "unipc", "edm", "ode"], "Which samplers.")
flags.DEFINE_list("ode_rtol", ["1e-1", "1e-2", "1e-3", "1e-4"],
                  "Tolerances (rtol = atol) of the adaptive ODE, whose NFE is measured.")
flags.DEFINE_string("out", "fid_vs_nfe.jsonl", "JSON lines, appended.")
flags.DEFINE_string("plot", "", "PNG of FID against NFE (matplotlib), if given.")

THIRD_ORDER = {"solver_order": 3, "dpm_solver_variant": "multistep",
               "dpm_solver_start": "lower_order"}
SETTINGS = {  # sampler: (sampling.method, its fields; the ODE's: at a tolerance)
    "ddim": ("ddim", {"eta": 0.0}),
    "dpm_solver": ("dpm_solver", {"solver_order": 2, "dpm_solver_variant": "multistep"}),
    "dpm_solver_3m_taylor": ("dpm_solver", {**THIRD_ORDER, "dpm_solver_3m": "taylor"}),
    "dpm_solver_3m_published": ("dpm_solver", {**THIRD_ORDER, "dpm_solver_3m": "published"}),
    "unipc": ("unipc", {"solver_order": 2, "unipc_variant": "bh2"}),
    "edm": ("edm", {"edm_churn": 0.0}),
    "ode": ("ode", lambda rtol: {"ode_solver": "tsit5", "rtol": rtol, "atol": rtol}),
    "flow_euler": ("flow_euler", {"flow_shift": 1.0}),
    "flow_heun": ("flow_heun", {"flow_shift": 1.0}),
}


def configured(base, method: str, fields: dict):
  config = base.copy_and_resolve_references()
  config.sampling.method = method
  for k, v in fields.items():
    config.sampling[k] = v
  return config


def points(base):
  """(sampler, its config, the fields set) for every point asked for."""
  for name in flags.FLAGS.samplers:
    method, fields = SETTINGS[name]
    if name == "ode":
      for rtol in flags.FLAGS.ode_rtol:
        yield name, configured(base, method, fields(float(rtol))), fields(float(rtol))
      continue
    for budget in map(int, flags.FLAGS.nfe):
      for n in range(budget, 0, -1):  # the most steps that fit
        chosen = {**fields, "num_steps": n}
        config = configured(base, method, chosen)
        if sampler.nfe_per_sample(config) <= budget:
          yield name, config, chosen
          break


def main(_) -> None:
  for name, config, fields in points(flags.FLAGS.config):
    result = evaluate.evaluate(config, flags.FLAGS.workdir)
    row = {"what": "fid_vs_nfe", "objective": config.training.objective, "sampler": name,
           **fields, "clip_x0": config.sampling.clip_x0,
           "denoise": config.sampling.denoise, "nfe": result["nfe_per_sample"],
           **{k: result[k] for k in ("fid", "kid", "kid_std", "num_samples", "num_reference",
                                     "seconds")}}
    with open(flags.FLAGS.out, "a") as f:
      f.write(json.dumps(row) + "\n")
  with open(flags.FLAGS.out) as f:  # every point on file, the last of each sampler and budget
    rows = list({(r["sampler"], r.get("num_steps"), r.get("rtol")): r
                 for r in map(json.loads, f)}.values())
  rows.sort(key=lambda r: (r["sampler"], r["nfe"]))
  print("| sampler | NFE | FID | KID ×10³ |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['sampler']} | {r['nfe']:.1f} | {r['fid']:.2f} | "
          f"{1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f} |")
  if flags.FLAGS.plot:
    plot(rows, flags.FLAGS.plot)


def plot(rows, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name in dict.fromkeys(r["sampler"] for r in rows):
    mine = sorted((r["nfe"], r["fid"]) for r in rows if r["sampler"] == name)
    ax.plot(*zip(*mine), marker="o", label=name)
  ax.set(xscale="log", yscale="log", xlabel="network evaluations per sample", ylabel="FID")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)


if __name__ == "__main__":
  app.run(main)
