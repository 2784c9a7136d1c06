"""Image quality metrics: PSNR and SSIM with BasicSR's exact numbers.

BasicSR validates on uint8 images (outputs clamped, scaled by 255, rounded) in float64, optionally
on the MATLAB BT.601 luma; `psnr` / `ssim` reproduce it so results compare with published tables.
"""

from typing import Mapping

import cv2
import jax
import numpy as np

from condsr_jax import images

# MATLAB `rgb2ycbcr` luma row (RGB order) for inputs in [0, 1]; the offset is 16 on [0, 255].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


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


def validation_metrics(sr: np.ndarray | jax.Array, gt: np.ndarray | jax.Array, crop_border: int,
                       y_channel: bool = False) -> Mapping[str, np.ndarray]:
  """Per-image {'psnr', 'ssim'} of NHWC float [0, 1] batches, measured as BasicSR validates.

  Both batches are first quantized like BasicSR's `tensor2img`: clamped to [0, 1], scaled by 255,
  rounded half to even, cast to uint8.
  """
  sr8 = images.from_float(np.asarray(sr), np.uint8)
  gt8 = images.from_float(np.asarray(gt), np.uint8)
  if sr8.shape != gt8.shape or sr8.ndim != 4:
    raise ValueError(f'expected two NHWC batches of one shape, got {sr8.shape} and {gt8.shape}')
  pairs = list(zip(sr8, gt8))
  return {
      'psnr': np.array([psnr(a, b, crop_border, y_channel) for a, b in pairs]),
      'ssim': np.array([ssim(a, b, crop_border, y_channel) for a, b in pairs]),
  }
