"""Crops, pads, flips; training streams (determinism, workers, shards, checkpoints); eval sets."""

import dataclasses
import re

import cv2
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import config
from condsr_jax import images
from condsr_jax.data import pipeline
from condsr_jax.data import sources
from condsr_jax.data import streams
from condsr_jax.data import transforms

N_IMAGES = 12


def _rng(seed=0):
  return np.random.default_rng(seed)


def _identified_folder(root, n=N_IMAGES):
  """Image i is constant i * 20 (flip/crop invariant) with sizes around the 8 px crop."""
  for i in range(n):
    size = (5 + i, 12 - i % 4)
    images.write_image(root / f'img {i:02d}.png', np.full((*size, 3), i * 20, np.uint8))
  return root


def _ids(batch):
  return [int(round(v * 255 / 20)) for v in batch['gt'][:, 0, 0, 0]]


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def degradation_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
  return {'sigma': np.float32(rng.uniform(0.2, 3.0)),
          'kernel': rng.normal(size=(5, 5)).astype(np.float32)}


@pytest.mark.parametrize('size', [(1, 1), (2, 3), (5, 7), (3, 30)])
def test_pads_match_opencv_borders(size):
  img = _rng().integers(0, 256, (*size, 3), dtype=np.uint8)
  for mode, border in (('reflect', cv2.BORDER_REFLECT_101), ('symmetric', cv2.BORDER_REFLECT)):
    got = transforms.pad_bottom_right(img, 11, 11, mode=mode)
    want = cv2.copyMakeBorder(img, 0, max(0, 11 - size[0]), 0, max(0, 11 - size[1]), border)
    np.testing.assert_array_equal(got, want)


def test_crop_or_pad_crops_a_window_or_pads():
  img = _rng().integers(0, 256, (30, 20, 3), dtype=np.uint8)
  crop = transforms.crop_or_pad(img, 8, _rng(5))
  replay = _rng(5)
  top, left = replay.integers(0, 23), replay.integers(0, 13)
  np.testing.assert_array_equal(crop, img[top:top + 8, left:left + 8])
  small = transforms.crop_or_pad(img[:5], 8, _rng())
  assert small.shape == (8, 8, 3)
  np.testing.assert_array_equal(small[5:], small[3:0:-1])


@pytest.mark.parametrize('lq_shape', [(9, 7), (3, 2)])
def test_aligned_crop_of_two_arrays_stays_aligned(lq_shape):
  lq = _rng().integers(0, 256, (*lq_shape, 3), dtype=np.uint8)
  gt = np.kron(lq, np.ones((3, 3, 1), np.uint8))
  for seed in range(5):
    gt_crop, lq_crop = transforms.aligned_random_crop([gt, lq], (1, 3), 12, _rng(seed))
    assert gt_crop.shape == (12, 12, 3) and lq_crop.shape == (4, 4, 3)
    np.testing.assert_array_equal(gt_crop, np.kron(lq_crop, np.ones((3, 3, 1), np.uint8)))
  with pytest.raises(ValueError, match='not one scene'):
    transforms.aligned_random_crop([gt[1:], lq], (1, 3), 12, _rng())
  with pytest.raises(ValueError, match='not a multiple of every factor'):
    transforms.aligned_random_crop([gt, lq], (1, 3), 10, _rng())


def test_aligned_crop_cuts_every_array_on_the_coarsest_grid():
  coarse = _rng().integers(0, 256, (5, 6, 1), dtype=np.uint8)
  mid = np.kron(coarse, np.ones((2, 2, 1), np.uint8))
  fine = np.kron(coarse, np.ones((4, 4, 1), np.uint8))
  places = set()
  for seed in range(20):
    f, m, c = transforms.aligned_random_crop([fine, mid, coarse], (1, 2, 4), 8, _rng(seed))
    assert (f.shape, m.shape, c.shape) == ((8, 8, 1), (4, 4, 1), (2, 2, 1))
    np.testing.assert_array_equal(m, np.kron(c, np.ones((2, 2, 1), np.uint8)))
    np.testing.assert_array_equal(f, np.kron(c, np.ones((4, 4, 1), np.uint8)))
    replay = _rng(seed)
    top, left = replay.integers(0, 4), replay.integers(0, 5)
    np.testing.assert_array_equal(c, coarse[top:top + 2, left:left + 2])
    places.add((top, left))
  assert len(places) > 5


def test_augment_flips_pairs_identically_and_reaches_all_eight():
  a = np.arange(2 * 3 * 1).reshape(2, 3, 1)
  seen = set()
  for seed in range(64):
    x, y = transforms.augment([a, a * 10], _rng(seed), hflip=True, vflip=True, rot90=True)
    np.testing.assert_array_equal(y, x * 10)
    assert np.shares_memory(x, a)
    seen.add((x.shape, x.tobytes()))
  assert len(seen) == 8
  x, = transforms.augment([a], _rng(), hflip=False)
  assert x is a


