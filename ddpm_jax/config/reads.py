"""Which fields a run reads, recorded rather than listed: `Recorder(config)` is a read-only
view of a ConfigDict that notes the dotted name of every field read through it (a section
handed on whole, by `to_dict()`, counts every field in it). The gate builds a mode's objects
through one (config/validate.py), so a command-line setting that nothing of the run read is
refused, and the results' digest (modes/runs.py) holds exactly the sampling fields read.
"""

from __future__ import annotations

import ml_collections


class Recorder:
  """`config` as its readers see it (attributes, items, get, items(), to_dict()); `seen` is
  the set of dotted field names read so far."""

  def __init__(self, config, prefix: str = "", seen: set | None = None):
    object.__setattr__(self, "_node", unrecorded(config))
    object.__setattr__(self, "_prefix", prefix)
    object.__setattr__(self, "seen", set() if seen is None else seen)

  def _read(self, name: str):
    value = self._node[name]
    full = self._prefix + name
    if isinstance(value, ml_collections.ConfigDict):
      return Recorder(value, full + ".", self.seen)
    self.seen.add(full)
    return value

  def __getattr__(self, name: str):
    if name.startswith("__"):
      raise AttributeError(name)
    try:
      return self._read(name)
    except KeyError as e:
      raise AttributeError(name) from e

  def __getitem__(self, name: str):
    return self._read(name)

  def __setattr__(self, name, value):
    raise TypeError(f"the config is read-only while the gate builds; {name} not set")

  def __contains__(self, name) -> bool:
    return name in self._node

  def __iter__(self):
    return iter(self._node)

  def keys(self):
    return self._node.keys()

  def get(self, name: str, default=None):
    return self._read(name) if name in self._node else default

  def items(self):
    return [(k, self._read(k)) for k in self._node]

  def values(self):
    return [self._read(k) for k in self._node]

  def to_dict(self) -> dict:
    self.seen.update(self._prefix + name for name in leaves(self._node))
    return self._node.to_dict()


def unrecorded(config):
  """The ConfigDict behind a Recorder (reads through it are not counted), else `config`."""
  return config._node if isinstance(config, Recorder) else config


def peek(config, name: str):
  """The value of dotted field `name`, not counted as read (a condition on what is read)."""
  node = unrecorded(config)
  for part in name.split("."):
    node = node[part]
  return node


def expand(config, names) -> set[str]:
  """The dotted names of the fields that `names` (fields or whole sections) cover."""
  out = set()
  for name in names:
    node = peek(config, name)
    if isinstance(node, ml_collections.ConfigDict):
      out.update(f"{name}.{leaf}" for leaf in leaves(node))
    else:
      out.add(name)
  return out


def leaves(node, prefix: str = ""):
  """The dotted names of every field under `node`."""
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"
