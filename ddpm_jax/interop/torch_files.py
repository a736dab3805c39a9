"""PyTorch's files read as data, without torch and without running code from the file:
torch.save's zip (torch ≥ 1.6: `data.pkl` and one stored, uncompressed buffer per storage)
and its legacy format (torch < 1.6, or _use_new_zipfile_serialization=False: pickles of a
magic number, the protocol version and system facts, then the object, then its storage keys,
then each storage's element count (int64) and bytes in that order).

`data.pkl` is a pickle; unpickling calls whatever callables it names, so the unpickler here
resolves names from an allow-list only — the containers (OrderedDict) and torch's tensor
rebuild functions, each mapped to a numpy function of this module — and refuses any other
name in one line, before anything is called; BUILD (setting an object's state) is refused but
for the dict subclasses' attributes a state dict carries (_metadata, dropped). No torch objects
are made. A tensor is its storage's bytes as a numpy array of the storage's dtype, viewed with
the pickled offset, size and stride (in elements; within the storage, no more elements than
it holds) and copied; bfloat16 becomes float32. Sizes are checked against the file before
anything is allocated, and shared objects are rebuilt once.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from ddpm_jax.interop.tensors import FormatError

SUFFIXES = (".pt", ".pth")  # the files a format reads with `read`
# torch.<Name>Storage (the storage type in each tensor's persistent id) → numpy dtype.
STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
            "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "IntStorage": "<i4",
            "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
            "BoolStorage": "?"}


def _itemsize(dtype: str) -> int:
  return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


class _Storage:
  """A typed storage named in a persistent id: its numpy dtype (a fresh object per name)."""
  __slots__ = ("dtype",)

  def __init__(self, dtype: str):
    self.dtype = dtype


class _Data:
  """A storage's elements (1-D), the only thing a tensor is rebuilt from."""
  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array


class _Pending:
  """A legacy file's storage, whose bytes come after the object: (dtype, key)."""
  __slots__ = ("dtype", "key")

  def __init__(self, dtype: str, key: str):
    self.dtype, self.key = dtype, key


class _Deferred:
  """A tensor of a _Pending storage, rebuilt once the storages are read."""
  __slots__ = ("storage", "args")

  def __init__(self, storage: _Pending, args):
    self.storage, self.args = storage, args


def _rebuild_tensor(storage, offset, size, stride, *_):
  """torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  backward_hooks[, metadata]) as a numpy array (a copy)."""
  if isinstance(storage, _Pending):
    return _Deferred(storage, (offset, size, stride))
  if not isinstance(storage, _Data):
    raise FormatError(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
  data = storage.array
  size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
  if len(size) != len(stride) or any(s < 0 for s in (*size, *stride)) or offset < 0:
    raise FormatError(f"a tensor of size {size} and stride {stride} is not well formed")
  count = int(np.prod(size, dtype=object))
  if not count:
    return np.zeros(size, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size or count > data.size:
    raise FormatError(f"a tensor of size {size} reads past (or repeats beyond) its storage "
                      f"of {data.size} elements; the file is damaged or crafted")
  view = np.lib.stride_tricks.as_strided(
      data[offset:], size, tuple(s * data.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_):
  """torch._utils._rebuild_parameter: an nn.Parameter is its data."""
  if not isinstance(data, (np.ndarray, _Deferred)):
    raise FormatError(f"a parameter is rebuilt from {type(data).__name__}, not a tensor")
  return data


REBUILDS = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle._Unpickler):  # the Python one: its opcode table can be narrowed
  """archive None: a legacy file, whose storages are _Pending."""
  dispatch = dict(pickle._Unpickler.dispatch)

  def __init__(self, file, archive: zipfile.ZipFile | None, prefix: str, path: str):
    super().__init__(file)
    self.archive, self.prefix, self.path, self.cache = archive, prefix, path, {}

  def find_class(self, module, name):
    if (module, name) in REBUILDS:
      return REBUILDS[(module, name)]
    if module == "torch" and name in STORAGES:
      return _Storage(STORAGES[name])
    raise FormatError(f"{self.path} names {module}.{name}, which is not a tensor or a "
                      f"container, so it is not read (it could run code); save the state "
                      f"dict alone: torch.save(model.state_dict(), PATH).")

  def load_build(self):
    """BUILD: only a dict's attribute state (a state dict's _metadata), which is dropped."""
    self.stack.pop()
    if not isinstance(self.stack[-1], dict):
      raise FormatError(f"{self.path} sets the state of a {type(self.stack[-1]).__name__}, "
                        f"which is not read (only tensors and containers are).")
  dispatch[pickle.BUILD[0]] = load_build

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _Storage)) or (len(pid) == 6 and pid[5] is not None):
      raise FormatError(f"{self.path}: an unknown storage reference {pid!r}")
    dtype, key = pid[1].dtype, str(pid[2])
    if self.archive is None:
      return _Pending(dtype, key)
    if key not in self.cache:
      name = f"{self.prefix}data/{key}"
      try:
        info = self.archive.getinfo(name)
      except KeyError:
        raise FormatError(f"{self.path} lacks the storage data/{key}; the file is cut "
                          f"short or damaged") from None
      if info.compress_type != zipfile.ZIP_STORED:  # torch stores; a deflated one could be a bomb
        raise FormatError(f"{self.path}: storage data/{key} is compressed, which torch.save "
                          f"never does; the file is not torch.save's.")
      self.cache[key] = _Data(_storage(self.archive.read(name), dtype,
                                       f"{self.path}: storage data/{key}"))
    return self.cache[key]


