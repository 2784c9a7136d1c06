"""Training streams by spec: one grain iterator per stream, each with its own source and seed.

A method declares its streams as `{name: StreamSpec}`; the loop builds `make_iterator(spec,
seed=stream_seed(config.seed, name))` for each and zips them into `{name: batch}`. E.g. clean HR
crops and real-LR crops of other images, two streams of their own lengths:

  {'hr': StreamSpec('data/DF2K', 'data.train', 16, 256),
   'lr': StreamSpec('data/real_lr', 'data.real_lr', 16, 64, arrays=(('lq', 1),))}

or aligned HR, LR and LR-sized maps read from `gt/`, `lq/` and `dist/` sub-folders:

  {'train': StreamSpec('data/stage3', 'data.train', 16, 192,
                       arrays=(('gt', 1), ('lq', 4), ('dist', 4)))}

A batch is `{array: [b, h, w, C] float32, sampled params..., 'bad_images': [b] int32}`. Every
random draw is keyed by (seed, position in the global stream), so batches do not depend on the
number of workers or processes; each process takes every `shard_count`-th element, and the
iterator state checkpoints with orbax via `grain.checkpoint.CheckpointSave/CheckpointRestore`.
"""

import dataclasses
import hashlib
import os

import grain

from condsr_jax import config as config_lib
from condsr_jax.data import pipeline
from condsr_jax.data import sources

ParamSampler = pipeline.ParamSampler

_RESERVED = ('bad_images', 'key')
_READ_THREADS = 4
_PREFETCH_BATCHES = 4
_WORKER_BUFFER_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """One training stream: where its images come from, which arrays it yields, how it crops them."""
  # An image folder | a BasicSR meta-info .txt (paths relative to `root`) | an aligned folder with
  # one sub-folder per array (e.g. gt/ + lq/) | tfds:NAME[:SPLIT].
  source: str
  field: str  # the config field that named `source` (e.g. 'data.train'), for messages
  batch_size: int  # global batch size of this stream
  crop_size: int  # crop of the factor-1 (reference) resolution; factor f gets crop_size // f
  # (array name, downscale factor); several are aligned arrays of one scene.
  arrays: tuple[tuple[str, int], ...] = (('gt', 1),)
  root: str = ''  # the meta-info root, or the TFDS data_dir
  channels: int = 3
  hflip: bool = True
  vflip: bool = False
  rot90: bool = False
  on_bad_image: str = 'skip'  # or 'stop'
  validate_files: bool = False  # read every file's header before training starts
  num_workers: int = 0  # a checkpointed iterator must be restored with the same number
  keep_decoded: bool = False  # decode each image once and keep it in memory (small data sets)
  batch_field: str = 'data.batch_size'  # the config field of batch_size, for messages
  # Per-element host-side draws (e.g. degradation parameters) merged into each element.
  param_sampler: ParamSampler | None = None


def _is_meta_info(source: str) -> bool:
  return os.path.isfile(source) and source.lower().endswith('.txt')


def _check_arrays(spec: StreamSpec) -> None:
  """The spec's own consistency: array names and factors, crop size, channels, policy."""
  require, field, source = config_lib.check, spec.field, spec.source
  names = [name for name, _ in spec.arrays]
  require(bool(names) and all(names) and len(set(names)) == len(names), field,
          f'the stream needs distinct, non-empty array names, not {names}', source)
  require(not set(names) & set(_RESERVED), field, f'{_RESERVED} are not array names', source)
  for name, factor in spec.arrays:
    require(isinstance(factor, int) and factor >= 1, field,
            f'the factor of array {name!r} must be a positive integer, not {factor!r}', source)
    require(spec.crop_size > 0 and spec.crop_size % factor == 0, field,
            f'the crop size {spec.crop_size} must be a positive multiple of the factor {factor} '
            f'of array {name!r}', source)
  require(spec.channels in (1, 3), field, f'channels must be 1 or 3, not {spec.channels}', source)
  require(spec.on_bad_image in ('skip', 'stop'), field,
          f"on_bad_image must be 'skip' or 'stop', not {spec.on_bad_image!r}", source)
  require(spec.num_workers >= 0, field, f'num_workers must be >= 0, not {spec.num_workers}',
          source)


