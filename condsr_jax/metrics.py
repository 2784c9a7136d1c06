"""Image quality metrics: PSNR, SSIM and NIQE with BasicSR's exact numbers.

BasicSR validates on uint8 images (outputs clamped, scaled by 255, rounded) in float64, optionally
on the MATLAB BT.601 luma; `psnr` / `ssim` reproduce it so results compare with published tables.
`niqe` is BasicSR's no-reference `calculate_niqe` (itself a port of the official MATLAB release).
"""

import functools
import importlib.resources
import math
from typing import Mapping

import cv2
import jax
import numpy as np
from scipy import ndimage, special

from condsr_jax import images
from condsr_jax.degrade.matlab import matlab_resize_matrix

# MATLAB `rgb2ycbcr` luma row (RGB order) for inputs in [0, 1]; the offset is 16 on [0, 255].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
# NIQE: square blocks (the official size, no overlap) and the grid of AGGD shapes searched.
_NIQE_BLOCK = 96
_AGGD_ALPHAS = np.arange(0.2, 10.001, 0.001)
# Neighbour offsets (rows, cols) of the four pairwise-product maps: H, V and the two diagonals.
_NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def rgb_to_y(img: np.ndarray) -> np.ndarray:
  """HWC RGB in [0, 255] -> HW1 luma in [0, 255], unrounded, in BasicSR's float32 steps.

  Images with other than 3 channels pass through (as float32), as in BasicSR's `to_y_channel`.
  """
  x = img.astype(np.float32) / np.float32(255)
  if x.shape[-1] != 3:
    return x * np.float32(255)
  y = (np.dot(x, _Y_WEIGHTS) + 16.0) / 255.0
  return y.astype(np.float32)[..., None] * np.float32(255)


def _prepare(img: np.ndarray, img2: np.ndarray, crop_border: int,
             y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
  """Shape check, HW -> HW1, border crop and optional luma; float64 out."""
  img, img2 = np.asarray(img), np.asarray(img2)
  if img.shape != img2.shape:
    raise ValueError(f'image shapes differ: {img.shape} vs {img2.shape}')
  if img.ndim == 2:
    img, img2 = img[..., None], img2[..., None]
  if crop_border:
    img = img[crop_border:-crop_border, crop_border:-crop_border]
    img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
  if y_channel:
    img, img2 = rgb_to_y(img), rgb_to_y(img2)
  return img.astype(np.float64), img2.astype(np.float64)


def psnr(img: np.ndarray, img2: np.ndarray, crop_border: int, y_channel: bool = False) -> float:
  """PSNR in dB of two HW(C) RGB images in [0, 255] (BasicSR `calculate_psnr`); inf if equal."""
  a, b = _prepare(img, img2, crop_border, y_channel)
  mse = np.mean((a - b) ** 2)
  if mse == 0:
    return float('inf')
  return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
  """Mean SSIM map of two float64 HW planes over the valid region of the 11x11 Gaussian window."""
  kernel = cv2.getGaussianKernel(11, 1.5)
  window = np.outer(kernel, kernel)

  def blur(x: np.ndarray) -> np.ndarray:
    return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  ssim_map = ((2 * mu_a * mu_b + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
      (mu_a ** 2 + mu_b ** 2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2))
  return float(ssim_map.mean())


def ssim(img: np.ndarray, img2: np.ndarray, crop_border: int, y_channel: bool = False) -> float:
  """SSIM of two HW(C) RGB images in [0, 255] (BasicSR `calculate_ssim`), channels averaged."""
  a, b = _prepare(img, img2, crop_border, y_channel)
  if min(a.shape[:2]) < 11:
    raise ValueError(f'SSIM needs at least 11x11 pixels after cropping, got {a.shape[:2]}')
  return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def validation_metrics(sr: np.ndarray | jax.Array, gt: np.ndarray | jax.Array, crop_border: int
                       ) -> Mapping[str, np.ndarray]:
  """Per-image {'psnr', 'ssim'} on RGB and {'psnr_y', 'ssim_y'} on the luma of NHWC float [0, 1]
  batches, measured as BasicSR validates.

  Both batches are first quantized like BasicSR's `tensor2img`: clamped to [0, 1], scaled by 255,
  rounded half to even, cast to uint8.
  """
  sr8 = images.from_float(np.asarray(sr), np.uint8)
  gt8 = images.from_float(np.asarray(gt), np.uint8)
  if sr8.shape != gt8.shape or sr8.ndim != 4:
    raise ValueError(f'expected two NHWC batches of one shape, got {sr8.shape} and {gt8.shape}')
  pairs = list(zip(sr8, gt8))
  return {
      f'{name}{suffix}': np.array([fn(a, b, crop_border, y) for a, b in pairs])
      for name, fn in (('psnr', psnr), ('ssim', ssim)) for suffix, y in (('', False), ('_y', True))
  }


@functools.cache
def _niqe_prior() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean [36], covariance [36, 36], 7x7 window) of the pristine model shipped in assets/."""
  asset = importlib.resources.files('condsr_jax') / 'assets' / 'niqe_pris_params.npz'
  with asset.open('rb') as f, np.load(f) as d:
    return d['mu_pris_param'][0], d['cov_pris_param'], d['gaussian_window']


@functools.cache
def _aggd_ratio_table() -> np.ndarray:
  """Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) on `_AGGD_ALPHAS`: the moment ratio to invert."""
  inv = 1.0 / _AGGD_ALPHAS
  return special.gamma(2 * inv) ** 2 / (special.gamma(inv) * special.gamma(3 * inv))


def _aggd_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-row (alpha, beta_left, beta_right) of the asymmetric generalized Gaussian fit to [N, P].

  A row without negative (positive) samples has a NaN left (right) scale and, as in BasicSR, the
  alpha of the first grid point (its argmin over a NaN distance).
  """
  x = x.astype(np.float64)
  sq = x * x
  with np.errstate(invalid='ignore', divide='ignore'):
    left = np.sqrt((sq * (x < 0)).sum(1) / (x < 0).sum(1))
    right = np.sqrt((sq * (x > 0)).sum(1) / (x > 0).sum(1))
    g = left / right
    r = np.abs(x).mean(1) ** 2 / sq.mean(1)
    r_norm = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
  dist = (_aggd_ratio_table()[None, :] - r_norm[:, None]) ** 2
  alpha = _AGGD_ALPHAS[np.argmin(dist, axis=1)]  # an all-NaN row gives index 0
  scale = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  return alpha, left * scale, right * scale


