"""Packs image folders into a local TFDS dataset (ArrayRecord files), with no TensorFlow or network.

Many small files become a few large ones (good for network file systems and GCS); read the
result with `sources.TfdsSource('condsr_images/NAME', split=..., data_dir=...)`. Files are
stored as they are (PNG/JPEG bytes, 16-bit kept) after a decode check, in sorted order.
Needs the `[tfds]` extra; `tfds build` is not used because it requires TensorFlow.
"""

import os
import pathlib
from typing import Mapping

from absl import logging
import tensorflow_datasets as tfds

from condsr_jax import images

BUILDER_NAME = 'condsr_images'


class CondsrImages(tfds.core.GeneratorBasedBuilder):
  """Encoded images and their relative paths; each packed dataset is one builder config."""

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, folders: Mapping[str, str] | None = None, on_bad_image: str = 'stop',
               **kwargs):
    self._folders = dict(folders or {})
    self._on_bad_image = on_bad_image
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, None)),
        'name': tfds.features.Text(),
    })
    return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(folder) for split, folder in self._folders.items()}

  def _generate_examples(self, folder: str):
    for path in images.list_images(folder):
      data = pathlib.Path(path).read_bytes()
      try:
        images.decode_image(data, path)
      except images.ImageReadError as e:
        if self._on_bad_image == 'stop':
          raise
        logging.warning('Leaving out an unreadable image: %s', e)
        continue
      name = pathlib.Path(os.path.relpath(path, folder)).as_posix()
      yield name, {'image': data, 'name': name}


def pack_image_folders(folders: Mapping[str, str | os.PathLike], data_dir: str | os.PathLike, *,
                       name: str, on_bad_image: str = 'stop') -> str:
  """Packs `{split: folder}` into `data_dir`; returns the TFDS name `condsr_images/NAME`.

  on_bad_image: 'stop' raises on the first undecodable file, 'skip' leaves it out with a warning.
  """
  if on_bad_image not in ('skip', 'stop'):
    raise ValueError(f"on_bad_image must be 'skip' or 'stop', got {on_bad_image!r}")
  for split, folder in folders.items():
    if not images.list_images(folder):
      raise ValueError(f'{os.fspath(folder)}: no image files found for split {split!r}')
  builder = CondsrImages(
      folders={s: os.fspath(f) for s, f in folders.items()}, on_bad_image=on_bad_image,
      config=tfds.core.BuilderConfig(name=name), data_dir=os.fspath(data_dir),
      file_format='array_record')
  builder.download_and_prepare()
  return f'{BUILDER_NAME}/{name}'
