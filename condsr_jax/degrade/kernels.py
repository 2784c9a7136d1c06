"""Blur kernels of BasicSR's degradation model (Gaussian, generalized, plateau, circular low-pass).

Every parameter, the kernel size included, may be a traced array: kernels are computed on a fixed
odd canvas (`pad_to`, 21 in Real-ESRGAN) and zeroed outside the central `size` x `size` square, so a
batch of per-sample kernels builds from a parameter record inside one compiled function.
"""

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.typing.ArrayLike

# Kernel types in the order of Real-ESRGAN's `kernel_list`, plus the sinc and delta kernels.
KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
                'plateau_aniso', 'sinc', 'pulse')
# Family of each kernel type: 0 Gaussian, 1 generalized Gaussian, 2 plateau, 3 sinc, 4 pulse.
_FAMILY = np.array([0, 0, 1, 1, 2, 2, 3, 4], np.int32)

# Abramowitz & Stegun 9.4.4 (|x| <= 3) and 9.4.6 (x >= 3) for J1; absolute error below 1e-7.
_J1_SMALL = (0.5, -0.56249985, 0.21093573, -0.03954289, 0.00443319, -0.00031761, 0.00001109)
_J1_AMP = (0.79788456, 0.00000156, 0.01659667, 0.00017105, -0.00249511, 0.00113653, -0.00020033)
_J1_PHASE = (-2.35619449, 0.12499612, 0.00005650, -0.00637879, 0.00074348, 0.00079824,
             -0.00029166)


def _poly(coeffs: tuple[float, ...], t: jax.Array) -> jax.Array:
  out = jnp.zeros_like(t)
  for c in reversed(coeffs):
    out = out * t + c
  return out


def bessel_j1(x: ArrayLike) -> jax.Array:
  """Bessel function of the first kind of order one (`scipy.special.j1`), float32."""
  x = jnp.asarray(x, jnp.float32)
  ax = jnp.abs(x)
  small = x * _poly(_J1_SMALL, (x / 3.0) ** 2)
  t = 3.0 / jnp.maximum(ax, 3.0)
  large = _poly(_J1_AMP, t) * jnp.cos(ax + _poly(_J1_PHASE, t)) / jnp.sqrt(jnp.maximum(ax, 3.0))
  return jnp.where(ax <= 3.0, small, jnp.sign(x) * large)


def _canvas(size: ArrayLike, pad_to: int | None) -> int:
  if pad_to is not None:
    return pad_to
  if not isinstance(size, (int, np.integer)):
    raise ValueError('a traced kernel size needs a static canvas size `pad_to`')
  return int(size)


def _grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
  """Column (x) and row (y) offsets from the centre of an odd canvas, as BasicSR's `mesh_grid`."""
  if canvas % 2 != 1:
    raise ValueError(f'kernel canvas must be odd, got {canvas}')
  ax = np.arange(canvas, dtype=np.float32) - canvas // 2
  return ax[None, :], ax[:, None]


def _expand(p: ArrayLike) -> jax.Array:
  return jnp.asarray(p, jnp.float32)[..., None, None]


def _mask_and_normalise(kernel: jax.Array, size: ArrayLike, canvas: int) -> jax.Array:
  """Zeroes the canvas outside the central `size` x `size` square and normalises to sum 1."""
  x, y = _grid(canvas)
  half = jnp.asarray(size, jnp.int32)[..., None, None] // 2
  inside = (jnp.abs(x) <= half) & (jnp.abs(y) <= half)
  kernel = jnp.where(inside, kernel, 0.0)
  return kernel / jnp.sum(kernel, axis=(-2, -1), keepdims=True)


def _quadratic_form(sigma_x: ArrayLike, sigma_y: ArrayLike, theta: ArrayLike,
                    canvas: int) -> jax.Array:
  """d^T Sigma^-1 d with Sigma = R diag(sx^2, sy^2) R^T, R the rotation by theta."""
  x, y = _grid(canvas)
  c, s = jnp.cos(_expand(theta)), jnp.sin(_expand(theta))
  u, v = c * x + s * y, c * y - s * x
  return (u / _expand(sigma_x)) ** 2 + (v / _expand(sigma_y)) ** 2


def bivariate_gaussian_kernel(size: ArrayLike, sigma_x: ArrayLike, sigma_y: ArrayLike,
                              theta: ArrayLike = 0.0, *, pad_to: int | None = None) -> jax.Array:
  """BasicSR `bivariate_Gaussian`: exp(-d^T Sigma^-1 d / 2), normalised, zero-padded to `pad_to`.

  Isotropic kernels are `sigma_y = sigma_x, theta = 0`. Parameters broadcast: arrays of shape [B]
  give kernels [B, K, K] with K = `pad_to` (or `size` when it is a Python int and `pad_to` None).
  """
  canvas = _canvas(size, pad_to)
  q = _quadratic_form(sigma_x, sigma_y, theta, canvas)
  return _mask_and_normalise(jnp.exp(-0.5 * q), size, canvas)


