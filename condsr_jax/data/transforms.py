"""Per-example crops, pads and flips (numpy), driven by the grain-provided `np.random.Generator`.

They return views where they can (flips, crops); the pipeline's float conversion makes the one
copy. Shapes are HWC.
"""

import math
from typing import Sequence

import numpy as np


def pad_bottom_right(img: np.ndarray, height: int, width: int,
                     mode: str = 'reflect') -> np.ndarray:
  """Pads the bottom/right up to at least (height, width).

  mode 'reflect' is OpenCV's BORDER_REFLECT_101 (edge not repeated; Real-ESRGAN's dataset),
  'symmetric' is BORDER_REFLECT (edge repeated), which commutes with integer-factor
  downsampling by kernels centred on the factor x factor blocks (area, bicubic) and so keeps
  aligned arrays aligned.
  """
  pad_h, pad_w = max(0, height - img.shape[0]), max(0, width - img.shape[1])
  if not pad_h and not pad_w:
    return img
  return np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly placed size x size crop of an image at least that large."""
  top = int(rng.integers(0, img.shape[0] - size + 1))
  left = int(rng.integers(0, img.shape[1] - size + 1))
  return img[top:top + size, left:left + size]


def crop_or_pad(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Real-ESRGAN's crop_pad: reflect-101 pad bottom/right when smaller, then a random crop."""
  return random_crop(pad_bottom_right(img, size, size), size, rng)


def aligned_random_crop(imgs: Sequence[np.ndarray], factors: Sequence[int], crop_size: int,
                        rng: np.random.Generator) -> list[np.ndarray]:
  """Crops of one scene seen at downscale `factors`: `crop_size // f` of each, at one place.

  The place lies on the grid of every factor (the coarsest array's pixels when the factors divide
  the largest), so each array is cut at an integer pixel. Images smaller than the crop are first
  padded symmetrically (bottom/right), which keeps them aligned.
  """
  grid = math.lcm(*factors)
  if crop_size % grid:
    raise ValueError(f'the crop {crop_size} is not a multiple of every factor {tuple(factors)}')
  scene = {(img.shape[0] * f, img.shape[1] * f) for img, f in zip(imgs, factors)}
  if len(scene) != 1:
    shapes = ', '.join(f'{img.shape[:2]} at x{f}' for img, f in zip(imgs, factors))
    raise ValueError(f'the images are not one scene at their factors: {shapes}')
  (height, width), = scene
  height, width = max(height, crop_size), max(width, crop_size)
  top = int(rng.integers(0, (height - crop_size) // grid + 1)) * grid
  left = int(rng.integers(0, (width - crop_size) // grid + 1)) * grid
  crops = []
  for img, f in zip(imgs, factors):
    img = pad_bottom_right(img, height // f, width // f, mode='symmetric')
    crops.append(img[top // f:(top + crop_size) // f, left // f:(left + crop_size) // f])
  return crops


def augment(imgs: Sequence[np.ndarray], rng: np.random.Generator, *, hflip: bool = True,
            vflip: bool = False, rot90: bool = False) -> list[np.ndarray]:
  """The same random flips of every image (BasicSR `augment`): each enabled one with p 0.5.

  rot90 is a transpose of H and W, as in BasicSR; with both flips it covers all 8 symmetries.
  """
  do_h = hflip and rng.random() < 0.5
  do_v = vflip and rng.random() < 0.5
  do_t = rot90 and rng.random() < 0.5
  out = []
  for img in imgs:
    if do_h:
      img = img[:, ::-1]
    if do_v:
      img = img[::-1]
    if do_t:
      img = img.transpose(1, 0, 2)
    out.append(img)
  return out
