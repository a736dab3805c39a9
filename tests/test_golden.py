"""Golden outputs: every sampler of samplers/table.py, on an exact analytic model of a 2-D
Gaussian mixture with a fixed key, must return the samples it returned when the fixture was
written. The oracle tests (test_samplers, test_score_samplers, test_fast_samplers) check that
samplers are right; this one catches any change at all in what they return, which must come
with a raised config/sampler.py REVISION (results are named by it and reused under it).

After an intended change: raise REVISION, then `python tests/test_golden.py` rewrites the
fixture (review its diff).
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from ddpm_jax.config import sampler
from ddpm_jax.core import paths, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.samplers import table
from ddpm_jax.testing import analytic

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "golden_samples.json"
MEANS, STDS, WEIGHTS = np.array([[0.6, -0.4], [-0.5, 0.3]]), 0.2, np.array([0.3, 0.7])
SHAPE = (4, 2)

DDPM = sde_lib.DiscreteVPSDE(tuple(schedules.beta_schedule("linear", 100)))
VP, VE = sde_lib.VPSDE(N=20), sde_lib.VESDE(0.01, 20.0, 20)
CASES = {  # method -> (process, objective, prediction, options)
    "ddpm": (DDPM, "ddpm", "eps", {}),
    "ddim": (DDPM, "ddpm", "eps", {"num_steps": 10, "eta": 0.5}),
    "pc": (VP, "dsm", "score", {"predictor": "reverse_diffusion", "corrector": "langevin"}),
    "ode": (VE, "dsm", "score", {"solver": "tsit5", "rtol": 1e-4, "atol": 1e-4}),
    "dpm_solver": (DDPM, "ddpm", "eps", {"num_steps": 6, "order": 3}),
    "unipc": (VP, "dsm", "eps", {"num_steps": 6, "order": 2}),
    "edm": (VE, "edm", "edm", {"num_steps": 5, "churn": 10.0}),
    "ald": (sde_lib.VESDE(0.01, 20.0, 10), "ncsn", "eps", {"n_steps_each": 5,
                                                           "step_lr": 2e-5}),
    "flow_euler": (paths.LinearPath(), "flow", "velocity", {"num_steps": 6, "shift": 3.0}),
    "flow_heun": (paths.CosinePath(), "flow", "x0", {"num_steps": 4}),
    "flow_sde": (paths.LinearPath(), "flow", "velocity", {"num_steps": 6, "noise": 0.5}),
}


def _samples(method):
  process, objective, prediction, options = CASES[method]
  model = analytic.mixture_denoiser(process, MEANS, STDS, WEIGHTS, objective=objective,
                                    prediction=prediction)
  x, info = table.sample(method, model, jax.random.key(7), SHAPE, **options)
  return {"samples": np.asarray(x, np.float64).round(7).tolist(), "nfe": float(info["nfe"])}


def test_every_sampler_has_a_golden_case():
  assert set(CASES) == set(table.SAMPLERS), "give the new sampler a case here"


@pytest.mark.parametrize("method", sorted(CASES))
@pytest.mark.slow
def test_samples_equal_the_golden_outputs(method):
  golden = json.loads(FIXTURE.read_text())
  assert golden["revision"] == sampler.REVISION, (
      "config/sampler.py REVISION changed: rewrite the fixture (python tests/test_golden.py)")
  got, want = _samples(method), golden["samplers"][method]
  assert got["nfe"] == want["nfe"], f"{method}: NFE changed: raise sampler REVISION"
  np.testing.assert_allclose(got["samples"], want["samples"], rtol=1e-4, atol=1e-5,
                             err_msg=f"{method}: samples changed: raise sampler REVISION "
                                     f"(config/sampler.py) and rewrite the fixture")


if __name__ == "__main__":
  jax.config.update("jax_num_cpu_devices", 8)  # as the tests run (tests/conftest.py)
  FIXTURE.parent.mkdir(exist_ok=True)
  FIXTURE.write_text(json.dumps({"revision": sampler.REVISION,
                                 "samplers": {m: _samples(m) for m in sorted(CASES)}},
                                indent=1) + "\n")
  print(f"wrote {FIXTURE}")
