"""MATLAB `imresize` (bicubic, antialiased downscaling) as in BasicSR's `matlab_functions.imresize`:
the resize of classic bicubic-LR benchmarks and of NIQE's second scale."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax.degrade.resize import apply_resize_matrices


def _cubic(x: np.ndarray) -> np.ndarray:
  """MATLAB's cubic kernel (Keys, A = -0.5)."""
  ax = np.abs(x)
  near = (1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
  far = (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
  return near + far


def matlab_resize_matrix(in_size: int, scale: float, antialiasing: bool = True) -> np.ndarray:
  """[ceil(in_size * scale), in_size] float64 weights of MATLAB's bicubic `imresize` on one axis.

  Source coordinate u = x / scale + (1 - 1 / scale) / 2 (1-based); on downscaling with
  antialiasing the kernel widens to 4 / scale and becomes scale * cubic(scale * d); weights are
  normalised per output; the border extends symmetrically (mirror including the edge sample).
  """
  out_size = math.ceil(in_size * scale)
  widen = scale < 1 and antialiasing
  width = 4.0 / scale if widen else 4.0
  u = np.arange(1, out_size + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
  dist = u[:, None] - taps
  weights = scale * _cubic(dist * scale) if widen else _cubic(dist)
  weights /= weights.sum(axis=1, keepdims=True)
  src = (taps.astype(np.int64) - 1) % (2 * in_size)
  src = np.where(src >= in_size, 2 * in_size - 1 - src, src)
  mat = np.zeros((out_size, in_size))
  np.add.at(mat, (np.repeat(np.arange(out_size), taps.shape[1]), src.ravel()), weights.ravel())
  return mat


@functools.partial(jax.jit, static_argnames=('scale', 'antialiasing'))
def imresize_matlab(img: jax.Array, scale: float, antialiasing: bool = True) -> jax.Array:
  """BasicSR `imresize`: MATLAB bicubic resize of [B, H, W, C] or [H, W, C] by `scale`.

  Output size is ceil(H * scale) x ceil(W * scale); values are not rounded or clipped.
  """
  img = jnp.asarray(img, jnp.float32)
  batched = img.ndim == 4
  x = img if batched else img[None]
  mh = jnp.asarray(matlab_resize_matrix(x.shape[1], scale, antialiasing), jnp.float32)
  mw = jnp.asarray(matlab_resize_matrix(x.shape[2], scale, antialiasing), jnp.float32)
  y = apply_resize_matrices(x, mh, mw)
  return y if batched else y[0]
