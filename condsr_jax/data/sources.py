"""Random-access image sources for grain: folders, meta-info lists, paired/unpaired folders, TFDS.

A source's `__getitem__` returns `{'gt': HWC[, 'lq': HWC], 'bad_images': int32}` with the file's
sample type (uint8/uint16) and the configured channel count. Files that cannot be decoded follow
`on_bad_image`: 'skip' logs the path (once per process) and substitutes the next readable index
(deterministic, so batch shapes and reproducibility hold; `bad_images` counts the records passed
over), 'stop' raises an `ImageReadError` naming the file. Anything found wrong at construction
is reported then, with paths, rather than hours into training.
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


def _check_policy(on_bad_image: str, channels: int) -> None:
  if on_bad_image not in ('skip', 'stop'):
    raise ValueError(f"on_bad_image must be 'skip' or 'stop', got {on_bad_image!r}")
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}')


class ImageSource(abc.ABC):
  """Base of the image sources: bad-image policy and channel conversion over `_read`."""

  def __init__(self, *, channels: int, on_bad_image: OnBadImage):
    _check_policy(on_bad_image, channels)
    self.channels = channels
    self.on_bad_image = on_bad_image
    self._bad: set[int] = set()

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

  def load(self, index: int) -> Record:
    """Record `index` with converted channels; raises ImageReadError whatever the policy."""
    return {k: convert_channels(v, self.channels) for k, v in self._read(index).items()}

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
  """Images from a list of files; `root` makes the keys relative."""

  def __init__(self, paths: Sequence[str], *, root: str, channels: int = 3,
               on_bad_image: OnBadImage = 'skip', validate: bool = False):
    super().__init__(channels=channels, on_bad_image=on_bad_image)
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
    rel = os.path.relpath(self.paths[index], self.root)
    return pathlib.Path(os.path.splitext(rel)[0]).as_posix()

  def _read(self, index: int) -> Record:
    return {'gt': images.read_image(self.paths[index])}


class FolderSource(FileSource):
  """All images under a folder (recursive, sorted; any file names)."""

  def __init__(self, root: str | os.PathLike, *, recursive: bool = True, channels: int = 3,
               on_bad_image: OnBadImage = 'skip', validate: bool = False):
    paths = images.list_images(root, recursive=recursive)
    if not paths:
      raise ValueError(f'{os.fspath(root)}: no image files found (looked for '
                       f'{", ".join(images.IMAGE_EXTENSIONS)})')
    super().__init__(paths, root=os.fspath(root), channels=channels, on_bad_image=on_bad_image,
                     validate=validate)


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

  def __init__(self, meta_info: str | os.PathLike, root: str | os.PathLike, *, channels: int = 3,
               on_bad_image: OnBadImage = 'skip', validate: bool = False):
    rel_paths = read_meta_info(meta_info)
    if not rel_paths:
      raise ValueError(f'{os.fspath(meta_info)}: the meta-info file lists no images')
    paths = [os.path.join(root, p) for p in rel_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f'{os.fspath(meta_info)}: {len(missing)} listed files do not exist '
                              f'under {os.fspath(root)}:{_listing(missing)}')
    super().__init__(paths, root=os.fspath(root), channels=channels, on_bad_image=on_bad_image,
                     validate=validate)


def _stem_key(path: str, root: str) -> str:
  return pathlib.Path(os.path.splitext(os.path.relpath(path, root))[0]).as_posix()


def _match_stems(gt_root: str, lq_root: str,
                 scale: int) -> tuple[dict[str, tuple[str, str]], list[str]]:
  """{stem: (gt, lq)} for the stems in both folders, and what did not match."""
  gt = {_stem_key(p, gt_root): p for p in FolderSource(gt_root).paths}
  lq, problems = {}, []
  for p in FolderSource(lq_root).paths:
    key = _stem_key(p, lq_root)
    if key not in gt and key.removesuffix(f'x{scale}') in gt:
      key = key.removesuffix(f'x{scale}')
    if key in lq:
      problems.append(f'{lq[key]} and {p}: two LQ images for one GT stem {key!r}')
    lq[key] = p
  problems += [f'{p}: no LQ image with this stem in {lq_root}' for k, p in gt.items()
               if k not in lq]
  problems += [f'{p}: no GT image with this stem in {gt_root}' for k, p in lq.items()
               if k not in gt]
  return {k: (gt[k], lq[k]) for k in sorted(gt.keys() & lq.keys())}, problems


class PairedFolderSource(ImageSource):
  """`gt/` and `lq/` folders matched by file stem (an LQ stem may end in `x{scale}`).

  Every pair's sizes are read from the headers at construction and must satisfy
  lq * scale == gt; mismatches and unmatched files are reported together, with paths and sizes.
  """

  def __init__(self, gt_root: str | os.PathLike, lq_root: str | os.PathLike, *, scale: int,
               channels: int = 3, on_bad_image: OnBadImage = 'skip'):
    super().__init__(channels=channels, on_bad_image=on_bad_image)
    self.scale = scale
    self.gt_root, self.lq_root = os.fspath(gt_root), os.fspath(lq_root)
    matched, problems = _match_stems(self.gt_root, self.lq_root, scale)
    self.pairs, self.keys = [], []
    for k, (gt, lq) in matched.items():
      try:
        (gh, gw), (lh, lw) = image_size(gt), image_size(lq)
      except images.ImageReadError as e:
        if on_bad_image == 'stop':
          problems.append(str(e))
        else:
          logging.warning('Leaving out a pair with an unreadable image: %s', e)
        continue
      if (lh * scale, lw * scale) != (gh, gw):
        problems.append(f'{gt} is {gh}x{gw} but {lq} is {lh}x{lw}; with scale {scale} the '
                        f'GT must be {lh * scale}x{lw * scale}')
        continue
      self.pairs.append((gt, lq))
      self.keys.append(k)
    if problems:
      raise ValueError(f'paired folders {self.gt_root} and {self.lq_root} (scale {scale}) do '
                       f'not match:{_listing(problems)}')
    if not self.pairs:
      raise ValueError(f'paired folders {self.gt_root} and {self.lq_root}: no readable pairs')

  def __len__(self) -> int:
    return len(self.pairs)

  def name(self, index: int) -> str:
    return ' + '.join(self.pairs[index])

  def key(self, index: int) -> str:
    return self.keys[index]

  def _read(self, index: int) -> Record:
    gt_path, lq_path = self.pairs[index]
    return {'gt': images.read_image(gt_path), 'lq': images.read_image(lq_path)}


class UnpairedSource:
  """HR target-domain images with real-LR source-domain images, indexed independently.

  Index i pairs HR `i // len(lr)` with LR `i % len(lr)`: a shuffled pass over the product visits
  every combination once, so the LR drawn for an HR image is independent of it. Each side keeps
  its own bad-image policy; `bad_images` adds both counts.
  """

  def __init__(self, hr: ImageSource, lr: ImageSource, *, scale: int):
    self.hr, self.lr, self.scale = hr, lr, scale

  def __len__(self) -> int:
    return len(self.hr) * len(self.lr)

  def name(self, index: int) -> str:
    return f'{self.hr.name(index // len(self.lr))} + {self.lr.name(index % len(self.lr))}'

  def __getitem__(self, index: int) -> Record:
    index = int(index) % len(self)
    hr, lr = self.hr[index // len(self.lr)], self.lr[index % len(self.lr)]
    return {'gt': hr['gt'], 'lq': lr['gt'],
            'bad_images': np.int32(hr['bad_images'] + lr['bad_images'])}


class TfdsSource(ImageSource):
  """A TFDS dataset in ArrayRecord format read with `tfds.data_source` (no TensorFlow needed).

  Images are taken as encoded bytes and decoded here (16-bit PNGs keep full precision), so the
  bad-image policy applies to them too. Needs the `[tfds]` extra.
  """

  def __init__(self, name: str, *, split: str = 'train', data_dir: str | os.PathLike | None = None,
               image_key: str = 'image', channels: int = 3, on_bad_image: OnBadImage = 'skip'):
    super().__init__(channels=channels, on_bad_image=on_bad_image)
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
    return {'gt': images.decode_image(self._source[index][self.image_key], self.name(index))}


def open_source(spec: str | os.PathLike, *, root: str | os.PathLike | None = None,
                channels: int = 3, on_bad_image: OnBadImage = 'skip',
                validate: bool = False) -> ImageSource:
  """A source from a config string: a folder, a meta-info `.txt` (with `root`), or `tfds:NAME`.

  `tfds:NAME[:SPLIT]` reads split SPLIT (default 'train') of NAME, from `root` as TFDS data_dir.
  """
  spec = os.fspath(spec)
  if spec.startswith('tfds:'):
    name, _, split = spec[len('tfds:'):].partition(':')
    return TfdsSource(name, split=split or 'train', data_dir=root, channels=channels,
                      on_bad_image=on_bad_image)
  if os.path.isfile(spec) and spec.lower().endswith('.txt'):
    if root is None:
      raise ValueError(f'{spec}: a meta-info list needs the root its paths are relative to')
    return MetaInfoSource(spec, root, channels=channels, on_bad_image=on_bad_image,
                          validate=validate)
  return FolderSource(spec, channels=channels, on_bad_image=on_bad_image, validate=validate)
