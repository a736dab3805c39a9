"""Config files as the command line reads them, for code that runs without absl flags (the
Python API, benchmarks, tests): `load("configs/X.py[:argument]")` calls the file's get_config,
`override(config, ["a.b=value", ...])` sets fields with the same literal parsing as
`--config.a.b=value`, and `assign(config, {"a.b": value})` sets Python values.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import traceback

import ml_collections
from etils import epath


def load(spec: str):
  """The ConfigDict of a config file; `spec` is a path, optionally with ":argument" for a
  get_config that takes one (as --config accepts)."""
  path, _, argument = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No config file {path!r}; give a shipped config's name "
                            f"(ddpm_jax.configs.names()) or the path of a config file.")
  module_spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(argument) if argument else module.get_config()
  except Exception as e:  # noqa: BLE001 (whatever the file raised, as one line)
    raise ValueError(file_error(path, e)) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"{path}: get_config() returned a value of type "
                    f"{type(config).__name__}, not an ml_collections.ConfigDict; return one "
                    f"(see ddpm_jax/configs/demo.py)")
  return config


def run_config(path: str) -> ml_collections.ConfigDict:
  """The config a run wrote (its workdir's config.json); a file that is not a JSON object
  (cut short, emptied, another file) is a one-line ValueError naming it."""
  try:
    value = json.loads(epath.Path(path).read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not a readable config.json ({e}); restore it from a copy "
                     f"(config.<step>.json beside it keeps earlier ones) or rewrite it with "
                     f"the settings the run was trained with.") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path} holds a JSON {type(value).__name__}, not a run's settings; "
                     f"restore the run's config.json.")
  return ml_collections.ConfigDict(value)


def file_error(path: str, error: BaseException) -> str:
  """One line for a config file that failed to load: the file, its line, the error and the
  fix (an old-style `from configs import X` names the package the shipped configs are in)."""
  if isinstance(error, SyntaxError):
    return f"config file {path} line {error.lineno}: {error.msg}; fix the file."
  if isinstance(error, AttributeError) and "get_config" in str(error):
    return (f"config file {path} defines no get_config(); define one that returns an "
            f"ml_collections.ConfigDict (see ddpm_jax/configs/demo.py).")
  if isinstance(error, ModuleNotFoundError) and error.name == "configs":
    return (f"config file {path}: `from configs import ...` names the repository folder; "
            f"the shipped configs are the package ddpm_jax.configs: write `from "
            f"ddpm_jax.configs import ...`.")
  here = os.path.abspath(path)
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == here]
  where = f" line {lines[-1]}" if lines else ""
  return f"config file {path}{where}: {type(error).__name__}: {error}; fix the file."


def parent(config, name: str):
  """(the section holding dotted field `name`, the field's own name); an unknown field is a
  one-line ValueError."""
  unknown = ValueError(f"unknown config field {name!r} (the fields are in docs/config.md)")
  *parents, leaf = name.split(".")
  node = config
  for part in parents:
    if not _is_section(node) or part not in node:
      raise unknown
    node = node[part]
  if not _is_section(node) or leaf not in node:
    raise unknown  # e.g. "seed.x": seed is a value, not a section
  return node, leaf


def _is_section(node) -> bool:
  return hasattr(node, "keys")  # a ConfigDict, or the gate's view of one (config/reads.py)


def value(config, name: str):
  """The value of dotted field `name`, a list (as config.json stores tuples) as a tuple."""
  node, leaf = parent(config, name)
  return tuple(node[leaf]) if isinstance(node[leaf], list) else node[leaf]


def override(config, assignments) -> list[str]:
  """Sets each "a.b=value" as --config.a.b=value does (a Python literal where the text is one,
  a float field's inf and nan, else a string) and returns the dotted names set; an unknown
  field or a value of the wrong type is a one-line ValueError."""
  values = {}
  for item in assignments:
    name, _, text = item.partition("=")
    node, leaf = parent(config, name)
    try:
      values[name] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      values[name] = float(text) if isinstance(node[leaf], float) and _is_float(text) else text
  return assign(config, values)


def _is_float(text: str) -> bool:
  try:
    float(text)
  except ValueError:
    return False
  return True


def assign(config, values) -> list[str]:
  """Sets each dotted field of the mapping to its Python value and returns the names set; an
  unknown field or a value of the wrong type is a one-line ValueError naming the field."""
  for name, value in values.items():
    node, leaf = parent(config, name)
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[leaf] = value
    except TypeError:
      raise ValueError(f"{name}={value!r} must be of type {type(node[leaf]).__name__}, like its "
                       f"default {node[leaf]!r}.") from None
  return list(values)
