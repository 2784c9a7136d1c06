"""Colour conversions used by the degradations."""

from typing import Sequence

import jax
import numpy as np


def rgb_to_gray(img: jax.Array) -> jax.Array:
  """torchvision `rgb_to_grayscale`: 0.2989 R + 0.587 G + 0.114 B, keeping a channel axis of 1."""
  r, g, b = img[..., 0:1], img[..., 1:2], img[..., 2:3]
  return 0.2989 * r + 0.587 * g + 0.114 * b


def mix_planes(planes: Sequence[jax.Array], matrix: np.ndarray) -> list[jax.Array]:
  """out[j] = sum_i matrix[j, i] planes[i] for a small constant matrix (colour transforms).

  Elementwise sums over separate planes: XLA fuses them into loops, where a dot over a
  three-element channel axis runs as a slow matrix product (JPEG's transforms: 15x faster).
  """
  out = []
  for row in np.asarray(matrix, np.float32):
    total = planes[0] * row[0]
    for plane, m in zip(planes[1:], row[1:]):
      total = total + plane * m
    out.append(total)
  return out
