"""Crops, pads, flips; training batches (determinism, workers, shards, checkpoints); eval sets."""

import cv2
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import images
from condsr_jax.data import pipeline
from condsr_jax.data import sources
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
def test_paired_crop_stays_aligned(lq_shape):
  lq = _rng().integers(0, 256, (*lq_shape, 3), dtype=np.uint8)
  gt = np.kron(lq, np.ones((3, 3, 1), np.uint8))
  for seed in range(5):
    gt_crop, lq_crop = transforms.paired_random_crop(gt, lq, 12, 3, _rng(seed))
    assert gt_crop.shape == (12, 12, 3) and lq_crop.shape == (4, 4, 3)
    np.testing.assert_array_equal(gt_crop, np.kron(lq_crop, np.ones((3, 3, 1), np.uint8)))
  with pytest.raises(ValueError, match='not 3 x LQ'):
    transforms.paired_random_crop(gt[1:], lq, 12, 3, _rng())


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


def test_batches_have_static_shapes_and_sampled_params(tmp_path):
  src = sources.FolderSource(_identified_folder(tmp_path))
  it = pipeline.make_train_iterator(src, batch_size=4, crop_size=8, seed=0, shard_index=0,
                                    shard_count=1, param_sampler=degradation_params)
  for batch in _take(it, 4):
    assert batch['gt'].shape == (4, 8, 8, 3) and batch['gt'].dtype == np.float32
    assert batch['sigma'].shape == (4,) and batch['kernel'].shape == (4, 5, 5)
    assert batch['bad_images'].shape == (4,) and not batch['bad_images'].any()
    assert 0 <= batch['gt'].min() and batch['gt'].max() <= 1
    assert batch['gt'].flags['C_CONTIGUOUS']
  it.close()


def test_sampler_keys_must_not_clash(tmp_path):
  src = sources.FolderSource(_identified_folder(tmp_path, 2))
  it = pipeline.make_train_iterator(src, batch_size=2, crop_size=8, seed=0, shard_index=0,
                                    shard_count=1, param_sampler=lambda rng: {'gt': 1})
  with pytest.raises(ValueError, match='gt'):
    next(it)
  it.close()


def test_same_seed_same_stream_and_workers_do_not_change_it(tmp_path):
  src = sources.FolderSource(_identified_folder(tmp_path))
  kwargs = dict(batch_size=4, crop_size=8, seed=3, shard_index=0, shard_count=1, rot90=True,
                param_sampler=degradation_params)
  iters = [pipeline.make_train_iterator(src, num_workers=w, **kwargs) for w in (0, 0, 2)]
  other = pipeline.make_train_iterator(src, **{**kwargs, 'seed': 4})
  single, again, workers = (_take(it, 5) for it in iters)
  _assert_same_batches(single, again)
  _assert_same_batches(single, workers)
  assert not np.array_equal(single[0]['sigma'], next(other)['sigma'])
  epoch = sorted(i for b in single[:3] for i in _ids(b))
  assert epoch == list(range(N_IMAGES))
  for it in (*iters, other):
    it.close()


