"""Image sources: names, formats, channels, bad images, meta-info, aligned folders, TFDS."""

import logging
import os
import pickle

import numpy as np
import pytest

from condsr_jax import images
from condsr_jax.data import pipeline
from condsr_jax.data import sources
from condsr_jax.data import streams

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (16, 18, 1), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (12, 14, 4), dtype=np.uint8)
DEEP = RNG.integers(0, 65536, (10, 11, 3), dtype=np.uint16)


@pytest.fixture(name='folder')
def _folder(tmp_path):
  root = tmp_path / 'data set'
  images.write_image(root / 'a b.png', RGB)
  images.write_image(root / 'nested' / 'deep dir' / 'gray.png', GRAY)
  images.write_image(root / 'rgba.png', RGBA)
  images.write_image(root / 'sixteen.png', DEEP)
  images.write_image(root / 'ünïcödé' / 'photo 1.jpg', RGB)
  (root / 'notes.txt').write_text('not an image')
  return root


def _bad_folder(root):
  """Sorted: a_good, b_zero (empty), c_trunc (truncated), d_text (text named .png), e_good."""
  images.write_image(root / 'a_good.png', RGB)
  images.write_image(root / 'e_good.png', RGB[::-1])
  (root / 'b_zero.png').write_bytes(b'')
  (root / 'c_trunc.png').write_bytes((root / 'a_good.png').read_bytes()[:300])
  (root / 'd_text.png').write_text('hello, I am not a PNG')
  return root


def test_folder_source_lists_nested_names_sorted(folder):
  src = sources.FolderSource(folder)
  keys = [src.key(i) for i in range(len(src))]
  assert keys == ['a b', 'nested/deep dir/gray', 'rgba', 'sixteen', 'ünïcödé/photo 1']
  top = sources.FolderSource(folder, recursive=False)
  assert [top.key(i) for i in range(len(top))] == ['a b', 'rgba', 'sixteen']


def test_formats_become_rgb_and_16_bit_keeps_precision(folder):
  src = sources.FolderSource(folder)
  rgb, gray, rgba, deep, jpeg = (src[i] for i in range(5))
  np.testing.assert_array_equal(rgb['gt'], RGB)
  np.testing.assert_array_equal(gray['gt'], np.repeat(GRAY, 3, axis=2))
  np.testing.assert_array_equal(rgba['gt'], RGBA[:, :, :3])
  assert deep['gt'].dtype == np.uint16
  np.testing.assert_array_equal(deep['gt'], DEEP)
  np.testing.assert_array_equal(pipeline.ToFloat(('gt',)).map(deep)['gt'], DEEP / np.float32(65535))
  assert jpeg['gt'].shape == RGB.shape
  assert all(r['bad_images'] == 0 for r in (rgb, gray, rgba, deep, jpeg))


def test_one_channel_config_keeps_gray_and_converts_color(folder):
  src = sources.FolderSource(folder, channels=1)
  np.testing.assert_array_equal(src[1]['gt'], GRAY)
  rgb = src[0]['gt']
  assert rgb.shape == (24, 20, 1)
  luma = RGB.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(rgb[:, :, 0], luma, atol=1)
  with pytest.raises(ValueError, match='channels must be 1 or 3'):
    sources.FolderSource(folder, channels=4)


def test_folder_without_images_names_the_folder(tmp_path):
  empty = tmp_path / 'no images here'
  empty.mkdir()
  (empty / 'readme.txt').write_text('x')
  with pytest.raises(ValueError, match='no images here'):
    sources.FolderSource(empty)


def test_skip_substitutes_the_next_readable_image_and_logs_once(tmp_path, caplog):
  src = sources.FolderSource(_bad_folder(tmp_path))
  with caplog.at_level(logging.WARNING):
    got = [src[i] for i in (0, 1, 2, 3, 4, 1, 2)]
  np.testing.assert_array_equal(got[0]['gt'], RGB)
  for record in got[1:5]:
    np.testing.assert_array_equal(record['gt'], RGB[::-1])
  assert [int(r['bad_images']) for r in got] == [0, 3, 2, 1, 0, 3, 2]
  for name in ('b_zero.png', 'c_trunc.png', 'd_text.png'):
    assert sum(name in r.getMessage() for r in caplog.records) == 1


def test_stop_raises_naming_the_file(tmp_path):
  src = sources.FolderSource(_bad_folder(tmp_path), on_bad_image='stop')
  assert src[0]['bad_images'] == 0
  for index, name in ((1, 'b_zero.png'), (2, 'c_trunc.png'), (3, 'd_text.png')):
    with pytest.raises(images.ImageReadError, match=name) as info:
      src[index]  # pylint: disable=pointless-statement
    assert info.value.path.endswith(name)


