"""JAX's persistent compilation cache: a resumed or repeated run loads its compiled programs
from disk instead of compiling them again.

`enable(directory)` points JAX at the directory (created) unless the environment already
chose one (JAX_COMPILATION_CACHE_DIR, e.g. a test session's), and caches every program that
took more than `min_seconds` to compile. An empty directory turns the cache off; a URL
(gs://…) is passed to JAX as it is. `check(directory)`, the config gate's, refuses a local
folder that cannot be created or written, without creating anything.
"""

from __future__ import annotations

import os

import jax

ENV = "JAX_COMPILATION_CACHE_DIR"


def _local(directory: str) -> str | None:
  """The absolute local folder the cache would use (None: the environment's, off, or a URL)."""
  if os.environ.get(ENV) or not directory or "://" in directory:
    return None
  return os.path.abspath(os.path.expanduser(directory))


def _refusal(directory: str, why: str) -> ValueError:
  return ValueError(f"compilation_cache={directory!r} cannot be used ({why}); set "
                    f"--config.compilation_cache to a writable folder, or '' to compile "
                    f"without the cache.")


def check(directory: str) -> None:
  """Raises a one-line ValueError when the local cache folder is a file, or lies under a
  file or a folder that cannot be written."""
  path = _local(directory)
  if path is None:
    return
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise _refusal(directory, f"{existing} is a file")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise _refusal(directory, f"{existing} is not writable")


def enable(directory: str, min_seconds: float = 1.0) -> str | None:
  """The cache directory now in use (None: off)."""
  if os.environ.get(ENV):
    return os.environ[ENV]
  if not directory:
    return None
  path = _local(directory)
  if path is not None:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:  # what check() cannot see (e.g. /proc, a read-only mount)
      raise _refusal(directory, e.strerror or type(e).__name__) from None
    directory = path
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_seconds))
  return directory