def _spec(source, *, batch_size=4, crop_size=8, field='data.train', **kwargs
          ) -> streams.StreamSpec:
  return streams.StreamSpec(str(source), field, batch_size, crop_size, **kwargs)


def _batches(spec, n, *, seed=0, shard_index=0, shard_count=1):
  it = streams.make_iterator(spec, seed=seed, shard_index=shard_index, shard_count=shard_count)
  batches = _take(it, n)
  it.close()
  return batches


def test_batches_have_static_shapes_and_sampled_params(tmp_path):
  spec = _spec(_identified_folder(tmp_path), param_sampler=degradation_params)
  for batch in _batches(spec, 4):
    assert batch.keys() == {'gt', 'sigma', 'kernel', 'bad_images'}
    assert batch['gt'].shape == (4, 8, 8, 3) and batch['gt'].dtype == np.float32
    assert batch['sigma'].shape == (4,) and batch['kernel'].shape == (4, 5, 5)
    assert batch['bad_images'].shape == (4,) and not batch['bad_images'].any()
    assert 0 <= batch['gt'].min() and batch['gt'].max() <= 1
    assert batch['gt'].flags['C_CONTIGUOUS']


def test_sampler_keys_must_not_clash(tmp_path):
  spec = _spec(_identified_folder(tmp_path, 2), batch_size=2, param_sampler=lambda rng: {'gt': 1})
  with pytest.raises(ValueError, match='gt'):
    _batches(spec, 1)


def test_same_seed_same_stream_and_workers_do_not_change_it(tmp_path):
  spec = _spec(_identified_folder(tmp_path), rot90=True, param_sampler=degradation_params)
  single, again = _batches(spec, 5, seed=3), _batches(spec, 5, seed=3)
  workers = _batches(dataclasses.replace(spec, num_workers=2), 5, seed=3)
  _assert_same_batches(single, again)
  _assert_same_batches(single, workers)
  assert not np.array_equal(single[0]['sigma'], _batches(spec, 1, seed=4)[0]['sigma'])
  epoch = sorted(i for b in single[:3] for i in _ids(b))
  assert epoch == list(range(N_IMAGES))


def test_kept_decoded_images_stream_the_same_and_need_no_files_after_one_epoch(tmp_path):
  spec = _spec(_identified_folder(tmp_path), rot90=True, param_sampler=degradation_params)
  expected = _batches(spec, 9, seed=3)  # three epochs of 12 images in batches of 4
  it = streams.make_iterator(dataclasses.replace(spec, keep_decoded=True), seed=3)
  first_epoch = _take(it, 3)
  for path in tmp_path.glob('*.png'):
    path.unlink()  # a file read again would now be skipped and counted as bad
  _assert_same_batches(first_epoch + _take(it, 6), expected)
  it.close()


def test_shards_split_the_global_stream(tmp_path):
  spec = _spec(_identified_folder(tmp_path), batch_size=6, param_sampler=degradation_params)
  whole = _batches(spec, 2, seed=1)
  shards = [_batches(spec, 2, seed=1, shard_index=i, shard_count=3) for i in range(3)]
  for step in range(2):
    for i in range(3):
      assert shards[i][step]['gt'].shape[0] == 2
      for key in ('gt', 'sigma', 'kernel'):
        np.testing.assert_array_equal(shards[i][step][key], whole[step][key][i::3])
  default = streams.make_iterator(spec, seed=1)  # jax: process 0 of 1
  _assert_same_batches(_take(default, 2), whole)
  default.close()
  seen = [{j for b in shard for j in _ids(b)} for shard in shards]
  assert sum(map(len, seen)) == N_IMAGES and set().union(*seen) == set(range(N_IMAGES))
  with pytest.raises(config.ConfigError, match='multiple of the process count'):
    streams.make_iterator(_spec(tmp_path, batch_size=7), seed=0, shard_index=0, shard_count=2)


def test_bad_images_are_counted_in_batches(tmp_path):
  root = _identified_folder(tmp_path, 4)
  (root / 'img 01.png').write_bytes(b'')
  (root / 'img 02.png').write_text('text')
  batch, = _batches(_spec(root), 1)
  assert batch['gt'].shape == (4, 8, 8, 3)
  assert sorted(batch['bad_images'].tolist()) == [0, 0, 1, 2]
  assert set(_ids(batch)) == {0, 3}


DASR_ARRAYS = (('gt', 1), ('lq', 4), ('dist', 4))