def test_all_unreadable_is_an_error(tmp_path):
  (tmp_path / 'x.png').write_bytes(b'')
  (tmp_path / 'y.jpg').write_text('text')
  with pytest.raises(images.ImageReadError, match='none of the 2 images'):
    sources.FolderSource(tmp_path)[0]  # pylint: disable=expression-not-assigned


def test_validate_reports_or_leaves_out_bad_files_at_construction(folder, tmp_path):
  assert len(sources.FolderSource(folder, validate=True, on_bad_image='stop')) == 5
  root = _bad_folder(tmp_path / 'bad')
  with pytest.raises(images.ImageReadError, match='3 unreadable') as info:
    sources.FolderSource(root, validate=True, on_bad_image='stop')
  for name in ('b_zero.png', 'c_trunc.png', 'd_text.png'):
    assert name in str(info.value)
  src = sources.FolderSource(root, validate=True)
  assert [src.key(i) for i in range(len(src))] == ['a_good', 'e_good']


def test_meta_info_takes_whole_lines_and_old_suffixes(folder, tmp_path):
  meta = tmp_path / 'meta_info.txt'
  meta.write_bytes('a b.png\r\n\nünïcödé/photo 1.jpg (24,20,3)\nrgba.png (12, 14, 4) 1\n'
                   '  sixteen.png  \n'.encode())
  src = sources.MetaInfoSource(meta, folder)
  assert [src.key(i) for i in range(len(src))] == ['a b', 'ünïcödé/photo 1', 'rgba', 'sixteen']
  np.testing.assert_array_equal(src[3]['gt'], DEEP)
  meta.write_text('a b.png\nmissing one.png\n')
  with pytest.raises(FileNotFoundError, match='missing one.png'):
    sources.MetaInfoSource(meta, folder)
  assert sources.parse_meta_info_line('0001_s001.png (480,480,3)') == '0001_s001.png'
  assert sources.parse_meta_info_line('a (1).png') == 'a (1).png'


def test_single_array_sources_yield_the_named_array(folder, tmp_path):
  src = sources.FolderSource(folder, array='lq')
  assert src.array_names == ('lq',)
  record = src[0]
  assert record.keys() == {'lq', 'bad_images'}
  np.testing.assert_array_equal(record['lq'], RGB)
  meta = tmp_path / 'list.txt'
  meta.write_text('rgba.png\n')
  np.testing.assert_array_equal(sources.MetaInfoSource(meta, folder, array='real')[0]['real'],
                                RGBA[:, :, :3])


