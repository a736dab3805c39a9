"""The import layering of the package, read from the source with `ast`: every module imports
only from layers below its own (never sideways, never up), and the modules that stand apart
(models, data, files, devices, checkpoints, the Inception network) import nothing layered."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ddpm_jax"

LAYERS = [  # top to bottom
    ["main"],
    ["train", "generate", "bpd", "evaluation.evaluate"],  # the modes
    ["runs"],
    ["sampler_builder"],
    ["builders"],
    ["likelihood", "train_step"],
    ["samplers.ddpm", "samplers.ddim", "samplers.pc", "samplers.langevin", "samplers.ode",
     "samplers.dpm_solver", "samplers.unipc", "samplers.edm",
     "samplers.guidance", "losses", "score_losses", "preconditioning", "analytic"],
    ["samplers.common", "samplers.log_snr"],
    ["diffusion", "sde"],
    ["schedules", "broadcast"],
]
APART = ["models.layers", "models.unet", "data", "files", "flops", "images", "metrics_writer",
         "parallel", "checkpoint", "evaluation.inception", "evaluation.fid",
         "evaluation.convert_inception"]


def _modules() -> set[str]:
  return {".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
          if p.name != "__init__.py"}


def _imports(source: str, known: set[str]) -> set[str]:
  """The package modules a source file imports, at any depth (function-level too)."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
    else:
      continue
    for name in names:
      if name.startswith("ddpm_jax."):
        short = name[len("ddpm_jax."):]
        if short in known:
          found.add(short)
  return found


def violations(imports: dict[str, set[str]]) -> list[str]:
  """'a -> b' for every import that goes up or sideways in LAYERS, or out of APART."""
  rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
  bad = []
  for module, targets in sorted(imports.items()):
    for target in sorted(targets):
      if target in APART:
        continue
      if module in APART or rank[target] <= rank[module]:
        bad.append(f"{module} -> {target}")
  return bad


def test_every_module_has_a_place():
  placed = [m for layer in LAYERS for m in layer] + APART
  assert len(placed) == len(set(placed))
  assert set(placed) == _modules(), "place new modules in LAYERS or APART"


def test_no_module_imports_upward_or_sideways():
  known = _modules()
  imports = {m: _imports((PACKAGE / (m.replace(".", "/") + ".py")).read_text(), known)
             for m in known}
  assert imports["builders"] and imports["main"]  # the parser finds imports at all
  assert violations(imports) == []


@pytest.mark.parametrize("module,source,expected", [
    ("builders", "from ddpm_jax import train", ["builders -> train"]),             # up
    ("train", "from ddpm_jax import generate", ["train -> generate"]),             # sideways
    ("data", "import ddpm_jax.diffusion", ["data -> diffusion"]),                  # out of apart
    ("samplers.pc", "def f():\n  from ddpm_jax.samplers import ddim",            # inside a function
     ["samplers.pc -> samplers.ddim"]),
    ("train", "from ddpm_jax.samplers import common\nfrom ddpm_jax import files", []),
])
def test_the_checker_catches_each_kind_of_bad_import(module, source, expected):
  assert violations({module: _imports(source, _modules())}) == expected
