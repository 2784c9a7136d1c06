"""Per-example crops, pads and flips (numpy), driven by the grain-provided `np.random.Generator`.

They return views where they can (flips, crops); the pipeline's float conversion makes the one
copy. Shapes are HWC.
"""

from typing import Sequence

import numpy as np


def pad_bottom_right(img: np.ndarray, height: int, width: int,
                     mode: str = 'reflect') -> np.ndarray:
  """Pads the bottom/right up to at least (height, width).

  mode 'reflect' is OpenCV's BORDER_REFLECT_101 (edge not repeated; Real-ESRGAN's dataset),
  'symmetric' is BORDER_REFLECT (edge repeated), which commutes with integer-factor
  downsampling and so keeps a GT/LQ pair aligned.
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


def paired_random_crop(gt: np.ndarray, lq: np.ndarray, gt_size: int, scale: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Aligned crops: lq (gt_size // scale)^2 at a random place, gt gt_size^2 at scale x that place.

  A pair smaller than the crop is first padded symmetrically (bottom/right), consistently.
  """
  if gt_size % scale:
    raise ValueError(f'the GT crop {gt_size} is not a multiple of the scale {scale}')
  if gt.shape[:2] != (lq.shape[0] * scale, lq.shape[1] * scale):
    raise ValueError(f'GT {gt.shape[:2]} is not {scale} x LQ {lq.shape[:2]}')
  lq_size = gt_size // scale
  lq = pad_bottom_right(lq, lq_size, lq_size, mode='symmetric')
  gt = pad_bottom_right(gt, lq.shape[0] * scale, lq.shape[1] * scale, mode='symmetric')
  top = int(rng.integers(0, lq.shape[0] - lq_size + 1))
  left = int(rng.integers(0, lq.shape[1] - lq_size + 1))
  gt_crop = gt[top * scale:(top + lq_size) * scale, left * scale:(left + lq_size) * scale]
  return gt_crop, lq[top:top + lq_size, left:left + lq_size]


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