def _aligned_scenes(root, lq_sizes):
  """gt/, lq/ and dist/: HR constant on 4x4 blocks, LR = HR[::4, ::4], map = LR, channels reversed."""
  for i, size in enumerate(lq_sizes):
    hr = np.kron(_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    lq = hr[::4, ::4]
    images.write_image(root / 'gt' / f'{i}.png', hr)
    images.write_image(root / 'lq' / f'{i}x4.png', lq)
    images.write_image(root / 'dist' / f'{i}.png', lq[:, :, ::-1])
  return root


def _assert_aligned(batch):
  gt, lq, dist = batch['gt'], batch['lq'], batch['dist']
  assert gt.shape == (2, 16, 16, 3) and lq.shape == dist.shape == (2, 4, 4, 3)
  np.testing.assert_array_equal(gt, np.kron(lq, np.ones((1, 4, 4, 1), np.float32)))
  np.testing.assert_array_equal(dist, lq[..., ::-1])


def test_aligned_stream_of_three_arrays_stays_aligned(tmp_path):
  root = _aligned_scenes(tmp_path, [(9, 7), (5, 12), (6, 6), (4, 8)])
  spec = _spec(root, batch_size=2, crop_size=16, arrays=DASR_ARRAYS, vflip=True, rot90=True)
  batches = _batches(spec, 8)
  for batch in batches:
    assert batch.keys() == {'gt', 'lq', 'dist', 'bad_images'}
    _assert_aligned(batch)
  assert len({b['lq'].tobytes() for b in batches}) == 8


def test_aligned_stream_pads_small_scenes_symmetrically(tmp_path):
  root = _aligned_scenes(tmp_path, [(2, 3)])
  spec = _spec(root, batch_size=2, crop_size=16, arrays=DASR_ARRAYS, vflip=True, rot90=True)
  lq = images.to_float(images.read_image(root / 'lq' / '0x4.png'))
  flips = [np.rot90(x, k) for x in (lq, lq[::-1]) for k in range(4)]
  padded = [transforms.pad_bottom_right(x, 4, 4, mode='symmetric') for x in flips]
  seen = set()
  for batch in _batches(spec, 8):
    _assert_aligned(batch)
    for crop in batch['lq']:
      seen.add(next(i for i, p in enumerate(padded) if np.array_equal(crop, p)))
  assert len(seen) > 2


def _constant_folder(root, values, size=(10, 12)):
  for i, value in enumerate(values):
    images.write_image(root / f'{i}.png', np.full((*size, 3), value, np.uint8))
  return root


def test_two_streams_are_independent(tmp_path):
  hr = _spec(_constant_folder(tmp_path / 'hr', [0, 20, 40, 60, 80, 100]), batch_size=2)
  lr = _spec(_constant_folder(tmp_path / 'real lr', [200, 210, 220, 230], (5, 6)), batch_size=2,
             crop_size=16, arrays=(('lq', 4),), field='data.real_lr')

  def zipped(hr_seed, lr_seed, steps=6):
    return list(zip(_batches(hr, steps, seed=hr_seed), _batches(lr, steps, seed=lr_seed)))

  seeds = {name: streams.stream_seed(0, name) for name in ('hr', 'lr')}
  assert seeds['hr'] != seeds['lr'] and seeds['lr'] != streams.stream_seed(1, 'lr')
  assert seeds['hr'] == streams.stream_seed(0, 'hr') and 0 <= seeds['hr'] < 2**31
  steps = zipped(seeds['hr'], seeds['lr'])
  for h, l in steps:
    assert h.keys() == {'gt', 'bad_images'} and l.keys() == {'lq', 'bad_images'}
    assert h['gt'].shape == (2, 8, 8, 3) and l['lq'].shape == (2, 4, 4, 3)
  values = lambda key, batches: [int(round(v * 255)) for b in batches for v in b[key][:, 0, 0, 0]]
  hr_values, lr_values = values('gt', [h for h, _ in steps]), values('lq', [l for _, l in steps])
  assert sorted(hr_values[:6]) == [0, 20, 40, 60, 80, 100]  # an epoch of 6
  assert sorted(lr_values[:4]) == sorted(lr_values[4:8]) == [200, 210, 220, 230]  # epochs of 4
  reseeded = zipped(seeds['hr'], streams.stream_seed(1, 'lr'))
  _assert_same_batches([h for h, _ in steps], [h for h, _ in reseeded])
  assert values('lq', [l for _, l in reseeded]) != lr_values


@pytest.mark.parametrize('num_workers', [0, 2])
def test_restored_iterators_continue_exactly(tmp_path, num_workers):
  specs = {'hr': _spec(_identified_folder(tmp_path / 'images'), num_workers=num_workers,
                       param_sampler=degradation_params),
           'lr': _spec(_constant_folder(tmp_path / 'lr', [200, 210, 220]), batch_size=2,
                       arrays=(('lq', 2),), num_workers=num_workers)}

  def iterators():
    return {n: streams.make_iterator(s, seed=streams.stream_seed(7, n), shard_index=0,
                                     shard_count=1) for n, s in specs.items()}

  its = iterators()
  for _ in range(2):
    for it in its.values():
      next(it)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(2, args=ocp.args.Composite(**{
        f'data_{n}': grain.checkpoint.CheckpointSave(it) for n, it in its.items()}))
    manager.wait_until_finished()
    expected = {n: _take(it, 3) for n, it in its.items()}
    fresh = iterators()
    manager.restore(2, args=ocp.args.Composite(**{
        f'data_{n}': grain.checkpoint.CheckpointRestore(it) for n, it in fresh.items()}))
  for n in specs:
    _assert_same_batches(_take(fresh[n], 3), expected[n])
  for it in (*its.values(), *fresh.values()):
    it.close()


def test_check_names_the_field(tmp_path):
  folder = _identified_folder(tmp_path / 'images', 2)
  meta = tmp_path / 'list.txt'
  meta.write_text('img 00.png\n')
  streams.check(_spec(folder), 4)
  streams.check(_spec(meta, root=str(folder)), 4)
  cases = [
      (_spec(''), "config.data.train = '': names no images"),
      (_spec(tmp_path / 'nowhere'), f"config.data.train = '{tmp_path / 'nowhere'}': no such"),
      (_spec(folder, batch_size=6, batch_field='data.lr_batch'),
       'config.data.lr_batch = 6: must be a positive multiple of the device count (4)'),
      (_spec(folder, batch_size=0), 'config.data.batch_size = 0: must be a positive multiple'),
      (_spec(folder, crop_size=10, arrays=(('lq', 4),), field='data.real_lr'),
       f"config.data.real_lr = '{folder}': the crop size 10 must be a positive multiple of the "
       "factor 4 of array 'lq'"),
      (_spec(folder, arrays=DASR_ARRAYS),
       f"config.data.train = '{folder}': the stream reads aligned arrays ['gt', 'lq', 'dist']: "
       'give a folder with one sub-folder per array (missing: gt/, lq/, dist/)'),
      (_spec(meta), 'config.data.train = .*: a meta-info list needs root'),
      (_spec('tfds:div2k', arrays=(('gt', 1), ('lq', 4))),
       "config.data.train = 'tfds:div2k': a TFDS dataset yields one array"),
      (_spec(folder, arrays=(('gt', 1), ('gt', 2))), 'distinct, non-empty array names'),
      (_spec(folder, arrays=(('bad_images', 1),)), 'are not array names'),
      (_spec(folder, on_bad_image='ignore'), "on_bad_image must be 'skip' or 'stop'"),
  ]
  for spec, message in cases:
    with pytest.raises(config.ConfigError, match=message if '.*' in message else
                       re.escape(message)):
      streams.check(spec, 4)
  with pytest.raises(config.ConfigError, match='sub-folder per array'):
    streams.open_source(_spec(folder, arrays=DASR_ARRAYS))


def test_eval_sets_give_whole_images_in_order(tmp_path):
  lq = _rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
  images.write_image(tmp_path / 'gt' / 'b.png', np.kron(lq, np.ones((4, 4, 1), np.uint8)))
  images.write_image(tmp_path / 'lq' / 'bx4.png', lq)
  images.write_image(tmp_path / 'gt' / 'a.png', np.zeros((8, 4, 3), np.uint8))
  images.write_image(tmp_path / 'lq' / 'a.png', np.zeros((2, 1, 3), np.uint8))
  source = sources.AlignedFolderSource(tmp_path, (('gt', 1), ('lq', 4)), on_bad_image='stop')
  paired = pipeline.make_eval_dataset(source)
  assert len(paired) == 2 and [paired[i]['key'] for i in range(2)] == ['a', 'b']
  assert paired[1].keys() == {'gt', 'lq', 'key'}
  np.testing.assert_array_equal(paired[1]['lq'], images.to_float(lq))
  assert paired[1]['gt'].shape == (20, 28, 3)
  with pytest.raises(ValueError, match='multiple_of must be 1'):
    pipeline.make_eval_dataset(source, multiple_of=4)
  hr = pipeline.make_eval_dataset(sources.FolderSource(tmp_path / 'gt'), multiple_of=3)
  assert hr[1]['gt'].shape == (18, 27, 3) and hr[1].keys() == {'gt', 'key'}
  lr = pipeline.make_eval_dataset(sources.FolderSource(tmp_path / 'lq', array='lq'))
  np.testing.assert_array_equal(lr[1]['lq'], images.to_float(lq))
  (tmp_path / 'gt' / 'a.png').write_bytes(b'')
  with pytest.raises(images.ImageReadError, match='a.png'):
    hr[0]  # pylint: disable=pointless-statement
