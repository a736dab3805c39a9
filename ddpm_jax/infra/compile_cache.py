"""JAX's persistent compilation cache: a resumed or repeated run loads its compiled programs
from disk instead of compiling them again.

`enable(directory)` points JAX at the directory (created) unless the environment already
chose one (JAX_COMPILATION_CACHE_DIR, e.g. a test session's), and caches every program that
took more than `min_seconds` to compile. An empty directory turns the cache off.
"""

from __future__ import annotations

import os

import jax

ENV = "JAX_COMPILATION_CACHE_DIR"


def enable(directory: str, min_seconds: float = 1.0) -> str | None:
  """The cache directory now in use (None: off)."""
  if os.environ.get(ENV):
    return os.environ[ENV]
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_seconds))
  return directory