def _storage(raw: bytes, dtype: str, where: str) -> np.ndarray:
  if len(raw) % _itemsize(dtype):
    raise FormatError(f"{where} is not whole {dtype} values")
  if dtype == "bfloat16":  # numpy has none: the upper half of a float32
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
  return np.frombuffer(raw, np.dtype(dtype))


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _legacy(f, path: str):
  """The object of a legacy torch.save file, its storages read after it."""
  if _Unpickler(f, None, "", path).load() != LEGACY_MAGIC:
    raise FormatError(f"{path} is not a PyTorch file (no zip, no legacy magic number).")
  _Unpickler(f, None, "", path).load()  # the protocol version
  info = _Unpickler(f, None, "", path).load()  # byte order and type sizes
  if isinstance(info, dict) and info.get("little_endian") is False:
    raise FormatError(f"{path} was saved big-endian; re-save it on a little-endian machine.")
  pending = []

  class Recording(_Unpickler):
    def persistent_load(self, pid):
      storage = super().persistent_load(pid)
      pending.append(storage)
      return storage
  obj = Recording(f, None, "", path).load()
  keys = _Unpickler(f, None, "", path).load()
  dtypes = {p.key: p.dtype for p in pending}
  total = os.fstat(f.fileno()).st_size
  storages = {}
  for key in keys if isinstance(keys, list) else ():
    dtype = dtypes.get(str(key))
    if dtype is None:
      raise FormatError(f"{path}: storage {key} is not referenced; the file is damaged")
    (n,) = struct.unpack("<q", f.read(8))
    size = n * _itemsize(dtype)
    if n < 0 or size > total - f.tell():
      raise FormatError(f"{path}: storage {key} is cut short; the file is damaged")
    storages[str(key)] = _Data(_storage(f.read(size), dtype, f"{path}: storage {key}"))
  return _resolve(obj, storages, path, {}, set())


def _resolve(obj, storages: dict, path: str, done: dict, open_: set):
  """`obj` with each _Deferred tensor rebuilt from `storages`; a shared object once, a
  cycle refused."""
  if not isinstance(obj, (_Deferred, dict, list, tuple)):
    return obj
  if id(obj) in done:
    return done[id(obj)]
  if id(obj) in open_:
    raise FormatError(f"{path} holds a container that contains itself; not a state dict")
  open_.add(id(obj))
  if isinstance(obj, _Deferred):
    if obj.storage.key not in storages:
      raise FormatError(f"{path}: storage {obj.storage.key} is missing; the file is damaged")
    out = _rebuild_tensor(storages[obj.storage.key], *obj.args)
  elif isinstance(obj, dict):
    out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
    out.update((k, _resolve(v, storages, path, done, open_)) for k, v in obj.items())
  else:
    out = type(obj)(_resolve(v, storages, path, done, open_) for v in obj)
  open_.discard(id(obj))
  done[id(obj)] = out
  return out


def read(path: str):
  """The object torch.save wrote to `path` (dicts, lists, numbers, strings), each tensor a
  numpy array; a name outside the allow-list, a crafted or a damaged file is a one-line
  FormatError."""
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
      if f"{prefix}byteorder" in archive.namelist() and archive.read(
          f"{prefix}byteorder").strip() == b"big":
        raise FormatError(f"{path} was saved big-endian; re-save it on a little-endian "
                          f"machine.")
      with archive.open(pickles[0]) as f:
        return _Unpickler(f, archive, prefix, path).load()
  except FormatError as e:
    raise FormatError(str(e) if str(e).startswith(path) else f"{path}: {e}") from None
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
          AttributeError, IndexError, KeyError, OSError, struct.error, OverflowError,
          MemoryError, RecursionError) as e:
    raise FormatError(f"{path} cannot be read as a PyTorch file ({type(e).__name__}: "
                      f"{str(e)[:200]}); the file is damaged or not torch.save's.") from None
