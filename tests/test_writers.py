"""Metric writers: CRC-32C, event files read back (own parser and TensorBoard's), logging lines."""

import glob
import logging
import os
import struct

import cv2
import numpy as np
import pytest

from condsr_jax import writers


def bitwise_crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def read_varint(data: bytes, i: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    byte = data[i]
    value |= (byte & 0x7F) << shift
    i, shift = i + 1, shift + 7
    if byte < 0x80:
      return value, i


def parse_proto(data: bytes) -> dict[int, list]:
  """Generic wire-format parse: field number -> values (ints, doubles, floats or bytes)."""
  fields, i = {}, 0
  while i < len(data):
    key, i = read_varint(data, i)
    wire = key & 7
    if wire == 0:
      value, i = read_varint(data, i)
    elif wire == 1:
      value, i = struct.unpack_from('<d', data, i)[0], i + 8
    elif wire == 2:
      n, i = read_varint(data, i)
      value, i = data[i:i + n], i + n
    else:
      assert wire == 5, wire
      value, i = struct.unpack_from('<f', data, i)[0], i + 4
    fields.setdefault(key >> 3, []).append(value)
  return fields


def read_records(path: str) -> list[bytes]:
  with open(path, 'rb') as f:
    data = f.read()
  records, i = [], 0
  while i < len(data):
    header = data[i:i + 8]
    (length,), (header_crc,) = struct.unpack('<Q', header), struct.unpack_from('<I', data, i + 8)
    record = data[i + 12:i + 12 + length]
    (record_crc,) = struct.unpack_from('<I', data, i + 12 + length)
    assert header_crc == writers.masked_crc32c(header)
    assert record_crc == writers.masked_crc32c(record)
    records.append(record)
    i += 16 + length
  return records


@pytest.mark.parametrize('data,crc', [
    (b'', 0),
    (b'123456789', 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b'\xff' * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_vectors(data, crc):
  assert writers.crc32c(data) == crc


@pytest.mark.parametrize('size', [4095, 4096, 4097, 12_345, 65_536])
def test_crc32c_long_inputs_match_bitwise(size):
  data = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
  assert writers.crc32c(data) == bitwise_crc32c(data)


def write_sample_events(logdir) -> tuple[str, np.ndarray, np.ndarray]:
  rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), np.uint8)
  gray = np.random.default_rng(1).random((2, 4, 3, 1))
  writer = writers.TensorBoardWriter(logdir)
  writer.write_scalars(7, {'loss': 0.25, 'psnr': np.float32(27.5)})
  writer.write_images(8, {'sr': rgb, 'pair': gray})
  writer.write_texts(9, {'config': 'scale: 4'})
  writer.close()
  return writer.path, rgb, gray


def decode_png(data: bytes) -> np.ndarray:
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  return img[:, :, ::-1] if img.ndim == 3 else img[:, :, None]


def test_event_file_round_trip(tmp_path):
  path, rgb, gray = write_sample_events(tmp_path)
  assert os.path.basename(path).startswith('events.out.tfevents.')
  events = [parse_proto(r) for r in read_records(path)]
  assert events[0][3] == [b'brain.Event:2']
  assert [e[2][0] for e in events[1:]] == [7, 8, 9]
  values = [[parse_proto(v) for v in parse_proto(e[5][0])[1]] for e in events[1:]]

  scalars = {v[1][0]: v[2][0] for v in values[0]}
  assert scalars == {b'loss': 0.25, b'psnr': 27.5}

  images = {v[1][0]: parse_proto(v[4][0]) for v in values[1]}
  assert sorted(images) == [b'pair/0', b'pair/1', b'sr']
  assert (images[b'sr'][1], images[b'sr'][2], images[b'sr'][3]) == ([6], [5], [3])
  np.testing.assert_array_equal(decode_png(images[b'sr'][4][0]), rgb)
  want = np.round(gray[1] * 255).astype(np.uint8)
  np.testing.assert_array_equal(decode_png(images[b'pair/1'][4][0]), want)

  (text,) = values[2]
  assert text[1] == [b'config']
  assert parse_proto(parse_proto(text[9][0])[1][0])[1] == [b'text']
  assert parse_proto(text[8][0])[8] == [b'scale: 4']


def test_event_file_reads_in_tensorboard(tmp_path):
  event_accumulator = pytest.importorskip(
      'tensorboard.backend.event_processing.event_accumulator')
  _, rgb, _ = write_sample_events(tmp_path)
  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={
      event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
  acc.Reload()
  assert sorted(acc.Tags()['scalars']) == ['loss', 'psnr']
  assert sorted(acc.Tags()['images']) == ['pair/0', 'pair/1', 'sr']
  (loss,) = acc.Scalars('loss')
  assert (loss.step, loss.value) == (7, 0.25)
  (image,) = acc.Images('sr')
  assert (image.step, image.height, image.width) == (8, 6, 5)
  np.testing.assert_array_equal(decode_png(image.encoded_image_string), rgb)
  (text,) = acc.Tensors('config')
  assert text.step == 9 and text.tensor_proto.string_val == [b'scale: 4']
  assert acc.SummaryMetadata('config').plugin_data.plugin_name == 'text'


def test_image_inputs_are_checked(tmp_path):
  writer = writers.TensorBoardWriter(tmp_path)
  with pytest.raises(ValueError, match='channels'):
    writer.write_images(0, {'x': np.zeros((4, 4, 2), np.uint8)})
  with pytest.raises(TypeError, match='uint8 or float'):
    writer.write_images(0, {'x': np.zeros((4, 4, 3), np.uint16)})
  writer.close()


def test_logging_writer_writes_one_compact_line_per_call(caplog):
  writer = writers.LoggingWriter()
  with caplog.at_level(logging.INFO):
    writer.write_scalars(5, {'loss': np.float32(0.0123456789), 'lr': 2e-4, 'iters': np.int64(3)})
    writer.write_images(5, {'sr': np.zeros((2, 8, 8, 3))})
    writer.write_texts(5, {'note': 'hi'})
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ['[5] iters=3, loss=0.012346, lr=0.0002', '[5] images: sr[2, 8, 8, 3]',
                   "[5] note='hi'"]


def test_create_writer_writes_event_files_unless_just_logging(tmp_path):
  writer = writers.create_writer(tmp_path / 'main')
  writer.write_scalars(1, {'loss': 1.0})
  writer.write_images(1, {'sr': np.zeros((4, 4, 3), np.float32)})
  writer.flush()
  writer.close()
  assert glob.glob(str(tmp_path / 'main' / 'events.out.tfevents.*'))
  other = writers.create_writer(tmp_path / 'other', just_logging=True)
  other.write_scalars(1, {'loss': 1.0})
  other.close()
  assert not glob.glob(str(tmp_path / 'other' / '*'))
