"""Random-access image sources for grain: folders, meta-info lists, aligned folders, TFDS.

A source's `__getitem__` returns `{array: HWC, ..., 'bad_images': int32}` with the file's sample
type (uint8/uint16) and the configured channel count; the keys are the source's `array_names`
(a single-array source is told its array's name, 'gt' by default). Files that cannot be decoded
follow `on_bad_image`: 'skip' logs the path (once per process) and substitutes the next readable
index (deterministic, so batch shapes and reproducibility hold; `bad_images` counts the records
passed over), 'stop' raises an `ImageReadError` naming the file. Anything found wrong at
construction is reported then, with paths, rather than hours into training.
"""

import abc
import os
import pathlib
import re
from typing import Literal, Sequence

from absl import logging
import cv2
import numpy as np
from PIL import Image

from condsr_jax import images

OnBadImage = Literal['skip', 'stop']
Record = dict[str, np.ndarray]

_META_SUFFIX = re.compile(r'^(.*?)\s+\(\s*\d+\s*,\s*\d+\s*(?:,\s*\d+\s*)?\)(?:\s+\d+)?$')
_MAX_LISTED = 20
_NO_IMAGES = f'no image files found (looked for {", ".join(images.IMAGE_EXTENSIONS)})'


def convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
  """HWC with 1, 3 or 4 channels -> `channels` (1 or 3): gray replicated, alpha dropped, or luma."""
  if channels == 3:
    return images.to_rgb(img)
  if img.shape[2] == 1:
    return img
  return cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)[:, :, None]


def header_problem(path: str) -> str | None:
  """Why `path` is not a readable image judging by its header (and PNG checksums), else None."""
  try:
    if os.path.getsize(path) == 0:
      return 'empty file'
    with Image.open(path) as img:
      img.verify()
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types for bad files.
    return f'not a readable image ({type(e).__name__}: {e})'
  return None


def image_size(path: str) -> tuple[int, int]:
  """(height, width) from the file header; raises ImageReadError."""
  try:
    with Image.open(path) as img:
      width, height = img.size
  except Exception as e:  # pylint: disable=broad-except
    raise images.ImageReadError(path, f'not a readable image ({type(e).__name__}: {e})') from e
  return height, width


def _listing(lines: Sequence[str]) -> str:
  shown = '\n  '.join(lines[:_MAX_LISTED])
  more = f'\n  ... and {len(lines) - _MAX_LISTED} more' if len(lines) > _MAX_LISTED else ''
  return f'\n  {shown}{more}'


def _stem_key(path: str, root: str) -> str:
  return pathlib.Path(os.path.splitext(os.path.relpath(path, root))[0]).as_posix()


def _check_policy(on_bad_image: str, channels: int) -> None:
  if on_bad_image not in ('skip', 'stop'):
    raise ValueError(f"on_bad_image must be 'skip' or 'stop', got {on_bad_image!r}")
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}')