def _block_features(mscn: np.ndarray, block: int) -> np.ndarray:
  """[blocks, 18] NIQE features of the MSCN map cut into `block`-sized squares (row-major).

  AGGD shape and mean of the left and right scales of the coefficients, then the shape, mean, left
  and right scale of their products with each neighbour, which wraps around inside a block
  (MATLAB circshift). The block order does not matter: only the features' mean and covariance do.
  """
  h, w = mscn.shape
  tiles = mscn.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
  tiles = tiles.reshape(-1, block, block)
  alpha, bl, br = _aggd_params(tiles.reshape(len(tiles), -1))
  feats = [alpha, (bl + br) / 2]
  for shift in _NIQE_SHIFTS:
    prod = tiles * np.roll(tiles, shift, axis=(1, 2))
    alpha, bl, br = _aggd_params(prod.reshape(len(tiles), -1))
    mean = (br - bl) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    feats += [alpha, mean, bl, br]
  return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
  """Mean-subtracted contrast-normalized coefficients (I - mu) / (sigma + 1), edges replicated."""
  mu = ndimage.convolve(img, window, mode='nearest')
  var = ndimage.convolve(img * img, window, mode='nearest') - mu * mu
  return (img - mu) / (np.sqrt(np.abs(var)) + 1)


def niqe(img: np.ndarray, crop_border: int, convert_to: str = 'y') -> float:
  """NIQE of an HWC RGB (or HW gray) image in [0, 255] (BasicSR `calculate_niqe`); lower is better.

  A colour image becomes the MATLAB luma (`convert_to='y'`) or OpenCV gray ('gray'); the image
  loses `crop_border` pixels per edge, is rounded and cut to whole 96x96 blocks. The features of
  the blocks at full and half size (MATLAB bicubic) form a Gaussian whose distance to the pristine
  one is the score. Blocks with NaN features (flat ones) count in the mean only, as in BasicSR;
  at least two blocks without NaN features are needed for the covariance.
  """
  if convert_to not in ('y', 'gray'):
    raise ValueError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if img.ndim != 3 or img.shape[2] not in (1, 3):
    raise ValueError(f'expected an HW, HW1 or HWC RGB image, got shape {img.shape}')
  if convert_to == 'y':
    img = rgb_to_y(img)  # one channel passes through, as in BasicSR
  elif img.shape[2] == 3:  # BasicSR's BGR2GRAY, on the same pixels in BGR order
    bgr = np.ascontiguousarray(img[..., ::-1], np.float32) / np.float32(255)
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) * np.float32(255)
  # BasicSR measures in float32 up to the features; the float32 roundings shift NIQE by ~1e-5.
  img = np.asarray(img, np.float32).reshape(img.shape[:2])
  if crop_border:
    img = img[crop_border:-crop_border, crop_border:-crop_border]
  b = _NIQE_BLOCK
  if min(img.shape) < b:
    raise ValueError(f'NIQE needs an image of at least {b}x{b} pixels after cropping '
                     f'{crop_border} per edge, got {img.shape[0]}x{img.shape[1]}')
  nh, nw = img.shape[0] // b, img.shape[1] // b
  img = np.round(img[:nh * b, :nw * b])
  mu_prior, cov_prior, window = _niqe_prior()
  half = (matlab_resize_matrix(nh * b, 0.5) @ (img / np.float32(255)).astype(np.float64)
          @ matlab_resize_matrix(nw * b, 0.5).T).astype(np.float32) * np.float32(255)
  feats = np.concatenate([_block_features(_mscn(img, window), b),
                          _block_features(_mscn(half, window), b // 2)], axis=1)
  valid = feats[~np.isnan(feats).any(axis=1)]
  if len(valid) < 2:
    raise ValueError(f'NIQE needs at least two {b}x{b} blocks without NaN (flat) features to fit '
                     f'their covariance; the {img.shape[0]}x{img.shape[1]} image has '
                     f'{len(valid)} of {len(feats)}')
  d = mu_prior - np.nanmean(feats, axis=0)
  cov = np.cov(valid, rowvar=False)
  return float(math.sqrt(d @ np.linalg.pinv((cov_prior + cov) / 2) @ d))
