"""`condsr-jax prep`: multiscale copies, sub-images and meta-info lists on synthetic images."""

import os

import numpy as np
from PIL import Image
import pytest

from condsr_jax import cli
from condsr_jax import images
from condsr_jax.data import prep
from condsr_jax.data import sources

RNG = np.random.default_rng(0)


def _prep(*argv: str) -> int:
  return cli.main(['prep', *map(str, argv)])


def test_multiscale_matches_pil_lanczos_names_and_sizes(tmp_path):
  rgb = RNG.integers(0, 256, (23, 37, 3), dtype=np.uint8)
  tall = RNG.integers(0, 256, (50, 16, 1), dtype=np.uint8)
  deep = (RNG.integers(0, 256, (12, 15, 3)) * 257).astype(np.uint16)
  images.write_image(tmp_path / 'hr' / 'a b.png', rgb)
  images.write_image(tmp_path / 'hr' / 'sub' / 'tall.png', tall)
  images.write_image(tmp_path / 'hr' / 'deep.png', deep)
  (tmp_path / 'hr' / 'text.png').write_text('not a PNG')
  assert _prep('multiscale', '--input', tmp_path / 'hr', '--output', tmp_path / 'ms',
               '--n-thread', 1) == 1
  names = sorted(os.path.relpath(os.path.join(d, f), tmp_path / 'ms')
                 for d, _, fs in os.walk(tmp_path / 'ms') for f in fs)
  assert names == sorted([f'a bT{i}.png' for i in range(4)] + [f'deepT{i}.png' for i in range(4)]
                         + [os.path.join('sub', f'tallT{i}.png') for i in range(4)])
  source = Image.open(tmp_path / 'hr' / 'a b.png')
  for i, size in enumerate([(27, 17), (18, 11), (12, 7), (643, 400)]):
    want = np.asarray(source.resize(size, resample=Image.LANCZOS))
    np.testing.assert_array_equal(images.read_image(tmp_path / 'ms' / f'a bT{i}.png'), want)
  assert images.read_image(tmp_path / 'ms' / 'sub' / 'tallT3.png').shape == (1250, 400, 1)
  deep_out = images.read_image(tmp_path / 'ms' / 'deepT1.png')
  assert deep_out.dtype == np.uint16 and deep_out.shape == (6, 7, 3)
  as_8bit = prep.resize_lanczos((deep // 257).astype(np.uint8), 7, 6)
  np.testing.assert_allclose(deep_out / 257, as_8bit, atol=1)


def test_multiscale_sizes_follow_the_reference_rounding():
  assert prep.multiscale_sizes(2040, 1356) == [(1530, 1017), (1020, 678), (680, 452),
                                               (601, 400)]
  assert prep.multiscale_sizes(1356, 2040, [1 / 3], 400) == [(452, 680), (400, 601)]
  assert prep.multiscale_sizes(2, 2, [1 / 3], 0) == [(1, 1)]


def test_subimage_positions_follow_the_reference():
  assert prep.subimage_starts(500, 120, 60, 0) == [0, 60, 120, 180, 240, 300, 360, 380]
  assert prep.subimage_starts(480, 120, 60, 0) == [0, 60, 120, 180, 240, 300, 360]
  assert prep.subimage_starts(500, 120, 60, 20) == [0, 60, 120, 180, 240, 300, 360]
  assert prep.subimage_starts(100, 120, 60, 0) == []


def test_subimages_names_counts_and_content(tmp_path, capsys):
  big = RNG.integers(0, 256, (50, 73, 3), dtype=np.uint8)
  deep = RNG.integers(0, 65536, (24, 24, 1), dtype=np.uint16)
  images.write_image(tmp_path / 'in' / '0001x4.png', big)
  images.write_image(tmp_path / 'in' / 'box2 deep.png', deep)
  images.write_image(tmp_path / 'in' / 'small.jpg', big[:10])
  (tmp_path / 'in' / 'broken.png').write_bytes(b'')
  out = tmp_path / 'out'
  assert _prep('subimages', '--input', tmp_path / 'in', '--output', out, '--crop-size', 24,
               '--step', 12, '--n-thread', 2) == 1
  err = capsys.readouterr().err
  assert 'small.jpg: smaller than the 24 crop' in err and 'broken.png: empty file' in err
  tops, lefts = prep.subimage_starts(50, 24, 12, 0), prep.subimage_starts(73, 24, 12, 0)
  assert (tops, lefts) == ([0, 12, 24, 26], [0, 12, 24, 36, 48, 49])
  assert sorted(os.listdir(out)) == sorted(
      [f'0001_s{i:03d}.png' for i in range(1, 25)] + ['box2 deep_s001.png'])
  for index, (top, left) in enumerate(((t, l) for t in tops for l in lefts), start=1):
    np.testing.assert_array_equal(images.read_image(out / f'0001_s{index:03d}.png'),
                                  big[top:top + 24, left:left + 24])
  np.testing.assert_array_equal(images.read_image(out / 'box2 deep_s001.png'), deep)
  assert _prep('subimages', '--input', tmp_path / 'in', '--output', out) == 1


def test_meta_info_merges_folders_and_round_trips(tmp_path, capsys):
  for rel in ('DF2K_HR/a b.png', 'DF2K_HR/nested/c.png', 'multi scale/aT0.png'):
    images.write_image(tmp_path / 'DF2K' / rel, RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
  (tmp_path / 'DF2K' / 'multi scale' / 'broken.png').write_bytes(b'\x89PNG')
  meta = tmp_path / 'DF2K' / 'meta_info' / 'meta.txt'
  hr, ms = tmp_path / 'DF2K' / 'DF2K_HR', tmp_path / 'DF2K' / 'multi scale'
  assert _prep('meta-info', '--input', hr, ms, '--meta-info', meta) == 0
  assert meta.read_text(encoding='utf-8').splitlines() == [
      'DF2K_HR/a b.png', 'DF2K_HR/nested/c.png', 'multi scale/aT0.png', 'multi scale/broken.png']
  assert _prep('meta-info', '--input', hr, ms, '--root', tmp_path, '--meta-info', meta,
               '--check', '--n-thread', 1) == 0
  assert 'broken.png' in capsys.readouterr().err
  lines = meta.read_text(encoding='utf-8').splitlines()
  assert lines == ['DF2K/DF2K_HR/a b.png', 'DF2K/DF2K_HR/nested/c.png', 'DF2K/multi scale/aT0.png']
  src = sources.MetaInfoSource(meta, tmp_path)
  assert [src.key(i) for i in range(len(src))] == [os.path.splitext(p)[0] for p in lines]
  assert all(src[i]['gt'].shape == (4, 4, 3) for i in range(len(src)))
  assert _prep('meta-info', '--input', hr, ms, '--root', tmp_path, tmp_path, tmp_path,
               '--meta-info', meta) == 2


def test_tfds_command_packs_folders(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  images.write_image(tmp_path / 'hr' / 'x.png', RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8))
  data_dir = tmp_path / 'tfds'
  assert _prep('tfds', '--split', f'train={tmp_path / "hr"}', '--data-dir', data_dir,
               '--name', 'mini') == 0
  assert len(sources.TfdsSource('condsr_images/mini', data_dir=data_dir)) == 1
