"""PyTorch `F.interpolate` (area / bilinear / bicubic, align_corners=False, no antialias) as
separable interpolation matrices.

`resize_matrix` builds the [out, in] weights of one axis with jnp ops only, so the coordinate
scale and the valid input/output extents may be traced. Random resizes then run without
recompiling on fixed canvases:

    # x: [B, H, W, C] static; s: traced scale; oh = floor(H * s), ow = floor(W * s), computed on
    # the host in float64 like PyTorch and passed as arrays; canvas (CH, CW) >= the largest size.
    mh = resize_matrix(H, CH, 'bicubic', scale=s, out_valid=oh)
    mw = resize_matrix(W, CW, 'bicubic', scale=s, out_valid=ow)
    y = apply_resize_matrices(x, mh, mw)  # [B, CH, CW, C]; y[:, :oh, :ow] == interpolate(x, s)

Rows past `out_valid` are zero; taps never read past `in_valid` (border indices clamp there), so
a resized canvas can be resized again with `in_valid` set to its valid extent. For a different
scale per sample, `jax.vmap` the builder: [B, out, in] matrices apply per image.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

ArrayLike = jax.typing.ArrayLike

MODES = ('area', 'bilinear', 'bicubic')
_CUBIC_A = -0.75
_HIGHEST = jax.lax.Precision.HIGHEST


def _cubic_weights(t: jax.Array) -> tuple[jax.Array, ...]:
  """Keys cubic convolution weights (A = -0.75) of taps -1, 0, 1, 2 at fractional offset t."""
  a = _CUBIC_A

  def near(d):  # |d| <= 1
    return ((a + 2) * d - (a + 3)) * d * d + 1

  def far(d):  # 1 < |d| < 2
    return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

  return far(t + 1), near(t), near(1 - t), far(2 - t)


def _taps_to_matrix(indices: tuple[jax.Array, ...], weights: tuple[jax.Array, ...], in_size: int,
                    in_valid: jax.Array) -> jax.Array:
  """Sums one-hot rows of the taps' (border-clamped) source indices times their weights."""
  cols = jnp.arange(in_size)
  m = 0.0
  for idx, wt in zip(indices, weights):
    idx = jnp.clip(idx, 0, in_valid - 1)
    m = m + wt[:, None] * (idx[:, None] == cols[None, :])
  return m


def resize_matrix(in_size: int, out_size: int, mode: str, *, scale: ArrayLike | None = None,
                  in_valid: ArrayLike | None = None,
                  out_valid: ArrayLike | None = None) -> jax.Array:
  """[out_size, in_size] float32 weights of a 1-D `F.interpolate` along one axis.

  Args:
    in_size, out_size: static array extents (canvas sizes).
    mode: 'area' (adaptive average pooling bins [floor(i*n/m), ceil((i+1)*n/m)) ), 'bilinear'
      (source index clamped at 0; an axis whose size does not change is copied, as PyTorch's
      CPU kernel does whatever the scale) or 'bicubic' (A = -0.75, border indices clamped).
    scale: the `scale_factor` s of the call; source = (dst + 0.5) / s - 0.5. None maps with
      in_valid / out_valid, as `size=` does. 'area' always uses the sizes.
    in_valid, out_valid: valid extents (may be traced), default the full sizes.
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  n = jnp.asarray(in_size if in_valid is None else in_valid, jnp.int32)
  m = jnp.asarray(out_size if out_valid is None else out_valid, jnp.int32)
  o = jnp.arange(out_size, dtype=jnp.int32)
  if mode == 'area':
    start = (o * n) // m
    end = ((o + 1) * n + m - 1) // m
    cols = jnp.arange(in_size)[None, :]
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    mat = inside / jnp.maximum(end - start, 1)[:, None].astype(jnp.float32)
  else:
    if scale is None:
      ratio = n.astype(jnp.float32) / m.astype(jnp.float32)
    elif isinstance(scale, (int, float)):
      ratio = jnp.float32(1.0 / scale)
    else:
      ratio = 1.0 / jnp.asarray(scale, jnp.float32)
    src = ratio * (o.astype(jnp.float32) + 0.5) - 0.5
    if mode == 'bilinear':
      src = jnp.maximum(src, 0.0)
      i0 = jnp.floor(src)
      lam = src - i0
      i0 = i0.astype(jnp.int32)
      mat = _taps_to_matrix((i0, i0 + 1), (1 - lam, lam), in_size, n)
      identity = (o[:, None] == jnp.arange(in_size)[None, :]).astype(jnp.float32)
      mat = jnp.where(n == m, identity, mat)
    else:
      i0 = jnp.floor(src)
      t = src - i0
      i0 = i0.astype(jnp.int32)
      mat = _taps_to_matrix((i0 - 1, i0, i0 + 1, i0 + 2), _cubic_weights(t), in_size, n)
  return jnp.where((o < m)[:, None], mat, 0.0).astype(jnp.float32)


@jax.jit
def apply_resize_matrices(x: jax.Array, mh: jax.Array, mw: jax.Array) -> jax.Array:
  """Resizes [B, H, W, C] with row matrix mh [OH, H] and column matrix mw [OW, W] (or per-image
  [B, OH, H] / [B, OW, W])."""
  eq_h = 'boh,bhwc->bowc' if mh.ndim == 3 else 'oh,bhwc->bowc'
  eq_w = 'bpw,bowc->bopc' if mw.ndim == 3 else 'pw,bowc->bopc'
  y = jnp.einsum(eq_h, mh.astype(x.dtype), x, precision=_HIGHEST)
  return jnp.einsum(eq_w, mw.astype(x.dtype), y, precision=_HIGHEST)


def scaled_size(size: int, scale: float) -> int:
  """Output extent of `F.interpolate(scale_factor=scale)`: floor(size * scale) in float64."""
  return int(math.floor(size * scale))


def interpolate(x: jax.Array, size: Sequence[int] | None = None,
                scale_factor: float | Sequence[float] | None = None,
                mode: str = 'bilinear') -> jax.Array:
  """`F.interpolate(x, size, scale_factor, mode)` on NHWC with PyTorch's defaults.

  align_corners=False, antialias=False, recompute_scale_factor=None: with `scale_factor` the
  output is floor(in * s) and coordinates map with s itself; with `size` they map with in / out.
  Sizes and scales are static; see `resize_matrix` for traced ones.
  """
  _, h, w, _ = x.shape
  if (size is None) == (scale_factor is None):
    raise ValueError('give exactly one of size and scale_factor')
  if size is not None:
    out_size, scales = (int(size[0]), int(size[1])), (None, None)
  else:
    scales = tuple(scale_factor) if isinstance(scale_factor, Sequence) else (scale_factor,) * 2
    scales = (float(scales[0]), float(scales[1]))
    out_size = (scaled_size(h, scales[0]), scaled_size(w, scales[1]))
  return _interpolate(x, out_size, scales, mode)


@functools.partial(jax.jit, static_argnames=('out_size', 'scales', 'mode'))
def _interpolate(x: jax.Array, out_size: tuple[int, int], scales: tuple[float | None, ...],
                 mode: str) -> jax.Array:
  mh = resize_matrix(x.shape[1], out_size[0], mode, scale=scales[0])
  mw = resize_matrix(x.shape[2], out_size[1], mode, scale=scales[1])
  return apply_resize_matrices(x, mh, mw)
