"""PyTorch checkpoint files without torch: reading (zip and legacy formats) and writing (zip).

Reading never runs pickled code: a restricted unpickler allows tensors, storages and plain
containers only, in both the zip format of `torch.save` (PyTorch 1.6 and later) and the legacy
format before it (a run of pickles followed by the raw storages), in which the original ESRGAN
and DASR releases were saved. Writing produces the zip format that `torch.load(weights_only=True)`
reads, from numpy arrays, so a model leaves for PyTorch tools from a machine without torch.
"""

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np

STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
_STORAGE_NAMES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items()}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_DATA_ALIGNMENT = 64  # torch.save aligns every storage record so that torch.load can mmap it


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
  """A storage whose bytes are read later (legacy files keep them after the pickles)."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel = dtype, numel
    self.array: np.ndarray | None = None


def _array(storage) -> np.ndarray:
  return storage if isinstance(storage, np.ndarray) else storage.array


class _Tensor:
  """A tensor view of a storage, materialised once every storage is read."""

  def __init__(self, storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def numpy(self) -> np.ndarray:
    data = _array(self.storage)
    if not self.size:
      return data[self.offset:self.offset + 1].reshape(()).copy()
    item = data.itemsize
    return np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride)).copy()


def _rebuild_tensor_v2(storage, offset, size, stride, *unused):
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _SafeUnpickler(pickle.Unpickler):
  """Unpickles a checkpoint's pickle allowing only tensors, storages and plain containers;
  `storage(pid)` resolves the format's persistent ids."""

  _ALLOWED = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_tensor'): _rebuild_tensor_v2,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
      ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
      ('builtins', 'set'): set,
      ('builtins', 'frozenset'): frozenset,
  }

  def __init__(self, file, storage):
    super().__init__(file)
    self._storage = storage

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module in ('torch', 'torch.cuda') and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f'refusing to load {module}.{name}: the file pickles more than tensors '
        '(a whole nn.Module or custom objects). Save `model.state_dict()` instead.')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] in ('storage', b'storage')
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f'unsupported storage record {pid!r}')
    return self._storage(pid)


