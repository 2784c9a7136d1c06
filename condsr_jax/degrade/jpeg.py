"""BasicSR's `DiffJPEG`: JPEG compression simulated in float arithmetic (rounded or differentiable).

Blocks are independent, so compressing a zero-filled canvas whose size is a multiple of 16 gives,
on its valid region, the same result as compressing the valid region alone: variable-size images
compress on a fixed canvas without recompiling.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax.degrade import color

ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST

# Standard JPEG quantisation tables, transposed as in BasicSR (index [u, v], u the row frequency).
_Y_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32).T
_C_TABLE = np.full((8, 8), 99, np.float32)
_C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99],
                             [47, 66, 99, 99]], np.float32).T

# JFIF colour transforms (rows give Y, Cb, Cr and R, G, B).
_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                        [0.5, -0.418688, -0.081312]], np.float32)
_YCC_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]],
                       np.float32)
_YCC_SHIFT = np.array([0.0, 128.0, 128.0], np.float32)

# 8-point DCT basis cos((2x + 1) u pi / 16) [x, u] and the orthonormal scale.
_COS = np.cos((2 * np.arange(8)[:, None] + 1) * np.arange(8)[None, :] * np.pi / 16).astype(
    np.float32)
_ALPHA = np.array([1 / np.sqrt(2)] + [1.0] * 7)
_DCT_SCALE = (np.outer(_ALPHA, _ALPHA) * 0.25).astype(np.float32)
_IDCT_ALPHA = np.outer(_ALPHA, _ALPHA).astype(np.float32)


def quality_to_factor(quality: ArrayLike) -> jax.Array:
  """libjpeg's quality scaling without rounding: 50 / q below 50, else 2 - q / 50.

  A Python number is converted in float64 (as BasicSR does for a scalar quality), an array in
  float32 in the reference's order of operations (5000 / q / 100, (200 - 2 q) / 100).
  """
  if isinstance(quality, (int, float)):
    factor = 5000.0 / quality if quality < 50 else 200.0 - quality * 2
    return jnp.float32(factor / 100.0)
  q = jnp.asarray(quality, jnp.float32)
  return jnp.where(q < 50, 5000.0 / q, 200.0 - q * 2) / 100.0


def _diff_round(x: jax.Array) -> jax.Array:
  r = jnp.round(x)
  return r + (x - r) ** 3


def _to_blocks(plane: jax.Array) -> jax.Array:
  b, h, w = plane.shape
  return plane.reshape(b, h // 8, 8, w // 8, 8)


def _from_blocks(blocks: jax.Array) -> jax.Array:
  b, nh, _, nw, _ = blocks.shape
  return blocks.reshape(b, nh * 8, nw * 8)


def _code_plane(plane: jax.Array, table: jax.Array, rounding) -> jax.Array:
  """DCT, quantise with `table` [B, 8, 8], round, dequantise and inverse DCT of one plane."""
  blocks = _to_blocks(plane) - 128.0
  coef = jnp.einsum('bixjy,xu,yv->biujv', blocks, _COS, _COS, precision=_HIGHEST)
  coef = coef * _DCT_SCALE[None, None, :, None, :]
  t = table[:, None, :, None, :]
  coef = rounding(coef / t) * t
  coef = coef * _IDCT_ALPHA[None, None, :, None, :]
  spatial = 0.25 * jnp.einsum('biujv,xu,yv->bixjy', coef, _COS, _COS, precision=_HIGHEST)
  return _from_blocks(spatial + 128.0)


def _subsample(plane: jax.Array) -> jax.Array:
  """4:2:0 chroma: the mean of each 2x2 block of [B, H, W] (`F.avg_pool2d(2)`), as adds."""
  return (plane[:, 0::2, 0::2] + plane[:, 0::2, 1::2] + plane[:, 1::2, 0::2]
          + plane[:, 1::2, 1::2]) / 4.0


def _upsample(plane: jax.Array) -> jax.Array:
  """Nearest 2x upsampling of [B, H, W]."""
  return jnp.repeat(jnp.repeat(plane, 2, axis=1), 2, axis=2)


def diff_jpeg(img: jax.Array, quality: ArrayLike, differentiable: bool = False) -> jax.Array:
  """BasicSR `DiffJPEG(differentiable)(img, quality)` on RGB [B, H, W, 3] in [0, 1].

  Zero-pads H, W to multiples of 16; x255 (no rounding); JFIF RGB -> YCbCr; 4:2:0 chroma by 2x2
  averaging; 8x8 DCT of blocks - 128; quantisation by the transposed standard tables times
  `quality_to_factor(quality)` (not rounded or clamped); round half to even (or the cubic
  `round(x) + (x - round(x))^3` when `differentiable`); dequantise; IDCT + 128; nearest chroma
  upsampling; YCbCr -> RGB; clamp to [0, 255]; /255 (not rounded); crop.

  Args:
    img: [B, H, W, 3].
    quality: a number for the whole batch, or a float array [B] of per-image qualities.
    differentiable: use the cubic rounding approximation, whose gradient is non-zero.
  """
  return _compress(img, quality_to_factor(quality), differentiable)


@functools.partial(jax.jit, static_argnames=('differentiable',))
def _compress(img: jax.Array, factor: jax.Array, differentiable: bool) -> jax.Array:
  b, h, w, _ = img.shape
  x = jnp.pad(img, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0))) * 255.0
  factor = jnp.broadcast_to(factor, (b,))[:, None, None]
  rounding = _diff_round if differentiable else jnp.round
  y, cb, cr = (p + s for p, s in zip(
      color.mix_planes([x[..., i] for i in range(3)], _RGB_TO_YCC), _YCC_SHIFT))
  y = _code_plane(y, _Y_TABLE * factor, rounding)
  cb, cr = (_upsample(_code_plane(_subsample(p), _C_TABLE * factor, rounding)) - s
            for p, s in ((cb, _YCC_SHIFT[1]), (cr, _YCC_SHIFT[2])))
  rgb = jnp.stack(color.mix_planes([y, cb, cr], _YCC_TO_RGB), axis=-1)
  return (jnp.clip(rgb, 0.0, 255.0) / 255.0)[:, :h, :w]
