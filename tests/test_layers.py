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
    ["config"],
    ["training", "samplers", "testing", "interop"],
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


def _holds_config(obj, seen=None, depth=0) -> bool:
  """Whether a ConfigDict is reachable from `obj` through closures, defaults, partials,
  wrapped functions, bound methods, dataclass fields and containers."""
  import dataclasses
  import functools

  import ml_collections
  seen = set() if seen is None else seen
  if id(obj) in seen or depth > 40:
    return False
  seen.add(id(obj))
  if isinstance(obj, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    return True
  children = []
  if isinstance(obj, functools.partial):
    children += [obj.func, *obj.args, *obj.keywords.values()]
  if isinstance(obj, (list, tuple, set, frozenset)):
    children += list(obj)
  if isinstance(obj, dict):
    children += list(obj.values())
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    children += [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
  for name in ("__wrapped__", "__func__", "__self__"):
    if hasattr(obj, name):
      children.append(getattr(obj, name))
  if callable(obj) and hasattr(obj, "__code__"):
    children += [c.cell_contents for c in (obj.__closure__ or ()) if _has_contents(c)]
    children += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
  return any(_holds_config(c, seen, depth + 1) for c in children)


def _has_contents(cell) -> bool:
  try:
    cell.cell_contents
  except ValueError:
    return False
  return True


@pytest.mark.parametrize("objective,method", [("ddpm", "ddim"), ("dsm", "dpm_solver"),
                                              ("ncsn", "ald"), ("edm", "edm")])
def test_built_functions_hold_no_config(objective, method):
  """A built loss, train step, sampler, bits/dim function and Denoiser close over plain
  objects (the process, the network, options), never over the ConfigDict that built them."""
  from conftest import tiny_config

  from ddpm_jax.config import build, sampler
  from ddpm_jax.infra import parallel
  config = tiny_config(**{"training.objective": objective, "sampling.method": method})
  mesh, shape = parallel.make_mesh(), (8, 8, 1)
  model = build.model(config, 1)
  built = {"loss": build.loss(config), "train_step": build.train_step(config, model, mesh),
           "sampler": sampler.make_sampler(config, model, shape, mesh),
           "denoiser": build.denoiser(config)(lambda x, t: x)}
  if objective != "ncsn":
    built["bpd"] = build.bpd(config, model, mesh)
  assert _holds_config(config) and _holds_config(lambda: config)  # the walker finds one
  assert [name for name, fn in built.items() if _holds_config(fn)] == []


def test_no_module_name_is_repeated_across_folders():
  """Each module's file name says what it holds, once: no two folders of the package, the
  tests and the benchmarks have a file of the same name."""
  import collections
  root = PACKAGE.parent
  names = collections.defaultdict(list)
  for folder in ("ddpm_jax", "tests", "benchmarks"):
    for p in (root / folder).rglob("*.py"):
      if p.name != "__init__.py" and "fixtures" not in p.parts:
        names[p.name].append(str(p.relative_to(root)))
  assert {n: ps for n, ps in names.items() if len(ps) > 1} == {}