def test_shards_split_the_global_stream(tmp_path):
  src = sources.FolderSource(_identified_folder(tmp_path))
  kwargs = dict(crop_size=8, seed=1, param_sampler=degradation_params)
  whole = _take(pipeline.make_train_iterator(src, batch_size=6, shard_index=0, shard_count=1,
                                             **kwargs), 2)
  shards = [_take(pipeline.make_train_iterator(src, batch_size=6, shard_index=i, shard_count=3,
                                               **kwargs), 2) for i in range(3)]
  for step in range(2):
    for i in range(3):
      assert shards[i][step]['gt'].shape[0] == 2
      for key in ('gt', 'sigma', 'kernel'):
        np.testing.assert_array_equal(shards[i][step][key], whole[step][key][i::3])
  default = pipeline.make_train_iterator(src, batch_size=6, **kwargs)  # jax: process 0 of 1
  _assert_same_batches(_take(default, 2), whole)
  default.close()
  seen = [{j for b in shard for j in _ids(b)} for shard in shards]
  assert sum(map(len, seen)) == N_IMAGES and set().union(*seen) == set(range(N_IMAGES))
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.make_train_dataset(src, batch_size=7, shard_index=0, shard_count=2)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_restored_iterator_continues_exactly(tmp_path, num_workers):
  src = sources.FolderSource(_identified_folder(tmp_path / 'images'))
  kwargs = dict(batch_size=4, crop_size=8, seed=7, shard_index=0, shard_count=1,
                param_sampler=degradation_params, num_workers=num_workers)
  it = pipeline.make_train_iterator(src, **kwargs)
  _take(it, 2)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _take(it, 3)
    fresh = pipeline.make_train_iterator(src, **kwargs)
    manager.restore(2, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_same_batches(_take(fresh, 3), expected)
  it.close()
  fresh.close()


def test_bad_images_are_counted_in_batches(tmp_path):
  root = _identified_folder(tmp_path, 4)
  (root / 'img 01.png').write_bytes(b'')
  (root / 'img 02.png').write_text('text')
  it = pipeline.make_train_iterator(sources.FolderSource(root), batch_size=4, crop_size=8,
                                    seed=0, shard_index=0, shard_count=1)
  batch = next(it)
  it.close()
  assert batch['gt'].shape == (4, 8, 8, 3)
  assert sorted(batch['bad_images'].tolist()) == [0, 0, 1, 2]
  assert set(_ids(batch)) == {0, 3}


def test_paired_and_unpaired_batches(tmp_path):
  lq = _rng().integers(0, 256, (7, 6, 3), dtype=np.uint8)
  images.write_image(tmp_path / 'gt' / 'a.png', np.kron(lq, np.ones((2, 2, 1), np.uint8)))
  images.write_image(tmp_path / 'lq' / 'a.png', lq)
  paired = sources.PairedFolderSource(tmp_path / 'gt', tmp_path / 'lq', scale=2)
  it = pipeline.make_train_iterator(paired, batch_size=2, crop_size=8, seed=0, shard_index=0,
                                    shard_count=1, vflip=True, rot90=True)
  for batch in _take(it, 3):
    assert batch['gt'].shape == (2, 8, 8, 3) and batch['lq'].shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(batch['gt'][:, ::2, ::2], batch['lq'])
  it.close()
  unpaired = sources.UnpairedSource(sources.FolderSource(tmp_path / 'gt'),
                                    sources.FolderSource(tmp_path / 'lq'), scale=4)
  it = pipeline.make_train_iterator(unpaired, batch_size=2, crop_size=8, seed=0, shard_index=0,
                                    shard_count=1)
  batch = next(it)
  it.close()
  assert batch['gt'].shape == (2, 8, 8, 3) and batch['lq'].shape == (2, 2, 2, 3)


def test_eval_sets_give_whole_images_in_order(tmp_path):
  lq = _rng().integers(0, 256, (5, 7, 3), dtype=np.uint8)
  images.write_image(tmp_path / 'gt' / 'b.png', np.kron(lq, np.ones((4, 4, 1), np.uint8)))
  images.write_image(tmp_path / 'lq' / 'bx4.png', lq)
  images.write_image(tmp_path / 'gt' / 'a.png', np.zeros((8, 4, 3), np.uint8))
  images.write_image(tmp_path / 'lq' / 'a.png', np.zeros((2, 1, 3), np.uint8))
  paired = pipeline.make_eval_dataset(sources.PairedFolderSource(
      tmp_path / 'gt', tmp_path / 'lq', scale=4, on_bad_image='stop'))
  assert len(paired) == 2 and [paired[i]['key'] for i in range(2)] == ['a', 'b']
  np.testing.assert_array_equal(paired[1]['lq'], images.to_float(lq))
  assert paired[1]['gt'].shape == (20, 28, 3)
  hr = pipeline.make_eval_dataset(sources.FolderSource(tmp_path / 'gt'), multiple_of=3)
  assert hr[1]['gt'].shape == (18, 27, 3) and 'lq' not in hr[1]
  (tmp_path / 'gt' / 'a.png').write_bytes(b'')
  with pytest.raises(images.ImageReadError, match='a.png'):
    hr[0]  # pylint: disable=pointless-statement