def _aligned_folders(root, lq_size=(6, 5)):
  """gt/ at x1, lq/ at x2 (one DIV2K-style `x2` name), nested names with spaces."""
  lq_a = RNG.integers(0, 256, (*lq_size, 3), dtype=np.uint8)
  images.write_image(root / 'gt' / 'im a.png', np.kron(lq_a, np.ones((2, 2, 1), np.uint8)))
  images.write_image(root / 'lq' / 'im ax2.png', lq_a)
  images.write_image(root / 'gt' / 'sub' / 'b.png', RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
  images.write_image(root / 'lq' / 'sub' / 'b.png', RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
  return root


PAIR = (('gt', 1), ('lq', 2))


def test_aligned_folders_match_by_stem(tmp_path):
  src = sources.AlignedFolderSource(_aligned_folders(tmp_path), PAIR)
  assert [src.key(i) for i in range(len(src))] == ['im a', 'sub/b']
  assert src.array_names == ('gt', 'lq')
  record = src[0]
  assert record['gt'].shape == (12, 10, 3) and record['lq'].shape == (6, 5, 3)
  assert src.name(0) == f'{tmp_path / "gt" / "im a.png"} + {tmp_path / "lq" / "im ax2.png"}'


def test_aligned_folders_of_three_arrays(tmp_path):
  hr = RNG.integers(0, 256, (16, 12, 3), dtype=np.uint8)
  images.write_image(tmp_path / 'gt' / 'x.png', hr)
  images.write_image(tmp_path / 'lq' / 'xx4.png', hr[::4, ::4])
  images.write_image(tmp_path / 'dist' / 'x.png', hr[::4, ::4, :1])
  src = sources.AlignedFolderSource(tmp_path, (('gt', 1), ('lq', 4), ('dist', 4)))
  record = src[0]
  assert src.key(0) == 'x' and record.keys() == {'gt', 'lq', 'dist', 'bad_images'}
  np.testing.assert_array_equal(record['lq'], hr[::4, ::4])
  np.testing.assert_array_equal(record['dist'], np.repeat(hr[::4, ::4, :1], 3, axis=2))
  images.write_image(tmp_path / 'dist' / 'x.png', hr[::2, ::2])
  with pytest.raises(ValueError, match=r'dist.x\.png is 8x6 \(x4: 32x24\)'):
    sources.AlignedFolderSource(tmp_path, (('gt', 1), ('lq', 4), ('dist', 4)))


def test_aligned_size_mismatch_reports_all_paths_and_sizes(tmp_path):
  root = _aligned_folders(tmp_path)
  images.write_image(root / 'lq' / 'sub' / 'b.png', RNG.integers(0, 256, (4, 3, 3), dtype=np.uint8))
  images.write_image(root / 'gt' / 'lonely.png', RGB)
  images.write_image(root / 'lq' / 'stray.png', RGB)
  with pytest.raises(ValueError) as info:
    sources.AlignedFolderSource(root, PAIR)
  message = str(info.value)
  assert os.path.join('gt', 'sub', 'b.png') in message and '8x8' in message
  assert os.path.join('lq', 'sub', 'b.png') in message and '4x3' in message
  assert f'lonely.png: no image with this stem in {root / "lq"}' in message
  assert f'stray.png: no image with this stem in {root / "gt"}' in message
  with pytest.raises(FileNotFoundError, match='missing: dist'):
    sources.AlignedFolderSource(root, (*PAIR, ('dist', 2)))


def test_aligned_unreadable_file_is_left_out_or_reported(tmp_path):
  root = _aligned_folders(tmp_path)
  (root / 'lq' / 'sub' / 'b.png').write_bytes(b'')
  assert len(sources.AlignedFolderSource(root, PAIR)) == 1
  with pytest.raises(ValueError, match='b.png'):
    sources.AlignedFolderSource(root, PAIR, on_bad_image='stop')
  images.write_image(root / 'lq' / 'sub' / 'b.png', RNG.integers(0, 256, (4, 4, 3), np.uint8))
  png = (root / 'gt' / 'im a.png').read_bytes()
  (root / 'gt' / 'im a.png').write_bytes(png[:-20])  # the header reads, the data does not
  assert len(sources.AlignedFolderSource(root, PAIR)) == 2
  assert len(sources.AlignedFolderSource(root, PAIR, validate=True)) == 1


def test_sources_pickle(folder, tmp_path):
  srcs = [sources.FolderSource(folder), sources.AlignedFolderSource(_aligned_folders(tmp_path),
                                                                    PAIR)]
  for src in srcs:
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone[1]['gt'], src[1]['gt'])


def _spec(source, **kwargs):
  return streams.StreamSpec(str(source), 'data.train', 2, 8, **kwargs)


def test_open_source_picks_the_source_kind(folder, tmp_path):
  src = streams.open_source(_spec(folder, arrays=(('lq', 1),), channels=1))
  assert isinstance(src, sources.FolderSource) and len(src) == 5
  assert src.array_names == ('lq',) and src[0]['lq'].shape == (24, 20, 1)
  meta = tmp_path / 'list.txt'
  meta.write_text('rgba.png\n')
  src = streams.open_source(_spec(meta, root=str(folder)))
  assert isinstance(src, sources.MetaInfoSource) and len(src) == 1
  root = _aligned_folders(tmp_path / 'aligned')
  src = streams.open_source(_spec(root, arrays=PAIR))
  assert isinstance(src, sources.AlignedFolderSource) and src.keys == ['im a', 'sub/b']
  bad = _bad_folder(tmp_path / 'bad')
  assert len(streams.open_source(_spec(bad, validate_files=True))) == 2


def test_tfds_pack_and_read_back_through_grain(folder, tmp_path):
  pytest.importorskip('tensorflow_datasets')
  from condsr_jax.data import tfds_pack  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / 'tfds'
  name = tfds_pack.pack_image_folders({'train': folder, 'val': folder / 'nested'}, data_dir,
                                      name='demo')
  src = streams.open_source(_spec(f'tfds:{name}', root=str(data_dir)))
  files = sources.FolderSource(folder)
  assert len(src) == len(files)
  for i in range(len(files)):
    assert src.key(i) == os.path.relpath(files.paths[i], folder).replace(os.sep, '/')
    np.testing.assert_array_equal(src[i]['gt'], files[i]['gt'])
  assert len(sources.TfdsSource(name, split='val', data_dir=data_dir)) == 1
  it = streams.make_iterator(_spec(f'tfds:{name}:val', root=str(data_dir), arrays=(('lq', 2),)),
                             seed=0, shard_index=0, shard_count=1)
  batch = next(it)
  it.close()
  assert batch['lq'].shape == (2, 4, 4, 3) and batch['lq'].dtype == np.float32
  np.testing.assert_array_equal(batch['lq'][..., 0], batch['lq'][..., 2])  # GRAY, replicated
  bad = _bad_folder(tmp_path / 'bad')
  with pytest.raises(images.ImageReadError, match='b_zero.png'):
    tfds_pack.pack_image_folders({'train': bad}, data_dir, name='bad_stop')
  name = tfds_pack.pack_image_folders({'train': bad}, data_dir, name='bad_skip',
                                      on_bad_image='skip')
  assert len(sources.TfdsSource(name, data_dir=data_dir)) == 2
