"""One-level orthonormal Haar DWT (`pytorch_wavelets.DWTForward(J=1, wave='haar', mode='reflect')`)
as a stride-2 depthwise convolution with fixed 2x2 filters."""

import jax
import jax.numpy as jnp
import numpy as np

# Filters over a 2x2 block [[a, b], [c, d]]: LL, LH (top - bottom), HL (left - right), HH.
_HAAR = 0.5 * np.array([
    [[1, 1], [1, 1]],
    [[1, 1], [-1, -1]],
    [[1, -1], [1, -1]],
    [[1, -1], [-1, 1]],
], np.float32)


@jax.jit
def haar_dwt(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
  """Haar DWT of [B, H, W, C]: returns LL and (LH, HL, HH), each [B, ceil(H/2), ceil(W/2), C].

  LL = (a+b+c+d)/2, LH = (a+b-c-d)/2, HL = (a-b+c-d)/2, HH = (a-b-c+d)/2 for each 2x2 block
  [[a, b], [c, d]]; an odd H or W gets one reflected row / column (x[N] = x[N-2]) appended.
  """
  b, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='reflect')
  rhs = jnp.asarray(np.tile(_HAAR.transpose(1, 2, 0)[:, :, None, :], (1, 1, 1, c)), x.dtype)
  out = jax.lax.conv_general_dilated(
      x, rhs, window_strides=(2, 2), padding='VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)
  out = out.reshape(b, out.shape[1], out.shape[2], c, 4)
  return out[..., 0], (out[..., 1], out[..., 2], out[..., 3])
