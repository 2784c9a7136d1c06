"""Metric writers: event files read back by TensorBoard, input checks, logging lines."""

import glob
import logging

import cv2
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from condsr_jax import writers


def read_events(logdir) -> event_accumulator.EventAccumulator:
  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={
      event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
  acc.Reload()
  return acc


def decode_png(data: bytes) -> np.ndarray:
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  return img[:, :, ::-1] if img.ndim == 3 else img[:, :, None]


def test_scalars_and_images_read_back_in_tensorboard(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), np.uint8)
  gray = np.random.default_rng(1).random((2, 4, 3, 1))
  writer = writers.TensorBoardWriter(tmp_path)
  writer.write_scalars(7, {'loss': 0.25, 'psnr': np.float32(27.5)})
  writer.write_scalars(9, {'loss': np.asarray([0.125])})
  writer.write_images(8, {'sr': rgb, 'pair': gray})
  writer.close()
  writer.close()  # a second close does nothing

  acc = read_events(tmp_path)
  assert sorted(acc.Tags()['scalars']) == ['loss', 'psnr']
  assert [(e.step, e.value) for e in acc.Scalars('loss')] == [(7, 0.25), (9, 0.125)]
  assert [(e.step, e.value) for e in acc.Scalars('psnr')] == [(7, 27.5)]
  assert sorted(acc.Tags()['images']) == ['pair/0', 'pair/1', 'sr']
  (sr,) = acc.Images('sr')
  assert (sr.step, sr.height, sr.width) == (8, 6, 5)
  np.testing.assert_array_equal(decode_png(sr.encoded_image_string), rgb)
  (pair,) = acc.Images('pair/1')
  assert (pair.step, pair.height, pair.width) == (8, 4, 3)
  want = np.round(gray[1] * 255).astype(np.uint8)  # float images round to 8 bits
  np.testing.assert_array_equal(decode_png(pair.encoded_image_string)[..., :1], want)


def test_two_writers_of_one_folder_keep_both_files(tmp_path):
  for step in (1, 2):
    writer = writers.TensorBoardWriter(tmp_path)
    writer.write_scalars(step, {'loss': float(step)})
    writer.close()
  assert len(glob.glob(str(tmp_path / 'events.out.tfevents.*'))) == 2
  assert [(e.step, e.value) for e in read_events(tmp_path).Scalars('loss')] == [(1, 1.0),
                                                                               (2, 2.0)]


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
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ['[5] iters=3, loss=0.012346, lr=0.0002', '[5] images: sr[2, 8, 8, 3]']


def test_create_writer_writes_event_files_unless_just_logging(tmp_path, caplog):
  writer = writers.create_writer(tmp_path / 'main')
  with caplog.at_level(logging.INFO):
    writer.write_scalars(1, {'loss': 1.5})
  writer.write_images(1, {'sr': np.zeros((4, 4, 3), np.float32)})
  writer.flush()
  acc = read_events(tmp_path / 'main')
  assert [(e.step, e.value) for e in acc.Scalars('loss')] == [(1, 1.5)]
  assert [(e.height, e.width) for e in acc.Images('sr')] == [(4, 4)]
  assert '[1] loss=1.5' in [r.getMessage() for r in caplog.records]
  writer.close()
  other = writers.create_writer(tmp_path / 'other', just_logging=True)
  other.write_scalars(1, {'loss': 1.0})
  other.close()
  assert not glob.glob(str(tmp_path / 'other' / '*'))


def test_scalar_history_survives_resume_and_plots(tmp_path):
  path = tmp_path / writers.HISTORY_FILE
  for steps in ((2, 4), (4, 6)):  # a run, then its resume from step 2 again up to 6
    w = writers.ScalarHistoryWriter(path)
    for step in steps:
      w.write_scalars(step, {'train/l_pix': 1.0 / step, 'train/steps_per_sec': 3.0})
      w.write_scalars(step, {'val/psnr': 20.0 + step, 'val/psnr_bicubic': 21.0})
    w.close()
  with open(path, 'a', encoding='utf-8') as f:
    f.write('{"step": 8, "train/l_pi')  # torn by kill -9
  history = writers.read_history(path)
  assert history['train/l_pix'] == {2: 0.5, 4: 0.25, 6: 1 / 6}
  assert history['val/psnr'] == {2: 22.0, 4: 24.0, 6: 26.0}
  png = tmp_path / writers.CURVES_FILE
  assert writers.plot_curves(path, png) == ['training losses', 'val/psnr']
  img = cv2.imread(str(png))
  assert img is not None and img.shape[0] > 100 and img.shape[1] > 300


def test_curves_show_an_aliased_scalar_once(tmp_path):
  path = tmp_path / writers.HISTORY_FILE
  w = writers.ScalarHistoryWriter(path)
  w.write_scalars(2, {'val/psnr': 25.0, 'val/psnr_y': 25.0, 'val/psnr_rgb': 24.0})
  w.close()
  assert writers.plot_curves(path, tmp_path / 'c.png') == ['val/psnr_rgb', 'val/psnr_y']
