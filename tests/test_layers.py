"""The import layering of the package, read from the source with `ast`: each package imports
only packages of the layers below its own (never sideways, never up), and the modules inside
a package import each other without cycles."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ddpm_jax"

LAYERS = [  # top to bottom
    ["main", "pipeline"],
    ["configs"],
    ["modes"],
    ["interop"],
    ["config"],
    ["training", "samplers", "testing"],
    ["objectives"],
    ["core"],
    ["models", "data", "evaluation"],
    ["infra"],
]


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
      short = name.removeprefix("ddpm_jax.")
      if name.startswith("ddpm_jax.") and short in known:
        found.add(short)
  return found


def _package(module: str) -> str:
  return module.split(".")[0]


def violations(imports: dict[str, set[str]]) -> list[str]:
  """'a -> b' for every import of a package in the same layer or above, and every cycle
  among the modules of one package."""
  rank = {p: i for i, layer in enumerate(LAYERS) for p in layer}
  bad = [f"{m} -> {t}" for m, targets in sorted(imports.items()) for t in sorted(targets)
         if _package(t) != _package(m) and rank[_package(t)] <= rank[_package(m)]]
  inside = {m: {t for t in ts if _package(t) == _package(m)} for m, ts in imports.items()}
  return bad + [f"cycle through {m}" for m in sorted(inside) if _reaches(inside, m, m)]


def _reaches(graph, start, goal) -> bool:
  """Whether a path of imports leads from `start` to `goal`."""
  stack, seen = list(graph.get(start, ())), set()
  while stack:
    module = stack.pop()
    if module == goal:
      return True
    if module not in seen:
      seen.add(module)
      stack.extend(graph.get(module, ()))
  return False


def test_every_package_has_a_layer():
  placed = [p for layer in LAYERS for p in layer]
  assert len(placed) == len(set(placed))
  assert set(placed) == {_package(m) for m in _modules()}, "place new packages in LAYERS"


def test_no_module_imports_upward_sideways_or_in_a_cycle():
  known = _modules()
  imports = {m: _imports((PACKAGE / (m.replace(".", "/") + ".py")).read_text(), known)
             for m in known}
  assert imports["config.build"] and imports["main"]  # the parser finds imports at all
  assert violations(imports) == []


@pytest.mark.parametrize("module,source,expected", [
    ("config.build", "from ddpm_jax.modes import train", ["config.build -> modes.train"]),  # up
    ("samplers.pc", "from ddpm_jax.training import step", ["samplers.pc -> training.step"]),  # sideways
    ("data.sources", "import ddpm_jax.core.chain", ["data.sources -> core.chain"]),           # up from below
    ("core.sde", "def f():\n  from ddpm_jax.samplers import grids",                         # in a function
     ["core.sde -> samplers.grids"]),
    ("modes.train", "from ddpm_jax.samplers import common\nfrom ddpm_jax.infra import files", []),
])
def test_the_checker_catches_each_kind_of_bad_import(module, source, expected):
  assert violations({module: _imports(source, _modules())}) == expected


def test_the_checker_catches_a_cycle_inside_a_package():
  assert violations({"samplers.ddim": {"samplers.ddpm"}, "samplers.ddpm": {"samplers.ddim"}}) == [
      "cycle through samplers.ddim", "cycle through samplers.ddpm"]