def generalized_gaussian_kernel(size: ArrayLike, sigma_x: ArrayLike, sigma_y: ArrayLike,
                                theta: ArrayLike, beta: ArrayLike, *,
                                pad_to: int | None = None) -> jax.Array:
  """BasicSR `bivariate_generalized_Gaussian`: exp(-(d^T Sigma^-1 d)^beta / 2), normalised."""
  canvas = _canvas(size, pad_to)
  q = _quadratic_form(sigma_x, sigma_y, theta, canvas)
  return _mask_and_normalise(jnp.exp(-0.5 * q ** _expand(beta)), size, canvas)


def plateau_kernel(size: ArrayLike, sigma_x: ArrayLike, sigma_y: ArrayLike, theta: ArrayLike,
                   beta: ArrayLike, *, pad_to: int | None = None) -> jax.Array:
  """BasicSR `bivariate_plateau`: 1 / ((d^T Sigma^-1 d)^beta + 1), normalised."""
  canvas = _canvas(size, pad_to)
  q = _quadratic_form(sigma_x, sigma_y, theta, canvas)
  return _mask_and_normalise(1.0 / (q ** _expand(beta) + 1.0), size, canvas)


def _sinc_values(omega_c: ArrayLike, canvas: int) -> jax.Array:
  x, y = _grid(canvas)
  r = np.sqrt(x * x + y * y)
  w = _expand(omega_c)
  r_safe = np.where(r == 0, 1.0, r)
  ring = w * bessel_j1(w * r_safe) / (2 * math.pi * r_safe)
  return jnp.where(r == 0, w * w / (4 * math.pi), ring)


def sinc_kernel(omega_c: ArrayLike, size: ArrayLike, *, pad_to: int | None = None) -> jax.Array:
  """BasicSR `circular_lowpass_kernel`: omega_c J1(omega_c r) / (2 pi r), normalised, padded.

  The centre takes the limit omega_c^2 / (4 pi); the kernel is zero-padded to `pad_to`.
  """
  canvas = _canvas(size, pad_to)
  return _mask_and_normalise(_sinc_values(omega_c, canvas), size, canvas)


@functools.partial(jax.jit, static_argnames=('pad_to',))
def kernel_from_params(record: Mapping[str, ArrayLike], pad_to: int = 21) -> jax.Array:
  """Builds the kernels described by a parameter record (see `sampling`), one per sample.

  `record` holds arrays of equal shape [...]: `kernel_type` (index into `KERNEL_TYPES`), `size`,
  `sigma_x`, `sigma_y`, `theta`, `beta`, `omega_c`. Returns [..., pad_to, pad_to]; the family is
  chosen per sample, so a batch mixing all types builds in one compiled function.
  """
  family = jnp.asarray(_FAMILY)[jnp.asarray(record['kernel_type'], jnp.int32)][..., None, None]
  q = _quadratic_form(record['sigma_x'], record['sigma_y'], record['theta'], pad_to)
  q_beta = q ** _expand(record['beta'])
  x, y = _grid(pad_to)
  delta = jnp.asarray((x == 0) & (y == 0), jnp.float32)
  kernel = jnp.select(
      [family == 0, family == 1, family == 2, family == 3],
      [jnp.exp(-0.5 * q), jnp.exp(-0.5 * q_beta), 1.0 / (q_beta + 1.0),
       _sinc_values(record['omega_c'], pad_to)],
      delta)
  return _mask_and_normalise(kernel, record['size'], pad_to)


def _marginals(kernel: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Tap offsets from the centre [k] and the marginals along x and y [B, k] of kernels
  [B, k, k] (odd k)."""
  grid = jnp.arange(kernel.shape[-1], dtype=jnp.float32) - kernel.shape[-1] // 2
  return grid, kernel.sum(1), kernel.sum(2)


def offsets(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Centre of mass along x and y (pixels from the centre tap) of kernels [B, k, k], each a
  distribution over its taps: the shift a kernel puts between an image and its blurred copy."""
  grid, along_x, along_y = _marginals(kernel)
  return jnp.sum(along_x * grid, -1), jnp.sum(along_y * grid, -1)


def widths(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Standard deviations along x and y (pixels) of kernels [B, k, k], each a distribution over
  its taps: a learned kernel's sigma_x, sigma_y (those of a Gaussian kernel)."""
  grid, along_x, along_y = _marginals(kernel)
  mean_x, mean_y = offsets(kernel)
  return (jnp.sqrt(jnp.sum(along_x * (grid - mean_x[:, None]) ** 2, -1)),
          jnp.sqrt(jnp.sum(along_y * (grid - mean_y[:, None]) ** 2, -1)))