class ImageSource(abc.ABC):
  """Base of the image sources: bad-image policy and channel conversion over `_read`."""

  def __init__(self, array_names: tuple[str, ...], *, channels: int, on_bad_image: OnBadImage):
    _check_policy(on_bad_image, channels)
    self.array_names = array_names
    self.channels = channels
    self.on_bad_image = on_bad_image
    self._bad: set[int] = set()
    self._decoded: dict[int, Record] | None = None

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of records."""

  @abc.abstractmethod
  def name(self, index: int) -> str:
    """The file (or record) behind `index`, for messages."""

  @abc.abstractmethod
  def key(self, index: int) -> str:
    """A short identifier of `index` (relative path without extension), for output names."""

  @abc.abstractmethod
  def _read(self, index: int) -> Record:
    """Decoded arrays of record `index`; raises ImageReadError."""

  def keep_decoded(self) -> 'ImageSource':
    """Keeps each record in memory, read-only, from its first decoding on: for data sets that
    fit in memory, where decoding a large PNG costs more than a step of a small network."""
    self._decoded = {}
    return self

  def load(self, index: int) -> Record:
    """Record `index` with converted channels; raises ImageReadError whatever the policy."""
    if self._decoded is not None and index in self._decoded:
      return dict(self._decoded[index])
    record = {k: convert_channels(v, self.channels) for k, v in self._read(index).items()}
    if self._decoded is not None:
      for array in record.values():
        array.flags.writeable = False
      self._decoded[index] = record
      return dict(record)
    return record

  def __getitem__(self, index: int) -> Record:
    """Record `index` (or, under 'skip', the next readable one) with its `bad_images` count."""
    n = len(self)
    index = int(index) % n
    for skipped in range(n):
      i = (index + skipped) % n
      if i in self._bad:
        continue
      try:
        record = self.load(i)
      except images.ImageReadError as e:
        if self.on_bad_image == 'stop':
          raise
        self._bad.add(i)
        logging.warning("Skipping an unreadable image (on_bad_image='skip'): %s", e)
        continue
      record['bad_images'] = np.int32(skipped)
      return record
    raise images.ImageReadError(self.name(index),
                                f'none of the {n} images of this source can be read')


class FileSource(ImageSource):
  """Images from a list of files, yielded as array `array`; `root` makes the keys relative."""

  def __init__(self, paths: Sequence[str], *, root: str, array: str = 'gt', channels: int = 3,
               on_bad_image: OnBadImage = 'skip', validate: bool = False):
    super().__init__((array,), channels=channels, on_bad_image=on_bad_image)
    self.root = os.fspath(root)
    self.paths = [os.fspath(p) for p in paths]
    if validate:
      self.paths = self._validated(self.paths)

  def _validated(self, paths: list[str]) -> list[str]:
    problems = {p: header_problem(p) for p in paths}
    bad = [f'{p}: {why}' for p, why in problems.items() if why]
    if bad and self.on_bad_image == 'stop':
      raise images.ImageReadError(self.root, f'{len(bad)} unreadable images:{_listing(bad)}')
    for line in bad:
      logging.warning('Leaving out an unreadable image: %s', line)
    return [p for p in paths if not problems[p]]

  def __len__(self) -> int:
    return len(self.paths)

  def name(self, index: int) -> str:
    return self.paths[index]

  def key(self, index: int) -> str:
    return _stem_key(self.paths[index], self.root)

  def _read(self, index: int) -> Record:
    return {self.array_names[0]: images.read_image(self.paths[index])}


class FolderSource(FileSource):
  """All images under a folder (recursive, sorted; any file names)."""

  def __init__(self, root: str | os.PathLike, *, array: str = 'gt', recursive: bool = True,
               channels: int = 3, on_bad_image: OnBadImage = 'skip', validate: bool = False):
    paths = images.list_images(root, recursive=recursive)
    if not paths:
      raise ValueError(f'{os.fspath(root)}: {_NO_IMAGES}')
    super().__init__(paths, root=os.fspath(root), array=array, channels=channels,
                     on_bad_image=on_bad_image, validate=validate)


def parse_meta_info_line(line: str) -> str:
  """The relative path on a meta-info line: the whole line, less an old `(h,w,c) [level]` suffix."""
  line = line.strip()
  match = _META_SUFFIX.match(line)
  return match.group(1) if match else line


def read_meta_info(path: str | os.PathLike) -> list[str]:
  """The relative paths listed in a BasicSR meta-info file (blank lines ignored)."""
  with open(path, encoding='utf-8') as f:
    return [parse_meta_info_line(line) for line in f if line.strip()]


class MetaInfoSource(FileSource):
  """Images listed in a BasicSR meta-info file, one path per line relative to `root`."""

  def __init__(self, meta_info: str | os.PathLike, root: str | os.PathLike, *, array: str = 'gt',
               channels: int = 3, on_bad_image: OnBadImage = 'skip', validate: bool = False):
    rel_paths = read_meta_info(meta_info)
    if not rel_paths:
      raise ValueError(f'{os.fspath(meta_info)}: the meta-info file lists no images')
    paths = [os.path.join(root, p) for p in rel_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f'{os.fspath(meta_info)}: {len(missing)} listed files do not exist '
                              f'under {os.fspath(root)}:{_listing(missing)}')
    super().__init__(paths, root=os.fspath(root), array=array, channels=channels,
                     on_bad_image=on_bad_image, validate=validate)


def _match_stems(root: str, arrays: Sequence[tuple[str, int]]
                 ) -> tuple[dict[str, dict[str, str]], list[str]]:
  """{stem: {array: path}} for the stems found in every sub-folder, and what did not match.

  The stems of the finest array (smallest factor) are taken as they are; a file of an array
  with factor f > 1 may add `x{f}` to its stem.
  """
  folders = {name: os.path.join(root, name) for name, _ in arrays}
  listed = {name: images.list_images(folder) for name, folder in folders.items()}
  finest = min(arrays, key=lambda a: a[1])[0]
  finest_stems = {_stem_key(p, folders[finest]) for p in listed[finest]}
  found, problems = {}, []
  for name, factor in arrays:
    found[name] = {}
    if not listed[name]:
      problems.append(f'{folders[name]}: {_NO_IMAGES}')
    for path in listed[name]:
      stem = _stem_key(path, folders[name])
      bare = stem.removesuffix(f'x{factor}')
      if name != finest and factor > 1 and stem not in finest_stems and bare in finest_stems:
        stem = bare
      if stem in found[name]:
        problems.append(f'{found[name][stem]} and {path}: two images with the stem {stem!r}')
      found[name][stem] = path
  matched = {}
  for stem in sorted(set().union(*found.values())):
    paths = {name: found[name][stem] for name, _ in arrays if stem in found[name]}
    if len(paths) == len(arrays):
      matched[stem] = paths
      continue
    some = next(iter(paths.values()))
    problems += [f'{some}: no image with this stem in {folders[name]}' for name, _ in arrays
                 if name not in paths]
  return matched, problems


def _size(path: str, validate: bool) -> tuple[int, int]:
  why = header_problem(path) if validate else None
  if why:
    raise images.ImageReadError(path, why)
  return image_size(path)


class AlignedFolderSource(ImageSource):
  """Aligned arrays of one scene: a sub-folder of `root` per array, files matched by stem.

  `arrays` are (name, downscale factor) pairs, e.g. `(('gt', 1), ('lq', 4))` for `root/gt` and
  `root/lq`; a file of an array with factor f > 1 may end in `x{f}` (BasicSR's DIV2K LR names).
  Every matched set's sizes are read from the headers at construction and must describe one scene
  (size x factor equal over the arrays); mismatches and unmatched files are reported together,
  with paths and sizes. `validate` also checks every header (and PNG checksums) then.
  """

  def __init__(self, root: str | os.PathLike, arrays: Sequence[tuple[str, int]], *,
               channels: int = 3, on_bad_image: OnBadImage = 'skip', validate: bool = False):
    arrays = tuple((name, int(factor)) for name, factor in arrays)
    super().__init__(tuple(name for name, _ in arrays), channels=channels,
                     on_bad_image=on_bad_image)
    self.root = os.fspath(root)
    self.factors = dict(arrays)
    missing = [name for name in self.array_names
               if not os.path.isdir(os.path.join(self.root, name))]
    if missing:
      raise FileNotFoundError(f'{self.root}: the aligned arrays {self.array_names} need one '
                              f'sub-folder each; missing: {", ".join(missing)}')
    matched, problems = _match_stems(self.root, arrays)
    self.sets, self.keys = [], []
    for stem, paths in matched.items():
      try:
        sizes = {name: _size(path, validate) for name, path in paths.items()}
      except images.ImageReadError as e:
        if on_bad_image == 'stop':
          problems.append(str(e))
        else:
          logging.warning('Leaving out a set with an unreadable image: %s', e)
        continue
      scene = {n: (h * self.factors[n], w * self.factors[n]) for n, (h, w) in sizes.items()}
      if len(set(scene.values())) > 1:
        problems.append('sizes do not fit the factors: ' + ', '.join(
            f'{paths[n]} is {h}x{w} (x{self.factors[n]}: {scene[n][0]}x{scene[n][1]})'
            for n, (h, w) in sizes.items()))
        continue
      self.sets.append(tuple(paths[name] for name in self.array_names))
      self.keys.append(stem)
    described = ', '.join(f'{name}/ (x{factor})' for name, factor in arrays)
    if problems:
      raise ValueError(f'aligned folders {described} under {self.root} do not match:'
                       f'{_listing(problems)}')
    if not self.sets:
      raise ValueError(f'aligned folders {described} under {self.root}: no readable sets')

  def __len__(self) -> int:
    return len(self.sets)

  def name(self, index: int) -> str:
    return ' + '.join(self.sets[index])

  def key(self, index: int) -> str:
    return self.keys[index]

  def _read(self, index: int) -> Record:
    return {name: images.read_image(path)
            for name, path in zip(self.array_names, self.sets[index])}


class TfdsSource(ImageSource):
  """A TFDS dataset in ArrayRecord format read with `tfds.data_source` (no TensorFlow needed).

  Feature `image_key` is yielded as array `array`. Images are taken as encoded bytes and decoded
  here (16-bit PNGs keep full precision), so the bad-image policy applies to them too. Needs the
  `[tfds]` extra.
  """

  def __init__(self, name: str, *, split: str = 'train', data_dir: str | os.PathLike | None = None,
               image_key: str = 'image', array: str = 'gt', channels: int = 3,
               on_bad_image: OnBadImage = 'skip'):
    super().__init__((array,), channels=channels, on_bad_image=on_bad_image)
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError('TFDS sources need tensorflow-datasets: '
                        "pip install 'condsr_jax[tfds]'") from e
    self.dataset, self.split, self.image_key = name, split, image_key
    self._source = tfds.data_source(
        name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir),
        decoders={image_key: tfds.decode.SkipDecoding()})
    if not len(self._source):
      raise ValueError(f'TFDS dataset {name} split {split!r} has no examples')

  def __len__(self) -> int:
    return len(self._source)

  def name(self, index: int) -> str:
    return f'tfds:{self.dataset}/{self.split}[{index}]'

  def key(self, index: int) -> str:
    record = self._source[index]
    return record['name'].decode() if 'name' in record else f'{self.split}_{index:06d}'

  def _read(self, index: int) -> Record:
    return {self.array_names[0]: images.decode_image(self._source[index][self.image_key],
                                                     self.name(index))}

