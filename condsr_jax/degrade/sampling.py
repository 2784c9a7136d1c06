"""Random blur-kernel parameters as Real-ESRGAN's dataset draws them (numpy, per example).

The samplers return a parameter record of fixed-shape numpy scalars (not the kernel), so records
batch into arrays and `kernels.kernel_from_params` builds the kernels on the accelerator.
"""

import math
from typing import Sequence

import numpy as np

from condsr_jax.degrade.kernels import KERNEL_TYPES

KERNEL_RANGE = (7, 9, 11, 13, 15, 17, 19, 21)
REALESRGAN_KERNEL_LIST = KERNEL_TYPES[:6]
REALESRGAN_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)

KernelParams = dict[str, np.ndarray]


def kernel_params(kernel_type: str, size: int, sigma_x: float = 1.0, sigma_y: float | None = None,
                  theta: float = 0.0, beta: float = 1.0, omega_c: float = math.pi) -> KernelParams:
  """A parameter record; fields a kernel type does not use keep neutral values."""
  sigma_y = sigma_x if sigma_y is None else sigma_y
  return {
      'kernel_type': np.int32(KERNEL_TYPES.index(kernel_type)),
      'size': np.int32(size),
      'sigma_x': np.float32(sigma_x),
      'sigma_y': np.float32(sigma_y),
      'theta': np.float32(theta),
      'beta': np.float32(beta),
      'omega_c': np.float32(omega_c),
  }


def _shape_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
  """BasicSR's rule: with p 0.5 U(beta_range[0], 1), else U(1, beta_range[1])."""
  if rng.uniform() < 0.5:
    return rng.uniform(beta_range[0], 1.0)
  return rng.uniform(1.0, beta_range[1])


def random_mixed_kernel_params(
    rng: np.random.Generator, size: int,
    kernel_list: Sequence[str] = REALESRGAN_KERNEL_LIST,
    kernel_prob: Sequence[float] = REALESRGAN_KERNEL_PROB,
    sigma_x_range: Sequence[float] = (0.2, 3.0), sigma_y_range: Sequence[float] = (0.2, 3.0),
    rotation_range: Sequence[float] = (-math.pi, math.pi),
    betag_range: Sequence[float] = (0.5, 4.0),
    betap_range: Sequence[float] = (1.0, 2.0)) -> KernelParams:
  """BasicSR `random_mixed_kernels` (no multiplicative noise) for a given odd `size`.

  The type is drawn with `kernel_prob`; isotropic types draw only sigma_x (sigma_y = sigma_x,
  theta = 0); generalized types draw beta from `betag_range`, plateau types from `betap_range`
  (so with the default [1, 2] beta is exactly 1 half of the time).
  """
  if size % 2 != 1:
    raise ValueError(f'kernel size must be odd, got {size}')
  prob = np.asarray(kernel_prob, np.float64)
  kernel_type = kernel_list[rng.choice(len(kernel_list), p=prob / prob.sum())]
  sigma_x = rng.uniform(*sigma_x_range)
  if not kernel_type.endswith('aniso'):
    sigma_y, theta = sigma_x, 0.0
  else:
    sigma_y = rng.uniform(*sigma_y_range)
    theta = rng.uniform(*rotation_range)
  beta = 1.0
  if kernel_type.startswith('generalized'):
    beta = _shape_beta(rng, betag_range)
  elif kernel_type.startswith('plateau'):
    beta = _shape_beta(rng, betap_range)
  return kernel_params(kernel_type, size, sigma_x, sigma_y, theta, beta)


def random_blur_kernel_params(rng: np.random.Generator, sinc_prob: float = 0.1,
                              kernel_range: Sequence[int] = KERNEL_RANGE,
                              **mixed_kwargs) -> KernelParams:
  """One of Real-ESRGAN's blur kernels (`kernel1` / `kernel2` of `RealESRGANDataset`).

  Size uniform over `kernel_range`; with p `sinc_prob` a sinc kernel with omega_c ~ U(pi/3, pi)
  for sizes below 13 and U(pi/5, pi) otherwise, else `random_mixed_kernel_params(**mixed_kwargs)`.
  """
  size = int(kernel_range[rng.integers(len(kernel_range))])
  if rng.uniform() < sinc_prob:
    low = math.pi / 3 if size < 13 else math.pi / 5
    return kernel_params('sinc', size, omega_c=rng.uniform(low, math.pi))
  return random_mixed_kernel_params(rng, size, **mixed_kwargs)


def random_final_sinc_params(rng: np.random.Generator, final_sinc_prob: float = 0.8,
                             kernel_range: Sequence[int] = KERNEL_RANGE) -> KernelParams:
  """Real-ESRGAN's final sinc filter: with p `final_sinc_prob` a sinc kernel of a size from
  `kernel_range` and omega_c ~ U(pi/3, pi), else the delta ("pulse") kernel."""
  if rng.uniform() < final_sinc_prob:
    size = int(kernel_range[rng.integers(len(kernel_range))])
    return kernel_params('sinc', size, omega_c=rng.uniform(math.pi / 3, math.pi))
  return kernel_params('pulse', 1)
