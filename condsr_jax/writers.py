"""Metric writers (clu `MetricWriter`-compatible): absl logging and TensorFlow-free TensorBoard.

`create_writer` returns clu's default writer when `clu.metric_writers` imports (it needs
TensorFlow, the optional `[tensorboard]` extra); otherwise the writers below, which encode event
files directly (TFRecord framing with CRC-32C, hand-encoded `Event` protos).
"""

import functools
import itertools
import os
import socket
import struct
import time
from typing import Any, Mapping, Protocol, Sequence

from absl import logging
import numpy as np

from condsr_jax import images as images_lib


class MetricWriter(Protocol):
  """The subset of `clu.metric_writers.MetricWriter` this project writes through."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Scalars (numbers or size-1 arrays) by name."""

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """[N]HWC images (C = 1, 3 or 4), uint8 or float in [0, 1], by name."""

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Text snippets by name."""

  def flush(self) -> None:
    """Makes everything written so far durable."""

  def close(self) -> None:
    """Flushes and releases resources."""


# CRC-32C (Castagnoli), reflected polynomial, as TFRecord framing requires.

_CRC_POLY = 0x82F63B78
_CRC_VECTOR_MIN_BYTES = 4096


def _crc_byte_table() -> np.ndarray:
  t = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    t = np.where(t & 1, (t >> 1) ^ np.uint32(_CRC_POLY), t >> 1).astype(np.uint32)
  return t


_CRC_TABLE = _crc_byte_table()
_CRC_TABLE_LIST = _CRC_TABLE.tolist()


def _apply_shift(table: np.ndarray, state: np.ndarray) -> np.ndarray:
  """Applies a linear map of CRC states given as a (4, 256) per-byte table."""
  return (table[0][state & 0xFF] ^ table[1][(state >> 8) & 0xFF]
          ^ table[2][(state >> 16) & 0xFF] ^ table[3][state >> 24])


@functools.cache
def _zeros_shift_table(log2_len: int) -> np.ndarray:
  """(4, 256) table of the map that advances a raw CRC state over 2**log2_len zero bytes."""
  basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
  if log2_len == 0:
    image = _CRC_TABLE[basis & 0xFF] ^ (basis >> 8)
  else:
    half = _zeros_shift_table(log2_len - 1)
    image = _apply_shift(half, _apply_shift(half, basis))
  bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
  per_byte = image.reshape(4, 1, 8)
  return np.bitwise_xor.reduce(np.where(bits == 1, per_byte, np.uint32(0)), axis=2)


def crc32c(data: bytes) -> int:
  """CRC-32C of `data` (init and final xor 0xFFFFFFFF)."""
  if len(data) < _CRC_VECTOR_MIN_BYTES:
    crc = 0xFFFFFFFF
    for byte in data:
      crc = _CRC_TABLE_LIST[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
  # An all-ones initial state equals a zero state with the first 4 bytes inverted; from a zero
  # state, leading zero bytes change nothing, so the data is front-padded to equal rows whose
  # CRCs are computed side by side and then merged pairwise.
  buf = np.frombuffer(data, np.uint8).copy()
  buf[:4] ^= 0xFF
  log2_len = max(4, buf.size.bit_length() // 2)
  row_len = 1 << log2_len
  padded = np.zeros(-(-buf.size // row_len) * row_len, np.uint8)
  padded[padded.size - buf.size:] = buf
  state = np.zeros(padded.size // row_len, np.uint32)
  for column in np.ascontiguousarray(padded.reshape(-1, row_len).T):
    state = _CRC_TABLE[(state ^ column) & 0xFF] ^ (state >> 8)
  while state.size > 1:
    if state.size % 2:
      state = np.concatenate([np.zeros(1, np.uint32), state])
    state = _apply_shift(_zeros_shift_table(log2_len), state[0::2]) ^ state[1::2]
    log2_len += 1
  return int(state[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data
          + struct.pack('<I', masked_crc32c(data)))


# Protocol-buffer wire format for the few `tensorboard` messages written here.

def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _field_varint(field: int, n: int) -> bytes:
  return _varint(field << 3) + _varint(n)


def _field_bytes(field: int, data: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(data)) + data


def _field_double(field: int, x: float) -> bytes:
  return _varint(field << 3 | 1) + struct.pack('<d', x)


def _field_float(field: int, x: float) -> bytes:
  return _varint(field << 3 | 5) + struct.pack('<f', x)


def _event(step: int, *, summary_values: Sequence[bytes] = (), file_version: str = '') -> bytes:
  """`Event{wall_time=1, step=2, file_version=3, summary=5 {value=1...}}`."""
  msg = _field_double(1, time.time()) + _field_varint(2, step)
  if file_version:
    msg += _field_bytes(3, file_version.encode())
  if summary_values:
    msg += _field_bytes(5, b''.join(_field_bytes(1, v) for v in summary_values))
  return msg


def _scalar_value(tag: str, x: float) -> bytes:
  """`Summary.Value{tag=1, simple_value=2}`."""
  return _field_bytes(1, tag.encode()) + _field_float(2, x)


def _image_value(tag: str, img: np.ndarray) -> bytes:
  """`Summary.Value{tag=1, image=4 {height=1, width=2, colorspace=3, encoded_image_string=4}}`."""
  png = images_lib.encode_image(img, '.png')
  image = (_field_varint(1, img.shape[0]) + _field_varint(2, img.shape[1])
           + _field_varint(3, img.shape[2]) + _field_bytes(4, png))
  return _field_bytes(1, tag.encode()) + _field_bytes(4, image)


def _text_value(tag: str, text: str) -> bytes:
  """`Summary.Value{tag=1, metadata=9 {plugin_data=1 {plugin_name='text'}}, tensor=8}`.

  The tensor is a scalar `TensorProto{dtype=1: DT_STRING (7), tensor_shape=2, string_val=8}`.
  """
  metadata = _field_bytes(1, _field_bytes(1, b'text'))
  tensor = _field_varint(1, 7) + _field_bytes(2, b'') + _field_bytes(8, text.encode())
  return _field_bytes(1, tag.encode()) + _field_bytes(9, metadata) + _field_bytes(8, tensor)


def _as_image_batch(name: str, value: Any) -> np.ndarray:
  """[N]HWC uint8 or float [0, 1] -> NHWC uint8."""
  img = np.asarray(value)
  if img.ndim == 3:
    img = img[None]
  if img.ndim != 4 or img.shape[3] not in (1, 3, 4):
    raise ValueError(f'image {name!r}: expected [N]HWC with 1, 3 or 4 channels, got {img.shape}')
  if np.issubdtype(img.dtype, np.floating):
    return images_lib.from_float(img, np.uint8)
  if img.dtype != np.uint8:
    raise TypeError(f'image {name!r}: expected uint8 or float in [0, 1], got {img.dtype}')
  return img


def _format_number(value: Any) -> str:
  x = np.asarray(value)
  if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
    return str(x.item())
  return f'{float(x):.5g}'


_FILE_IDS = itertools.count()


class TensorBoardWriter:
  """Writes scalars, images (PNG) and texts to a TensorBoard event file in `logdir`."""

  def __init__(self, logdir: str | os.PathLike):
    os.makedirs(logdir, exist_ok=True)
    name = (f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}'
            f'.{os.getpid()}.{next(_FILE_IDS)}')
    self.path = os.path.join(os.fspath(logdir), name)
    self._file = open(self.path, 'wb')
    self._file.write(tfrecord(_event(0, file_version='brain.Event:2')))

  def _write(self, step: int, values: Sequence[bytes]) -> None:
    if values:
      self._file.write(tfrecord(_event(step, summary_values=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write(step, [_scalar_value(k, float(np.asarray(v))) for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    values = []
    for name, value in images.items():
      batch = _as_image_batch(name, value)
      tags = [name] if len(batch) == 1 else [f'{name}/{i}' for i in range(len(batch))]
      values += [_image_value(tag, img) for tag, img in zip(tags, batch)]
    self._write(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._write(step, [_text_value(k, v) for k, v in texts.items()])

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


class LoggingWriter:
  """Writes one absl INFO line per call; images are logged by shape."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    items = ', '.join(f'{k}={_format_number(v)}' for k, v in sorted(scalars.items()))
    logging.info('[%d] %s', step, items)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    items = ', '.join(f'{k}{list(np.shape(v))}' for k, v in sorted(images.items()))
    logging.info('[%d] images: %s', step, items)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    items = ', '.join(f'{k}={v!r}' for k, v in sorted(texts.items()))
    logging.info('[%d] %s', step, items)

  def flush(self) -> None:
    logging.flush()

  def close(self) -> None:
    self.flush()


class MultiWriter:
  """Forwards every call to each of several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for w in self.writers:
      w.write_texts(step, texts)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


def _clu_metric_writers():
  """`clu.metric_writers` if it imports (it needs TensorFlow), else None."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return metric_writers


def create_writer(logdir: str | os.PathLike, *, just_logging: bool = False) -> MetricWriter:
  """Logging + TensorBoard writer for `logdir`; logging only if `just_logging`.

  Pass `just_logging=True` on all but the first process of a multi-host run. With TensorFlow
  installed this is `clu.metric_writers.create_default_writer`.
  """
  clu_writers = _clu_metric_writers()
  if clu_writers is not None:
    return clu_writers.create_default_writer(os.fspath(logdir), just_logging=just_logging)
  if just_logging:
    return LoggingWriter()
  return MultiWriter([LoggingWriter(), TensorBoardWriter(logdir)])