def _materialise(obj: Any) -> Any:
  if isinstance(obj, _Tensor):
    return obj.numpy()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialise(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _read_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    pkl = [n for n in archive.namelist() if n.endswith('data.pkl')]
    if not pkl:
      raise ValueError(f'{path}: zip file without data.pkl: not a PyTorch checkpoint')
    prefix = pkl[0][: -len('data.pkl')]
    byteorder = f'{prefix}byteorder'
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b'little':
      raise ValueError(f'{path}: big-endian PyTorch files are not supported')
    storages: dict[str, np.ndarray] = {}

    def storage(pid):
      _, storage_type, key, _location, numel = pid
      if key not in storages:
        raw = archive.read(f'{prefix}data/{key}')
        storages[key] = np.frombuffer(raw, dtype=storage_type.dtype, count=numel)
      return storages[key]

    with archive.open(pkl[0]) as f:
      return _materialise(_SafeUnpickler(f, storage).load())


def _read_legacy(path: str) -> Any:
  """The format of `torch.save` before 1.6: magic, protocol and system-info pickles, the object
  pickle, the list of storage keys, then each storage as int64 element count + raw bytes."""
  storages: dict[str, _Storage] = {}

  def storage(pid):
    _, storage_type, key, _location, numel, view = pid
    if key not in storages:
      storages[key] = _Storage(storage_type.dtype, numel)
    if view is None:
      return storages[key]
    _view_key, offset, size = view
    return _View(storages[key], offset, size)

  with open(path, 'rb') as f:
    header = [_SafeUnpickler(f, storage).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC:
      raise ValueError(f'{path}: neither a zip nor a legacy PyTorch checkpoint')
    if header[1] != 1001:
      raise ValueError(f'{path}: legacy PyTorch protocol {header[1]} is not supported')
    if isinstance(header[2], Mapping) and not header[2].get('little_endian', True):
      raise ValueError(f'{path}: big-endian PyTorch files are not supported')
    obj = _SafeUnpickler(f, storage).load()
    keys = _SafeUnpickler(f, storage).load()
    for key in keys:
      s = storages[key]
      (numel,) = struct.unpack('<q', f.read(8))
      raw = f.read(numel * s.dtype.itemsize)
      if numel != s.numel or len(raw) != numel * s.dtype.itemsize:
        raise ValueError(f'{path}: storage {key} is truncated or does not match its record')
      s.array = np.frombuffer(raw, dtype=s.dtype)
  return _materialise(obj)


class _View:
  """A slice of a legacy storage (`view_metadata`): what old releases pickled for shared views."""

  def __init__(self, base: _Storage, offset: int, size: int):
    self.base, self.offset, self.size = base, offset, size

  @property
  def array(self) -> np.ndarray:
    return self.base.array[self.offset:self.offset + self.size]


def read(path: str | os.PathLike) -> Any:
  """The object a `.pth` / `.pt` file holds, tensors as numpy arrays, without torch."""
  path = os.fspath(path)
  try:
    return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, struct.error) as e:
    raise ValueError(f'{path}: cannot read as a PyTorch checkpoint: {e}') from e


# ---------------------------------------------------------------------------------------------
# Writing.


class _Pickle:
  """Emits protocol-2 pickle opcodes for what a checkpoint holds: dicts with string keys,
  OrderedDicts, strings, ints, floats, bools, None, tuples and lists, and tensors, whose bytes go
  to persistent storages (the pickler of torch.save, without importing torch)."""

  def __init__(self):
    self.out = io.BytesIO()
    self.storages: list[np.ndarray] = []

  def _global(self, module: str, name: str) -> None:
    self.out.write(b'c' + f'{module}\n{name}\n'.encode())

  def _str(self, s: str) -> None:
    b = s.encode('utf-8')
    self.out.write(b'X' + struct.pack('<I', len(b)) + b)

  def _tuple(self, items) -> None:
    self.out.write(b'(')
    for item in items:
      self.save(item)
    self.out.write(b't')

  def _tensor(self, a: np.ndarray) -> None:
    a = np.asarray(a, order='C')  # (np.ascontiguousarray would make a 0-d array 1-d)
    if a.dtype.byteorder == '>':
      a = a.astype(a.dtype.newbyteorder('<'))
    if a.dtype not in _STORAGE_NAMES:
      raise TypeError(f'cannot write a {a.dtype} tensor to a .pth file')
    key = str(len(self.storages))
    self.storages.append(a)
    stride = tuple(s // a.itemsize for s in a.strides) if a.size else (1,) * a.ndim
    self._global('torch._utils', '_rebuild_tensor_v2')
    self.out.write(b'((')  # the arguments, then the persistent id of the storage:
    self._str('storage')  # ('storage', storage type, key, location, numel)
    self._global('torch', _STORAGE_NAMES[a.dtype])
    for item in (key, 'cpu', int(a.size)):
      self.save(item)
    self.out.write(b'tQ')
    for item in (0, tuple(int(d) for d in a.shape), stride, False):  # offset, size, stride,
      self.save(item)  # requires_grad, then empty backward hooks
    self._global('collections', 'OrderedDict')
    self.out.write(b')RtR')

  def save(self, obj: Any) -> None:
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
      self._tensor(np.asarray(obj))
    elif isinstance(obj, bool):
      self.out.write(b'\x88' if obj else b'\x89')
    elif obj is None:
      self.out.write(b'N')
    elif isinstance(obj, int):
      if -2**31 <= obj < 2**31:
        self.out.write(b'J' + struct.pack('<i', obj))
      else:
        b = obj.to_bytes((obj.bit_length() + 8) // 8, 'little', signed=True)
        self.out.write(b'\x8a' + bytes([len(b)]) + b)
    elif isinstance(obj, float):
      self.out.write(b'G' + struct.pack('>d', obj))
    elif isinstance(obj, str):
      self._str(obj)
    elif isinstance(obj, tuple):
      self._tuple(obj) if obj else self.out.write(b')')
    elif isinstance(obj, list):
      self.out.write(b']')
      if obj:
        self.out.write(b'(')
        for item in obj:
          self.save(item)
        self.out.write(b'e')
    elif isinstance(obj, Mapping):
      if isinstance(obj, collections.OrderedDict):
        self._global('collections', 'OrderedDict')
        self.out.write(b')R')
      else:
        self.out.write(b'}')
      if obj:
        self.out.write(b'(')
        for k, v in obj.items():
          if not isinstance(k, str):
            raise TypeError(f'checkpoint keys must be strings, got {k!r}')
          self._str(k)
          self.save(v)
        self.out.write(b'u')
    else:
      raise TypeError(f'cannot write a {type(obj).__name__} to a .pth file')

  def dumps(self, obj: Any) -> bytes:
    self.out.write(b'\x80\x02')
    self.save(obj)
    self.out.write(b'.')
    return self.out.getvalue()


def _write_record(zf: zipfile.ZipFile, f: BinaryIO, name: str, data: bytes) -> None:
  """A stored (uncompressed) zip entry whose data starts on a 64-byte boundary, as torch's."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  start = f.tell() + 30 + len(name.encode())  # the local header is 30 bytes + name + extra
  pad = (-(start + 4)) % _DATA_ALIGNMENT
  info.extra = struct.pack('<HH', 0x4246, pad) + b'Z' * pad  # 'FB' padding field, as torch's
  zf.writestr(info, data)


def write(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` (dicts of numpy arrays and plain values) as `torch.save` does, atomically."""
  path = os.fspath(path)
  pickler = _Pickle()
  payload = pickler.dumps(obj)
  prefix = os.path.splitext(os.path.basename(path))[0] or 'archive'
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f, zipfile.ZipFile(f, 'w') as zf:
    _write_record(zf, f, f'{prefix}/data.pkl', payload)
    _write_record(zf, f, f'{prefix}/byteorder', b'little')
    for i, a in enumerate(pickler.storages):
      _write_record(zf, f, f'{prefix}/data/{i}', a.tobytes())
    _write_record(zf, f, f'{prefix}/version', b'3\n')
  os.replace(tmp, path)
