"""PyTorch's files read as data, without torch and without running code from the file:
torch.save's zip (torch ≥ 1.6: `data.pkl` and one raw buffer per storage) and its legacy
format (torch < 1.6, or _use_new_zipfile_serialization=False: pickles of a magic number, the
protocol version and system facts, then the object, then its storage keys, then each
storage's element count (int64) and bytes in that order).

`data.pkl` is a pickle; unpickling calls whatever callables it names, so the unpickler here
resolves names from an allow-list only — the containers (OrderedDict) and torch's tensor
rebuild functions, each mapped to a numpy function of this module — and refuses any other
name in one line, before anything is called (what torch.load(weights_only=True) admits, less:
no torch objects are made). A tensor is its storage's bytes read from the zip as a numpy
array of the storage's dtype, viewed with the pickled offset, size and stride (in elements)
and copied; bfloat16 becomes float32.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from ddpm_jax.interop.tensors import FormatError

# torch.<Name>Storage (the storage type in each tensor's persistent id) → numpy dtype.
STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
            "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
            "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
            "BoolStorage": "?"}


class _Storage:
  """A typed storage named in a persistent id: its numpy dtype."""

  def __init__(self, dtype: str):
    self.dtype = dtype


class _Pending:
  """A legacy file's storage, whose bytes come after the object: (dtype, key)."""

  def __init__(self, dtype: str, key: str):
    self.dtype, self.key = dtype, key


class _Deferred:
  """A tensor of a _Pending storage, rebuilt once the storages are read."""

  def __init__(self, storage: _Pending, args):
    self.storage, self.args = storage, args


def _rebuild_tensor(storage, offset, size, stride, *_):
  """torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  backward_hooks[, metadata]) as a numpy array (a copy)."""
  if isinstance(storage, _Pending):
    return _Deferred(storage, (offset, size, stride))
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or any(s < 0 for s in (*size, *stride)) or offset < 0:
    raise FormatError(f"a tensor of size {size} and stride {stride} is not well formed")
  last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
  if last >= storage.size:
    raise FormatError(f"a tensor of size {size} reads past its storage of {storage.size} "
                      f"elements; the file is damaged")
  if not all(size):
    return np.zeros(size, storage.dtype)
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_):
  """torch._utils._rebuild_parameter: an nn.Parameter is its data."""
  return data


ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
           ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
           ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
           **{("torch", name): _Storage(dtype) for name, dtype in STORAGES.items()}}


class _Unpickler(pickle.Unpickler):
  """archive None: a legacy file, whose storages are _Pending."""

  def __init__(self, file, archive: zipfile.ZipFile | None, prefix: str, path: str):
    super().__init__(file)
    self.archive, self.prefix, self.path = archive, prefix, path

  def find_class(self, module, name):
    if (module, name) in ALLOWED:
      return ALLOWED[(module, name)]
    raise FormatError(f"{self.path} names {module}.{name}, which is not a tensor or a "
                      f"container, so it is not read (it could run code); save the state "
                      f"dict alone: torch.save(model.state_dict(), PATH).")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _Storage)) or (len(pid) == 6 and pid[5] is not None):
      raise FormatError(f"{self.path}: an unknown storage reference {pid!r}")
    dtype, key = pid[1].dtype, str(pid[2])
    if self.archive is None:
      return _Pending(dtype, key)
    try:
      raw = self.archive.read(f"{self.prefix}data/{key}")
    except KeyError:
      raise FormatError(f"{self.path} lacks the storage data/{key}; the file is cut "
                        f"short or damaged") from None
    return _storage(raw, dtype, f"{self.path}: storage data/{key}")


def _storage(raw: bytes, dtype: str, where: str) -> np.ndarray:
  if dtype == "bfloat16":  # numpy has none: the upper half of a float32
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
  dtype = np.dtype(dtype)
  if len(raw) % dtype.itemsize:
    raise FormatError(f"{where} is not whole {dtype} values")
  return np.frombuffer(raw, dtype)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _legacy(f, path: str):
  """The object of a legacy torch.save file, its storages read after it."""
  if _Unpickler(f, None, "", path).load() != LEGACY_MAGIC:
    raise FormatError(f"{path} is not a PyTorch file (no zip, no legacy magic number).")
  _Unpickler(f, None, "", path).load()  # the protocol version
  _Unpickler(f, None, "", path).load()  # byte order and type sizes
  pending = []

  class Recording(_Unpickler):
    def persistent_load(self, pid):
      storage = super().persistent_load(pid)
      pending.append(storage)
      return storage
  obj = Recording(f, None, "", path).load()
  keys = _Unpickler(f, None, "", path).load()
  dtypes = {p.key: p.dtype for p in pending}
  storages = {}
  for key in keys:
    dtype = dtypes.get(str(key))
    if dtype is None:
      raise FormatError(f"{path}: storage {key} is not referenced; the file is damaged")
    (n,) = struct.unpack("<q", f.read(8))
    size = n * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
    raw = f.read(size)
    if n < 0 or len(raw) != size:
      raise FormatError(f"{path}: storage {key} is cut short; the file is damaged")
    storages[str(key)] = _storage(raw, dtype, f"{path}: storage {key}")
  return _resolve(obj, storages, path)


def _resolve(obj, storages: dict, path: str):
  """`obj` with each _Deferred tensor rebuilt from `storages`."""
  if isinstance(obj, _Deferred):
    if obj.storage.key not in storages:
      raise FormatError(f"{path}: storage {obj.storage.key} is missing; the file is damaged")
    return _rebuild_tensor(storages[obj.storage.key], *obj.args)
  if isinstance(obj, dict):
    out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
    out.update((k, _resolve(v, storages, path)) for k, v in obj.items())
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, storages, path) for v in obj)
  return obj


def read(path: str):
  """The object torch.save wrote to `path` (dicts, lists, numbers, strings), each tensor a
  numpy array; a name outside ALLOWED or a damaged file is a one-line FormatError."""
  try:
    if not zipfile.is_zipfile(path):
      with open(path, "rb") as f:
        return _legacy(io.BufferedReader(f), path)
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
      if len(pickles) != 1:
        raise FormatError(f"{path} is a zip file but not one torch.save wrote (it has "
                          f"{len(pickles)} data.pkl entries).")
      prefix = pickles[0][:-len("data.pkl")]
      with archive.open(pickles[0]) as f:
        return _Unpickler(f, archive, prefix, path).load()
  except FormatError:
    raise
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
          AttributeError, IndexError, KeyError, OSError, struct.error) as e:
    raise FormatError(f"{path} cannot be read as a PyTorch file ({type(e).__name__}: "
                      f"{e}); the file is damaged or not torch.save's.") from None
