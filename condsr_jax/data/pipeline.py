"""grain pipelines: shuffled, augmented, cropped training batches and whole-image evaluation sets.

Training elements are `{'gt': HxWxC float32, ['lq': ...,] **sampled params, 'bad_images': int32}`.
Every random draw comes from grain's per-element generator, keyed by (seed, position in the global
stream), so a batch does not depend on the number of workers or processes; each process takes
every `shard_count`-th element of that stream, and the iterator state checkpoints with orbax via
`grain.checkpoint.CheckpointSave/CheckpointRestore`.
"""

import dataclasses
from typing import Any, Callable

import grain
import numpy as np

from condsr_jax import images
from condsr_jax.data import sources
from condsr_jax.data import transforms

ParamSampler = Callable[[np.random.Generator], dict[str, Any]]
IMAGE_KEYS = ('gt', 'lq')


@dataclasses.dataclass(frozen=True)
class Augment(grain.transforms.RandomMap):
  """Identical random flips / transposes of the element's images."""
  hflip: bool = True
  vflip: bool = False
  rot90: bool = False

  def random_map(self, element, rng):
    keys = [k for k in IMAGE_KEYS if k in element]
    flipped = transforms.augment([element[k] for k in keys], rng, hflip=self.hflip,
                                 vflip=self.vflip, rot90=self.rot90)
    return {**element, **dict(zip(keys, flipped))}


@dataclasses.dataclass(frozen=True)
class Crop(grain.transforms.RandomMap):
  """GT crop of `crop_size` (padded if smaller); an LQ image is cropped paired or independently.

  paired: LQ crop aligned with the GT crop (`crop_size // scale`); unpaired: an independent LQ
  crop of `crop_size // scale`.
  """
  crop_size: int
  scale: int = 1
  paired: bool = False

  def random_map(self, element, rng):
    out = dict(element)
    if 'lq' in element and self.paired:
      out['gt'], out['lq'] = transforms.paired_random_crop(
          element['gt'], element['lq'], self.crop_size, self.scale, rng)
      return out
    out['gt'] = transforms.crop_or_pad(element['gt'], self.crop_size, rng)
    if 'lq' in element:
      out['lq'] = transforms.crop_or_pad(element['lq'], self.crop_size // self.scale, rng)
    return out


def _to_float(img: np.ndarray) -> np.ndarray:
  return images.to_float(np.ascontiguousarray(img))


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
  """Images to contiguous float32 in [0, 1] (uint8 and uint16 files alike)."""

  def map(self, element):
    return {k: _to_float(v) if k in IMAGE_KEYS else v for k, v in element.items()}


@dataclasses.dataclass(frozen=True)
class SampleParams(grain.transforms.RandomMap):
  """Adds `sampler(rng)`'s fixed-shape arrays (e.g. degradation parameters) to the element."""
  sampler: ParamSampler

  def random_map(self, element, rng):
    params = self.sampler(rng)
    clash = element.keys() & params.keys()
    if clash:
      raise ValueError(f'the parameter sampler returns keys the element has: {sorted(clash)}')
    return {**element, **params}


def _crop_for(source: Any, crop_size: int) -> Crop:
  scale = getattr(source, 'scale', 1)
  if crop_size % scale:
    raise ValueError(f'crop_size {crop_size} must be a multiple of the scale {scale}')
  return Crop(crop_size, scale, paired=isinstance(source, sources.PairedFolderSource))


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if (shard_index is None) != (shard_count is None):
    raise ValueError('give both shard_index and shard_count, or neither')
  if shard_index is None:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, {shard_count})')
  return shard_index, shard_count


def make_train_dataset(
    source: Any, *, batch_size: int, crop_size: int = 400, seed: int = 0,
    hflip: bool = True, vflip: bool = False, rot90: bool = False,
    param_sampler: ParamSampler | None = None,
    shard_index: int | None = None, shard_count: int | None = None,
    num_workers: int = 0, worker_buffer_size: int = 2,
    read_threads: int = 4, prefetch_batches: int = 4) -> grain.IterDataset:
  """An endless stream of this process's training batches.

  Args:
    source: an image source (`sources.FolderSource`, `MetaInfoSource`, `TfdsSource`,
      `PairedFolderSource` or `UnpairedSource`).
    batch_size: the global batch size; each of the `shard_count` processes gets
      `batch_size // shard_count` examples a step.
    crop_size: GT crop (Real-ESRGAN: 400); images smaller than it are padded (reflect-101).
      LQ crops are `crop_size // source.scale`.
    seed: seeds the shuffle (fresh each epoch) and every per-element random draw.
    hflip, vflip, rot90: random augmentations (p 0.5 each), identical within an element.
    param_sampler: `(rng) -> dict of fixed-shape arrays` merged into each element.
    shard_index, shard_count: this process's shard; default `jax.process_index()/count()`.
    num_workers: processes for `mp_prefetch` (0: none); batches do not depend on it, but a
      checkpointed iterator must be restored with the same number.
    worker_buffer_size: batches each worker prepares ahead.
    read_threads, prefetch_batches: threads and buffered batches of the in-process reader.
  """
  shard_index, shard_count = _shard(shard_index, shard_count)
  if batch_size % shard_count:
    raise ValueError(f'batch_size {batch_size} is not divisible by the {shard_count} processes')
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds.random_map(Augment(hflip, vflip, rot90)).random_map(_crop_for(source, crop_size))
  ds = ds.map(ToFloat())
  if param_sampler is not None:
    ds = ds.random_map(SampleParams(param_sampler))
  ds = ds[shard_index::shard_count].batch(batch_size // shard_count, drop_remainder=True)
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                 prefetch_buffer_size=prefetch_batches))
  if num_workers:
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=worker_buffer_size))
  return iter_ds


def make_train_iterator(source: Any, **kwargs) -> grain.DatasetIterator:
  """`iter(make_train_dataset(source, **kwargs))`: checkpointable with orbax; close() it."""
  return iter(make_train_dataset(source, **kwargs))


@dataclasses.dataclass(frozen=True)
class LoadWhole(grain.transforms.Map):
  """Index -> `{'gt', ['lq',] 'key'}` whole float32 images, GT cropped to a multiple."""
  source: sources.ImageSource
  multiple_of: int = 1

  def map(self, element):
    index = int(element)
    record = self.source.load(index)
    m = self.multiple_of
    gt = record['gt']
    record['gt'] = gt[:gt.shape[0] - gt.shape[0] % m, :gt.shape[1] - gt.shape[1] % m]
    out = {k: _to_float(v) for k, v in record.items()}
    out['key'] = self.source.key(index)
    return out


def make_eval_dataset(source: sources.ImageSource, *, multiple_of: int = 1) -> grain.MapDataset:
  """Deterministic whole images in source order; unreadable files raise (no substitution).

  A `PairedFolderSource` gives `{'gt', 'lq', 'key'}`; an HR-only source gives `{'gt', 'key'}`
  with GT cropped bottom/right to a multiple of `multiple_of` (the scale LR will be synthesized
  at). Random access (`ds[i]`, `len(ds)`); to read ahead, use
  `ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))`.
  """
  if isinstance(source, sources.PairedFolderSource) and multiple_of != 1:
    raise ValueError('paired GT/LQ sizes are fixed by the files; multiple_of must be 1')
  return grain.MapDataset.range(len(source)).map(LoadWhole(source, multiple_of))
