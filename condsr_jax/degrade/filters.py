"""BasicSR's `filter2D` (reflect-padded depthwise correlation) and `USMSharp` unsharp masking."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.typing.ArrayLike

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.jit
def filter2d(img: jax.Array, kernel: ArrayLike) -> jax.Array:
  """BasicSR `filter2D`: reflect-101 padding by k//2, then cross-correlation of every channel.

  Args:
    img: [B, H, W, C]; H and W must exceed k//2.
    kernel: [k, k] or [1, k, k] (one kernel for all images) or [B, k, k] (one per image); odd k.
  Returns:
    [B, H, W, C] filtered images (no kernel flip, as `F.conv2d`).
  """
  b, h, w, c = img.shape
  kernel = jnp.asarray(kernel, img.dtype)
  if kernel.ndim == 2:
    kernel = kernel[None]
  k = kernel.shape[-1]
  if k % 2 != 1 or kernel.shape[-2] != k:
    raise ValueError(f'filter2d needs square odd kernels, got {kernel.shape}')
  p = k // 2
  x = jnp.pad(img, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding='VALID',
                           dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_HIGHEST)
  if kernel.shape[0] == 1:
    rhs = jnp.broadcast_to(kernel[0][:, :, None, None], (k, k, 1, c))
    return conv(x, rhs, feature_group_count=c)
  if kernel.shape[0] != b:
    raise ValueError(f'{kernel.shape[0]} kernels for a batch of {b}')
  # One group per (image, channel): fold the batch into the channels.
  x = x.transpose(1, 2, 0, 3).reshape(1, h + 2 * p, w + 2 * p, b * c)
  rhs = jnp.repeat(kernel, c, axis=0).transpose(1, 2, 0)[:, :, None, :]
  out = conv(x, rhs, feature_group_count=b * c)
  return out.reshape(h, w, b, c).transpose(2, 0, 1, 3)


def _separable_filter(img: jax.Array, taps: np.ndarray) -> jax.Array:
  """`filter2d(img, outer(taps, taps))` as a vertical then a horizontal 1-D pass."""
  k, c = taps.size, img.shape[-1]
  p = k // 2
  x = jnp.pad(img, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
  taps = jnp.asarray(taps, img.dtype)
  for shape in ((k, 1, 1, c), (1, k, 1, c)):
    rhs = jnp.broadcast_to(taps.reshape(shape[:2] + (1, 1)), shape)
    x = jax.lax.conv_general_dilated(
        x, rhs, window_strides=(1, 1), padding='VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c, precision=_HIGHEST)
  return x


@functools.partial(jax.jit, static_argnames=('radius',))
def usm_sharp(img: jax.Array, weight: float = 0.5, threshold: float = 10,
              radius: int = 50) -> jax.Array:
  """BasicSR `USMSharp` (radius 50 -> 51x51 Gaussian with sigma 8): unsharp masking with a soft
  mask of the pixels whose residual exceeds `threshold`/255.

  blur = `filter2d` with the outer product of `cv2.getGaussianKernel(radius | 1, 0)`, computed
  as two 1-D passes; residual = img - blur(img); sharp = clip(img + weight * residual, 0, 1);
  soft = blur(|residual| * 255 > threshold); out = soft * sharp + (1 - soft) * img.
  """
  taps = cv2.getGaussianKernel(radius + 1 if radius % 2 == 0 else radius, 0)[:, 0]
  residual = img - _separable_filter(img, taps)
  mask = (jnp.abs(residual) * 255 > threshold).astype(img.dtype)
  soft = _separable_filter(mask, taps)
  sharp = jnp.clip(img + weight * residual, 0, 1)
  return soft * sharp + (1 - soft) * img
