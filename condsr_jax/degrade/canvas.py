"""Ops on canvases: images in the top-left `valid` x `valid` square of a square array.

Random resize scales change image sizes; a pipeline on static shapes keeps each image on a
fixed canvas (the largest size a stage can produce) and passes the valid sizes along, so one
compilation serves every draw.
"""

import functools

import jax
import jax.numpy as jnp

from condsr_jax.degrade import jpeg, resize

ArrayLike = jax.typing.ArrayLike


def valid_mask(valid: ArrayLike, size: int) -> jax.Array:
  """[B, size, size, 1] float32, 1 inside each image's top-left valid square."""
  inside = jnp.arange(size)[None, :] < jnp.asarray(valid, jnp.int32)[:, None]
  return (inside[:, :, None] & inside[:, None, :]).astype(jnp.float32)[..., None]


def resize_matrices(in_size: int, out_size: int, mode: ArrayLike, *,
                    scale: ArrayLike | None = None, in_valid: ArrayLike | None = None,
                    out_valid: ArrayLike | None = None) -> jax.Array:
  """[B, out_size, in_size] `resize.resize_matrix` per image, with a per-image mode index.

  `mode` [B] indexes `resize.MODES`; `scale`, `in_valid`, `out_valid` are [B] arrays or None (as
  in `resize_matrix`: a scale maps coordinates like `scale_factor=`, None like `size=`).
  """
  mode = jnp.asarray(mode, jnp.int32)
  b = mode.shape[0]
  fill = lambda v, d: jnp.broadcast_to(jnp.asarray(d if v is None else v), (b,))
  args = (mode, fill(scale, 1.0), fill(in_valid, in_size), fill(out_valid, out_size))

  def one(m, s, n, o):
    mats = [resize.resize_matrix(in_size, out_size, name, scale=None if scale is None else s,
                                 in_valid=n, out_valid=o) for name in resize.MODES]
    return jnp.stack(mats)[m]

  return jax.vmap(one)(*args)


@functools.partial(jax.jit, static_argnames=('out_size',))
def resize_on_canvas(img: jax.Array, out_size: int, mode: ArrayLike, *,
                     scale: ArrayLike | None = None, in_valid: ArrayLike | None = None,
                     out_valid: ArrayLike | None = None) -> jax.Array:
  """`F.interpolate` of each image's valid region into an `out_size` canvas (zero outside)."""
  h = img.shape[1]
  mat = resize_matrices(h, out_size, mode, scale=scale, in_valid=in_valid, out_valid=out_valid)
  return resize.apply_resize_matrices(img, mat, mat)


@jax.jit
def jpeg_on_canvas(img: jax.Array, quality: ArrayLike, valid: ArrayLike | None = None
                   ) -> jax.Array:
  """`diff_jpeg` of each clamped valid region (the zeroed rest of the canvas acts as
  DiffJPEG's zero padding to a multiple of 16, so the valid region compresses exactly)."""
  img = jnp.clip(img, 0.0, 1.0)
  if valid is None:
    return jpeg.diff_jpeg(img, quality)
  mask = valid_mask(valid, img.shape[1])
  return jpeg.diff_jpeg(img * mask, quality) * mask


@functools.partial(jax.jit, static_argnames=('size',))
def crop_batch(img: jax.Array, top: ArrayLike, left: ArrayLike, size: int) -> jax.Array:
  """Per-image `size` x `size` crops at (top [B], left [B])."""
  def one(x, t, l):
    return jax.lax.dynamic_slice(x, (t, l, 0), (size, size, x.shape[-1]))
  return jax.vmap(one)(img, jnp.asarray(top, jnp.int32), jnp.asarray(left, jnp.int32))
