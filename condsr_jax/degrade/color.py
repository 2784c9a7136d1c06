"""Colour conversions used by the degradations."""

import jax


def rgb_to_gray(img: jax.Array) -> jax.Array:
  """torchvision `rgb_to_grayscale`: 0.2989 R + 0.587 G + 0.114 B, keeping a channel axis of 1."""
  r, g, b = img[..., 0:1], img[..., 1:2], img[..., 2:3]
  return 0.2989 * r + 0.587 * g + 0.114 * b
