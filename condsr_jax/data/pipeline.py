"""grain transforms of training elements, and whole-image evaluation sets.

A training element is a source record `{array: HWC, ..., 'bad_images': int32}`; the transforms
flip, crop and convert the arrays they are given and leave the rest alone. `streams` chains them
into a stream's iterator. Every random draw comes from grain's per-element generator.
"""

import dataclasses
from typing import Any, Callable

import grain
import numpy as np

from condsr_jax import images
from condsr_jax.data import sources
from condsr_jax.data import transforms

ParamSampler = Callable[[np.random.Generator], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Augment(grain.transforms.RandomMap):
  """Identical random flips / transposes of the arrays `names`."""
  names: tuple[str, ...]
  hflip: bool = True
  vflip: bool = False
  rot90: bool = False

  def random_map(self, element, rng):
    flipped = transforms.augment([element[k] for k in self.names], rng, hflip=self.hflip,
                                 vflip=self.vflip, rot90=self.rot90)
    return {**element, **dict(zip(self.names, flipped))}


@dataclasses.dataclass(frozen=True)
class Crop(grain.transforms.RandomMap):
  """A `crop_size // factor` crop of each of `arrays` ((name, downscale factor) pairs).

  One array is cropped (reflect-101 padded when smaller) as Real-ESRGAN's dataset does; several
  are cut at one aligned place (`transforms.aligned_random_crop`).
  """
  arrays: tuple[tuple[str, int], ...]
  crop_size: int

  def random_map(self, element, rng):
    if len(self.arrays) == 1:
      (name, factor), = self.arrays
      return {**element, name: transforms.crop_or_pad(element[name], self.crop_size // factor,
                                                      rng)}
    names, factors = zip(*self.arrays)
    crops = transforms.aligned_random_crop([element[k] for k in names], factors, self.crop_size,
                                           rng)
    return {**element, **dict(zip(names, crops))}


def _to_float(img: np.ndarray) -> np.ndarray:
  return images.to_float(np.ascontiguousarray(img))


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
  """The arrays `names` to contiguous float32 in [0, 1] (uint8 and uint16 files alike)."""
  names: tuple[str, ...]

  def map(self, element):
    return {k: _to_float(v) if k in self.names else v for k, v in element.items()}


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


@dataclasses.dataclass(frozen=True)
class LoadWhole(grain.transforms.Map):
  """Index -> `{array: whole float32 image, ..., 'key'}`, cropped bottom/right to a multiple."""
  source: sources.ImageSource
  multiple_of: int = 1

  def map(self, element):
    index = int(element)
    m = self.multiple_of
    out = {k: _to_float(v[:v.shape[0] - v.shape[0] % m, :v.shape[1] - v.shape[1] % m])
           for k, v in self.source.load(index).items()}
    out['key'] = self.source.key(index)
    return out


def make_eval_dataset(source: sources.ImageSource, *, multiple_of: int = 1) -> grain.MapDataset:
  """Deterministic whole images in source order; unreadable files raise (no substitution).

  Elements are `{array: HWC float32, ..., 'key'}`. `multiple_of` crops the images of a
  single-array source bottom/right to a multiple (the scale LR will be synthesized at); an
  aligned source's sizes are fixed by its files. Random access (`ds[i]`, `len(ds)`); to read
  ahead, use `ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))`.
  """
  if len(source.array_names) > 1 and multiple_of != 1:
    raise ValueError(f'the sizes of aligned arrays {source.array_names} are fixed by the files; '
                     'multiple_of must be 1')
  return grain.MapDataset.range(len(source)).map(LoadWhole(source, multiple_of))