def _check_source(spec: StreamSpec) -> None:
  """That `spec.source` names something this stream's source kind can read."""
  require, field, source = config_lib.check, spec.field, spec.source
  names = [name for name, _ in spec.arrays]
  require(bool(source), field, 'names no images: give an image folder, a meta-info .txt (with '
          'root), an aligned folder or tfds:NAME[:SPLIT]', source)
  if source.startswith('tfds:'):
    require(len(names) == 1, field,
            f'a TFDS dataset yields one array, the stream needs {names}', source)
    require(bool(source[len('tfds:'):].partition(':')[0]), field,
            'needs a dataset name: tfds:NAME[:SPLIT]', source)
    return
  require(os.path.exists(source), field, 'no such file or folder', source)
  if len(names) > 1:
    missing = [f'{name}/' for name in names if not os.path.isdir(os.path.join(source, name))]
    require(os.path.isdir(source) and not missing, field,
            f'the stream reads aligned arrays {names}: give a folder with one sub-folder per '
            f'array (missing: {", ".join(missing)})', source)
  elif _is_meta_info(source):
    require(bool(spec.root), field,
            'a meta-info list needs root, the folder its paths are relative to', source)


def check(spec: StreamSpec, device_count: int) -> None:
  """Raises `config.ConfigError` naming the field of whatever in `spec` cannot work.

  The batch must split evenly over `device_count` devices. Paths are checked, files not read.
  """
  _check_arrays(spec)
  _check_source(spec)
  config_lib.check(spec.batch_size > 0 and spec.batch_size % device_count == 0, spec.batch_field,
                   f'must be a positive multiple of the device count ({device_count})',
                   spec.batch_size)


def open_source(spec: StreamSpec) -> sources.ImageSource:
  """The source of `spec`, yielding records keyed by the spec's array names.

  Several arrays are read from an aligned folder; one array from a folder, a meta-info list or
  `tfds:NAME[:SPLIT]` (split 'train' by default, `spec.root` as the TFDS data_dir).
  """
  _check_source(spec)
  policy = dict(channels=spec.channels, on_bad_image=spec.on_bad_image)
  if len(spec.arrays) > 1:
    return sources.AlignedFolderSource(spec.source, spec.arrays, validate=spec.validate_files,
                                       **policy)
  array = spec.arrays[0][0]
  if spec.source.startswith('tfds:'):
    name, _, split = spec.source[len('tfds:'):].partition(':')
    return sources.TfdsSource(name, split=split or 'train', data_dir=spec.root or None,
                              array=array, **policy)
  if _is_meta_info(spec.source):
    return sources.MetaInfoSource(spec.source, spec.root, array=array,
                                  validate=spec.validate_files, **policy)
  return sources.FolderSource(spec.source, array=array, validate=spec.validate_files, **policy)


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if (shard_index is None) != (shard_count is None):
    raise ValueError('give both shard_index and shard_count, or neither')
  if shard_index is None:
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, {shard_count})')
  return shard_index, shard_count


def make_iterator(spec: StreamSpec, *, seed: int, shard_index: int | None = None,
                  shard_count: int | None = None) -> grain.DatasetIterator:
  """Endless shuffled, augmented, cropped batches of this process's shard of the stream.

  `seed` seeds the shuffle (fresh each epoch) and every per-element draw. Each of the
  `shard_count` processes (default `jax.process_index()/process_count()`) gets
  `spec.batch_size // shard_count` elements a step. Checkpointable with orbax; close() it.
  """
  shard_index, shard_count = _shard(shard_index, shard_count)
  _check_arrays(spec)
  config_lib.check(spec.batch_size > 0 and spec.batch_size % shard_count == 0, spec.batch_field,
                   f'must be a positive multiple of the process count ({shard_count})',
                   spec.batch_size)
  names = tuple(name for name, _ in spec.arrays)
  source = open_source(spec)
  if spec.keep_decoded:
    source.keep_decoded()
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds.random_map(pipeline.Augment(names, spec.hflip, spec.vflip, spec.rot90))
  ds = ds.random_map(pipeline.Crop(spec.arrays, spec.crop_size)).map(pipeline.ToFloat(names))
  if spec.param_sampler is not None:
    ds = ds.random_map(pipeline.SampleParams(spec.param_sampler))
  ds = ds[shard_index::shard_count].batch(spec.batch_size // shard_count, drop_remainder=True)
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=_READ_THREADS,
                                                 prefetch_buffer_size=_PREFETCH_BATCHES))
  if spec.num_workers:
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=spec.num_workers, per_worker_buffer_size=_WORKER_BUFFER_BATCHES))
  return iter(iter_ds)


def stream_seed(seed: int, name: str) -> int:
  """The seed of stream `name`: a hash of (seed, name), so streams draw independently and
  adding or reseeding one stream leaves the others' batches as they were."""
  digest = hashlib.sha256(f'{seed}/{name}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') >> 1
