"""Gaussian and Poisson noise as BasicSR's `*_noise_pt` functions add them, per image.

The random draws come from an explicit PRNG key; noise strengths and gray flags are per-image
arrays (or numbers), so a batch with mixed settings runs in one compiled function.
"""

import functools

import jax
import jax.numpy as jnp

from condsr_jax.degrade.color import rgb_to_gray

ArrayLike = jax.typing.ArrayLike


def _per_image(value: ArrayLike, batch: int) -> jax.Array:
  """A number or [B] array as [B, 1, 1, 1] float32."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))[:, None, None, None]


def _finish(out: jax.Array, clip: bool, rounds: bool) -> jax.Array:
  if rounds:
    out = jnp.round(out * 255.0)
    return (jnp.clip(out, 0, 255) if clip else out) / 255.0
  return jnp.clip(out, 0.0, 1.0) if clip else out


@functools.partial(jax.jit, static_argnames=('shape', 'shared_gray'))
def gaussian_noise(key: jax.Array, shape: tuple[int, int, int, int], sigma: ArrayLike,
                   gray: ArrayLike = False, shared_gray: bool = False) -> jax.Array:
  """BasicSR `generate_gaussian_noise_pt`: N(0, (sigma/255)^2) noise of `shape` [B, H, W, C].

  `sigma` (0..255 scale) and `gray` are per image. A gray image gets one spatial field for all
  channels; with `shared_gray` the batch shares one gray field (only sigma differs), as in the
  reference; otherwise each image draws its own.
  """
  b, h, w, c = shape
  key_color, key_gray = jax.random.split(key)
  color = jax.random.normal(key_color, (b, h, w, c), jnp.float32)
  gray_field = jax.random.normal(key_gray, (1 if shared_gray else b, h, w, 1), jnp.float32)
  g = _per_image(gray, b)
  return (color * (1 - g) + gray_field * g) * _per_image(sigma, b) / 255.0


@functools.partial(jax.jit, static_argnames=('shared_gray', 'clip', 'rounds'))
def add_gaussian_noise(img: jax.Array, sigma: ArrayLike, gray: ArrayLike = False, *,
                       key: jax.Array, shared_gray: bool = False, clip: bool = True,
                       rounds: bool = False) -> jax.Array:
  """BasicSR `add_gaussian_noise_pt`: img + `gaussian_noise`, then clip to [0, 1] and/or round
  to 8 bits as `clip` / `rounds` say (Real-ESRGAN: clip only)."""
  noise = gaussian_noise(key, img.shape, sigma, gray, shared_gray)
  return _finish(img + noise, clip, rounds)


def quantize(img: jax.Array) -> jax.Array:
  """clamp(round(img * 255), 0, 255) / 255."""
  return jnp.clip(jnp.round(img * 255.0), 0, 255) / 255.0


def poisson_levels(img: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Per-image Poisson levels: 2^ceil(log2(#distinct 8-bit values over C*H*W)), in 1..256.

  Counts with a 256-bin histogram (jit-friendly `torch.unique`); `valid` [B, H, W, 1] (bool)
  restricts the count to a region, e.g. the valid part of a canvas.
  """
  b = img.shape[0]
  values = jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.int32).reshape(b, -1)
  weights = jnp.ones(img.shape, jnp.float32) if valid is None else jnp.broadcast_to(
      jnp.asarray(valid, jnp.float32), img.shape)
  counts = jax.vmap(lambda v, wt: jnp.bincount(v, wt, length=256))(values, weights.reshape(b, -1))
  distinct = jnp.sum(counts > 0, axis=-1)
  powers = 2 ** jnp.arange(9)
  return (2.0 ** jnp.sum(distinct[:, None] > powers[None, :], axis=-1)).astype(jnp.float32)


def _poisson_field(key: jax.Array, img: jax.Array, valid: jax.Array | None) -> jax.Array:
  img_q = quantize(img)
  levels = poisson_levels(img_q, valid)[:, None, None, None]
  return jax.random.poisson(key, img_q * levels).astype(jnp.float32) / levels - img_q


@jax.jit
def poisson_noise(key: jax.Array, img: jax.Array, scale: ArrayLike, gray: ArrayLike = False,
                  valid: jax.Array | None = None) -> jax.Array:
  """BasicSR `generate_poisson_noise_pt` on [B, H, W, 3]: data-adaptive Poisson noise.

  The image is quantised to 8 bits; with L = `poisson_levels`, noise = Poisson(img_q * L) / L -
  img_q, times `scale` (per image). Gray images use the noise of `rgb_to_gray(img)` on all
  channels. Both fields are drawn for every image and blended by `gray`.
  """
  b = img.shape[0]
  key_color, key_gray = jax.random.split(key)
  color = _poisson_field(key_color, img, valid)
  gray_noise = _poisson_field(key_gray, rgb_to_gray(img), valid)
  g = _per_image(gray, b)
  return (color * (1 - g) + gray_noise * g) * _per_image(scale, b)


@functools.partial(jax.jit, static_argnames=('clip', 'rounds'))
def add_poisson_noise(img: jax.Array, scale: ArrayLike, gray: ArrayLike = False, *,
                      key: jax.Array, valid: jax.Array | None = None, clip: bool = True,
                      rounds: bool = False) -> jax.Array:
  """BasicSR `add_poisson_noise_pt`: img + `poisson_noise` (measured on the 8-bit quantised
  image, added to the unquantised one), then clip and/or round as `clip` / `rounds` say."""
  return _finish(img + poisson_noise(key, img, scale, gray, valid), clip, rounds)
