"""Frequency separation of FSSR / DSGAN (Fritsche et al., ICCVW 2019) and DASR-Wei's DSN and SRN
(Wei et al., CVPR 2021): low- and high-pass filters and the Haar-wavelet bands their losses and
discriminators read, on NHWC images in [0, 1] with any number of channels.

The colour losses compare low-passed images; the discriminators see high-passed ones, mapped
around 0.5 (`0.5 + 0.5 high`) so that they stay in about [0, 1].
"""

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax.degrade import wavelet

LOW_PASS_KINDS = ('gau', 'avg')
WAVELET_MODES = ('cat', 'sum')


def gaussian_kernel(k: int) -> np.ndarray:
  """The official `GaussianFilter` weights: a [k, k] Gaussian of sigma k / 6 centred at
  (k - 1) / 2, normalised to sum 1."""
  offsets = np.arange(k) - (k - 1) / 2
  sigma = k / 6
  g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


def _gaussian_blur(x: jax.Array, k: int, pad: int) -> jax.Array:
  """Depthwise correlation with `gaussian_kernel(k)` after zero padding by `pad` (the official
  conv pads with zeros, so the borders darken)."""
  c = x.shape[-1]
  rhs = jnp.broadcast_to(jnp.asarray(gaussian_kernel(k), x.dtype)[:, :, None, None], (k, k, 1, c))
  return jax.lax.conv_general_dilated(
      x, rhs, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=c, precision=jax.lax.Precision.HIGHEST)


def _box_blur(x: jax.Array, k: int, pad: int, include_pad: bool) -> jax.Array:
  """`nn.AvgPool2d(k, 1, pad, count_include_pad=include_pad)`: the mean over each k x k window
  of the zero-padded image, divided by k^2 or by the number of image pixels in the window."""
  window, strides = (1, k, k, 1), (1, 1, 1, 1)
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  if include_pad or pad == 0:
    return total / (k * k)
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  return total / jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)


def filter_low(x: jax.Array, kind: str = 'gau', k: int = 5, padding: bool = True,
               include_pad: bool = True) -> jax.Array:
  """Official `FilterLow`: a k x k Gaussian ('gau') or box ('avg') low-pass of [B, H, W, C].

  With `padding` the size is kept (zero padding by (k - 1) / 2; `include_pad` is the box
  filter's `count_include_pad`); without, the output shrinks by k - 1, as the colour loss uses it.
  """
  if kind not in LOW_PASS_KINDS:
    raise ValueError(f'unknown low-pass kind {kind!r}; known: {", ".join(LOW_PASS_KINDS)}')
  if k % 2 != 1:
    raise ValueError(f'the low-pass kernel size must be odd, got {k}')
  pad = (k - 1) // 2 if padding else 0
  if kind == 'gau':
    return _gaussian_blur(x, k, pad)
  return _box_blur(x, k, pad, include_pad)


def filter_high(x: jax.Array, kind: str = 'gau', k: int = 5, include_pad: bool = True,
                recursions: int = 1) -> jax.Array:
  """Official `FilterHigh`: 0.5 + 0.5 (x - Low(x)) with a size-keeping `filter_low`; with
  `recursions` r > 1 the input is low-passed r - 1 times first. The DSN and FSSR discriminators
  pass include_pad=False (the official class default is True)."""
  low = lambda img: filter_low(img, kind, k, padding=True, include_pad=include_pad)
  for _ in range(recursions - 1):
    x = low(x)
  return 0.5 + 0.5 * (x - low(x))


def wavelet_high(x: jax.Array, mode: str = 'cat', normalize: bool = True) -> jax.Array:
  """The Haar detail bands of [B, H, W, C] at half size (ceil(H / 2) x ceil(W / 2)).

  'cat' stacks LH, HL, HH into 3C channels (all of LH's channels, then HL's, then HH's); 'sum'
  averages the three. `normalize` maps each band to 0.5 + 0.5 band first, as the discriminators
  read them; without it the bands are raw (the SRN's norm=False).
  """
  if mode not in WAVELET_MODES:
    raise ValueError(f'unknown wavelet mode {mode!r}; known: {", ".join(WAVELET_MODES)}')
  bands = wavelet.haar_dwt(x)[1]
  if normalize:
    bands = tuple(0.5 + 0.5 * band for band in bands)
  if mode == 'cat':
    return jnp.concatenate(bands, axis=-1)
  return sum(bands) / 3


def wavelet_low_half(x: jax.Array) -> jax.Array:
  """Half the Haar LL band (LL / 2, the mean of each 2x2 block): the colour-loss filter of the
  wavelet DSN and the SRN's low-frequency target."""
  return 0.5 * wavelet.haar_dwt(x)[0]
