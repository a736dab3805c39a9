"""PyTorch's files (torch.save since torch 1.6: a zip of `data.pkl` and one raw buffer per
storage) read as data, without torch and without running code from the file.

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
import pickle
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


def _rebuild_tensor(storage, offset, size, stride, *_):
  """torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  backward_hooks[, metadata]) as a numpy array (a copy)."""
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
  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self.archive, self.prefix, self.path = archive, prefix, path

  def find_class(self, module, name):
    if (module, name) in ALLOWED:
      return ALLOWED[(module, name)]
    raise FormatError(f"{self.path} names {module}.{name}, which is not a tensor or a "
                      f"container, so it is not read (it could run code); save the state "
                      f"dict alone: torch.save(model.state_dict(), PATH).")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], _Storage)):
      raise FormatError(f"{self.path}: an unknown storage reference {pid!r}")
    dtype, key = pid[1].dtype, str(pid[2])
    try:
      raw = self.archive.read(f"{self.prefix}data/{key}")
    except KeyError:
      raise FormatError(f"{self.path} lacks the storage data/{key}; the file is cut "
                        f"short or damaged") from None
    if dtype == "bfloat16":  # numpy has none: the upper half of a float32
      bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
      return bits.view(np.float32)
    dtype = np.dtype(dtype)
    if len(raw) % dtype.itemsize:
      raise FormatError(f"{self.path}: storage data/{key} is not whole {dtype} values")
    return np.frombuffer(raw, dtype)


def read(path: str):
  """The object torch.save wrote to `path` (dicts, lists, numbers, strings), each tensor a
  numpy array; a name outside ALLOWED, a legacy (pre-1.6) file or a damaged one is a
  one-line FormatError."""
  if not zipfile.is_zipfile(path):
    raise FormatError(f"{path} is not a PyTorch zip file (torch ≥ 1.6's torch.save); re-save "
                      f"it once where torch is installed: torch.save(torch.load(PATH, "
                      f"weights_only=True), PATH).")
  try:
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
          AttributeError, IndexError, KeyError, OSError) as e:
    raise FormatError(f"{path} cannot be read as a PyTorch file ({type(e).__name__}: "
                      f"{e}); the file is damaged or not torch.save's.") from None
