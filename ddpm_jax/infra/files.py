"""Files anywhere etils.epath reaches (local paths, gs:// where gcsfs is installed), written
atomically: a temporary file in the same folder, then a rename, so a crash or a SIGTERM never
leaves a half-written result where a finished one is expected. (On object stores a rename
is a copy; the temporary name still keeps readers from a partial file.)"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile

import numpy as np
from etils import epath


def is_uri(path: str) -> bool:
  """gs://bucket/dir and the like, as opposed to a local path."""
  return "://" in path


def resolve(path: str) -> str:
  """A local path made absolute (~ expanded); a URI such as gs://bucket/dir as given."""
  return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
  """A file open for writing beside `path`, moved onto `path` only if the block succeeds;
  the parent folder is created."""
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / f".{target.name}.tmp"
  try:
    with tmp.open(mode) as f:
      yield f
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  tmp.replace(target)


def save_npz(path: str, *, compressed: bool = False, **arrays) -> str:
  buffer = io.BytesIO()  # np.savez seeks; object-store files do not
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  with atomic_open(path) as f:
    f.write(buffer.getvalue())
  return path


def load_npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of an .npz file, never unpickled: a one-line ValueError (naming the file) for
  a file that is not a zip archive, holds Python objects, or is cut short."""
  with epath.Path(path).open("rb") as f:
    data = f.read()
  if not data.startswith(b"PK"):
    raise ValueError(f"{path} is not an .npz file (not a zip archive)")
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except ValueError as e:
    if "allow_pickle" not in str(e):
      raise ValueError(f"{path} is not a readable .npz file ({e})") from None
    raise ValueError(f"{path} holds Python objects, refused for safety (loading them could "
                     f"run code)") from None
  except (OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable .npz file ({e})") from None


def save_text(path: str, text: str) -> str:
  """Writes `text` to `path` atomically (atomic_open)."""
  with atomic_open(path, "w") as f:
    f.write(text)
  return path


def save_json(path: str, obj) -> str:
  """`obj` as JSON (serialized first: a bad value raises before any write), atomically."""
  return save_text(path, json.dumps(obj, indent=2))


def exists(path: str) -> bool:
  return epath.Path(path).exists()


def names(folder: str) -> set[str]:
  """The names of a folder's entries, in one listing (empty if the folder is absent)."""
  folder = epath.Path(folder)
  return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def sha256(path: str) -> str:
  """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
