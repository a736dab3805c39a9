"""Config files as the command line reads them, for code that runs without absl flags (the
benchmarks, tests): `load("configs/X.py[:argument]")` calls the file's get_config, and
`override(config, ["a.b=value", ...])` sets fields with the same literal parsing as
`--config.a.b=value`.
"""

from __future__ import annotations

import ast
import importlib.util

import ml_collections


def load(spec: str):
  """The ConfigDict of a config file; `spec` is a path, optionally with ":argument" for a
  get_config that takes one (as --config accepts)."""
  path, _, argument = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(argument) if argument else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"{path}: get_config() returned a value of type "
                    f"{type(config).__name__}, not an ml_collections.ConfigDict")
  return config


def parent(config, name: str):
  """(the section holding dotted field `name`, the field's own name); an unknown field is a
  one-line ValueError."""
  unknown = ValueError(f"unknown config field {name!r} (the fields are in ddpm_jax/config/defaults.py)")
  *parents, leaf = name.split(".")
  node = config
  for part in parents:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise unknown
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise unknown  # e.g. "seed.x": seed is a value, not a section
  return node, leaf


def override(config, assignments) -> list[str]:
  """Sets each "a.b=value" (value parsed as a Python literal where it is one, else a string)
  and returns the dotted names set; an unknown field is a one-line ValueError."""
  names = []
  for item in assignments:
    name, _, text = item.partition("=")
    node, leaf = parent(config, name)
    try:
      node[leaf] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      node[leaf] = text
    names.append(name)
  return names
