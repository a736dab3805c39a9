"""The shipped configs, one module each (`get_config()` returns an ml_collections.ConfigDict),
loadable by name from an installed package and from any directory:

  import ddpm_jax as dj
  config = dj.configs.get("demo", **{"training.batch_size": 32})
  dj.configs.names()          # ('celebahq256_ddpm', 'cifar10_ddpm', …)

  python -m ddpm_jax.main --config demo --workdir runs/demo      # by name, or by path:
  python -m ddpm_jax.main --config configs/demo.py --workdir runs/demo

A config of your own is a file with a get_config() that starts from one of these
(`from ddpm_jax.configs import demo`).
"""

from __future__ import annotations

import pathlib

from ddpm_jax.config import load

HERE = pathlib.Path(__file__).resolve().parent


def names() -> tuple[str, ...]:
  """The shipped configs' names, sorted."""
  return tuple(sorted(p.stem for p in HERE.glob("*.py") if p.stem != "__init__"))


def path(name: str) -> str:
  """The file of shipped config `name`; an unknown name is a one-line ValueError listing
  them."""
  if name not in names():
    raise ValueError(f"Unknown config {name!r}; use one of {names()} or the path of a config "
                     f"file (a .py with get_config()).")
  return str(HERE / f"{name}.py")


def get(name: str, **overrides):
  """The ConfigDict of shipped config `name` (or of a config file's path, with an optional
  ":argument"), with `overrides` set: dotted names as keywords (**{"training.batch_size": 8})
  or a section's dict (training={"batch_size": 8}). An unknown name or field is a one-line
  ValueError."""
  stem, colon, argument = name.partition(":")
  config = load.load(stem + colon + argument if stem.endswith(".py") else
                     path(stem) + colon + argument)
  assignments = {}
  for key, value in overrides.items():
    if isinstance(value, dict):
      assignments.update({f"{key}.{k}": v for k, v in value.items()})
    else:
      assignments[key] = value
  load.assign(config, assignments)
  return config

