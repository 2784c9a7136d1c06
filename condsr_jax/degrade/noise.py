"""Gaussian and Poisson noise as BasicSR's `*_noise_pt` functions add them, per image.

The random draws come from an explicit PRNG key; noise strengths and gray flags are per-image
arrays (or numbers), so a batch with mixed settings runs in one compiled function.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from condsr_jax.degrade.color import rgb_to_gray

ArrayLike = jax.typing.ArrayLike


def per_image(value: ArrayLike, batch: int) -> jax.Array:
  """A number or [B] array as [B, 1, 1, 1] float32."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (batch,))[:, None, None, None]


def _finish(out: jax.Array, clip: bool, rounds: bool) -> jax.Array:
  if rounds:
    out = jnp.round(out * 255.0)
    return (jnp.clip(out, 0, 255) if clip else out) / 255.0
  return jnp.clip(out, 0.0, 1.0) if clip else out


def _mix(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 N(0, 1) deviates of `shape` for image noise: the element index hashed with the
  key's data (two finaliser rounds), a 23-bit uniform, its inverse normal CDF.

  About 5x cheaper than `jax.random.normal` on CPU (threefry's 20 rounds per 32 bits dominate
  noise synthesis there) and one fused elementwise op everywhere. Not for cryptography or for
  more than 2^32 values per key; |z| < 5.3 (23-bit uniforms).
  """
  seed = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  bits = _mix(_mix(index ^ seed[0]) + seed[-1])
  u = ((bits >> 9).astype(jnp.float32) + 0.5) * (1.0 / (1 << 23))  # exact, inside (0, 1)
  return np.float32(math.sqrt(2.0)) * jax.scipy.special.erfinv(2.0 * u - 1.0)


def normal_fields(key: jax.Array, shape: tuple[int, int, int, int], gray: ArrayLike = False,
                  shared_gray: bool = False) -> jax.Array:
  """Standard normal deviates of `shape` [B, H, W, C] in which a gray image (`gray`, per image)
  has one field for all channels: its own first channel, or with `shared_gray` one field that
  all gray images of the batch share (the reference's gray Gaussian noise)."""
  key_color, key_gray = jax.random.split(key)
  z = standard_normal(key_color, shape)
  is_gray = per_image(gray, shape[0]) > 0
  if shared_gray:
    return jnp.where(is_gray, standard_normal(key_gray, (1, *shape[1:3], 1)), z)
  return jnp.where(is_gray, z[..., :1], z)


@functools.partial(jax.jit, static_argnames=('shape', 'shared_gray'))
def gaussian_noise(key: jax.Array, shape: tuple[int, int, int, int], sigma: ArrayLike,
                   gray: ArrayLike = False, shared_gray: bool = False) -> jax.Array:
  """BasicSR `generate_gaussian_noise_pt`: N(0, (sigma/255)^2) noise of `shape` [B, H, W, C].

  `sigma` (0..255 scale) and `gray` are per image. A gray image gets one spatial field for all
  channels; with `shared_gray` the batch shares one gray field (only sigma differs), as in the
  reference; otherwise each image draws its own.
  """
  return normal_fields(key, shape, gray, shared_gray) * per_image(sigma, shape[0]) / 255.0


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


_POISSON_LEVELS = 9  # levels 2^0 .. 2^8
_POISSON_TAIL = 512  # CDF entries per rate (rates <= 256: P(X >= 512) is negligible)
_Z_RANGE = (-8.0, 5.5)  # normal deviates bucketed for the guide table (float32 ndtr is 1 above)
_Z_BUCKETS = 256
_WINDOW = 8  # inverse-CDF search window from the guide: 3 look-ups


@functools.cache
def _poisson_tables() -> tuple[np.ndarray, np.ndarray]:
  """Flattened float32 CDFs and int32 guide of Poisson(v 2^l / 255), l < 9, v < 256.

  cdf[l, v, k] = P(X <= k) (float64, rounded); guide[l, v, j] = #{k : cdf[k] < ndtr(z_j)} at
  the bucket edges z_j of `_Z_RANGE`, so a deviate in bucket j has its inverse CDF in
  guide[j] .. guide[j + 1]; checked to fit `_WINDOW` with a margin of 2 on each side (for the
  float32 evaluation of ndtr). Deviates below -8 (probability 6e-16) use the first bucket.
  """
  rate = np.arange(256)[None, :] * 2.0 ** np.arange(_POISSON_LEVELS)[:, None] / 255.0
  k = np.arange(_POISSON_TAIL, dtype=np.float64)
  cdf = special.pdtr(k[None, None, :], rate[..., None]).astype(np.float32)
  lo, hi = _Z_RANGE
  edges = special.ndtr(lo + np.arange(_Z_BUCKETS + 1) * (hi - lo) / _Z_BUCKETS)
  edges = edges.astype(np.float32)
  guide = np.stack([np.searchsorted(row, edges, side='left')
                    for row in cdf.reshape(-1, _POISSON_TAIL)]).astype(np.int32)
  widest = int(np.max(guide[:, 1:] - guide[:, :-1]))
  if widest + 4 > _WINDOW:
    raise AssertionError(f'Poisson guide buckets span {widest} values; widen _WINDOW')
  return cdf.ravel(), guide.ravel()


@jax.jit
def quantized_poisson(z: jax.Array, img_q: jax.Array, levels: jax.Array) -> jax.Array:
  """Poisson(img_q * levels) by inversion of the CDF at ndtr(z), z a standard normal field.

  `img_q` is 8-bit quantised, `levels` [B] powers of two up to 256 (so the rate is one of
  9 * 256 tabulated values). A guide table indexed by z narrows the search to 8 CDF entries:
  four table look-ups per value, instead of `jax.random.poisson`'s rejection loops (slow on
  CPU). Drawing from normal deviates lets Gaussian and Poisson fields share them.
  """
  cdf, guide = (jnp.asarray(t) for t in _poisson_tables())
  v = jnp.round(img_q * 255.0).astype(jnp.int32)
  level = jnp.round(jnp.log2(levels)).astype(jnp.int32)[:, None, None, None]
  row = level * 256 + v
  lo, hi = _Z_RANGE
  bucket = jnp.clip(jnp.floor((z - lo) * (_Z_BUCKETS / (hi - lo))), 0, _Z_BUCKETS - 1)
  start = jnp.maximum(guide[row * (_Z_BUCKETS + 1) + bucket.astype(jnp.int32)] - 2, 0)
  u = jax.scipy.special.ndtr(z)
  count = jnp.zeros(z.shape, jnp.int32)
  step = _WINDOW // 2
  while step:
    k = jnp.minimum(start + count + step - 1, _POISSON_TAIL - 1)
    count = jnp.where(cdf[row * _POISSON_TAIL + k] < u, count + step, count)
    step //= 2
  return (start + count).astype(jnp.float32)


@jax.jit
def poisson_levels(img: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Per-image Poisson levels: 2^ceil(log2(#distinct 8-bit values over C*H*W)), in 1..256.

  A jit-friendly `torch.unique`: one 256-bin histogram per image row, then merged (scatter-adds
  into few bins serialise on GPUs). `valid` [B, H, W, 1] (bool) restricts the count to a
  region, e.g. the valid part of a canvas.
  """
  b, h = img.shape[:2]
  values = jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.int32).reshape(b, h, -1)
  bins = values + 256 * jnp.arange(h, dtype=jnp.int32)[None, :, None]
  weights = jnp.ones(values.shape, jnp.float32) if valid is None else jnp.broadcast_to(
      jnp.asarray(valid, jnp.float32), img.shape).reshape(values.shape)
  counts = jax.vmap(lambda v, w: jnp.bincount(v.ravel(), w.ravel(), length=h * 256))(
      bins, weights)
  distinct = jnp.sum(jnp.any(counts.reshape(b, h, 256) > 0, axis=1), axis=-1)
  powers = 2 ** jnp.arange(_POISSON_LEVELS)
  return (2.0 ** jnp.sum(distinct[:, None] > powers[None, :], axis=-1)).astype(jnp.float32)


def poisson_field(z: jax.Array, img: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """BasicSR's Poisson noise of `img` drawn from normal deviates `z` (same shape):
  Poisson(img_q * L) / L - img_q, img_q the 8-bit image, L = `poisson_levels` over `valid`."""
  img_q = quantize(img)
  levels = poisson_levels(img_q, valid)
  return quantized_poisson(z, img_q, levels) / levels[:, None, None, None] - img_q


def poisson_from_normals(z: jax.Array, img: jax.Array, gray: ArrayLike = False,
                         valid: jax.Array | None = None) -> jax.Array:
  """`poisson_field` of RGB [B, H, W, 3] from `normal_fields` deviates `z`: a gray image
  (`gray`, per image) gets the noise of `rgb_to_gray(img)` on all channels, drawn once (its
  deviates and its gray image are equal across channels, and so is the level count)."""
  is_gray = per_image(gray, img.shape[0]) > 0
  return poisson_field(z, jnp.where(is_gray, rgb_to_gray(img), img), valid)


@jax.jit
def poisson_noise(key: jax.Array, img: jax.Array, scale: ArrayLike, gray: ArrayLike = False,
                  valid: jax.Array | None = None) -> jax.Array:
  """BasicSR `generate_poisson_noise_pt` on [B, H, W, 3]: data-adaptive Poisson noise.

  The image is quantised to 8 bits; with L = `poisson_levels`, noise = Poisson(img_q * L) / L -
  img_q, times `scale` (per image). Gray images use the noise of `rgb_to_gray(img)` on all
  channels.
  """
  z = normal_fields(key, img.shape, gray)
  return poisson_from_normals(z, img, gray, valid) * per_image(scale, img.shape[0])


@functools.partial(jax.jit, static_argnames=('clip', 'rounds'))
def add_poisson_noise(img: jax.Array, scale: ArrayLike, gray: ArrayLike = False, *,
                      key: jax.Array, valid: jax.Array | None = None, clip: bool = True,
                      rounds: bool = False) -> jax.Array:
  """BasicSR `add_poisson_noise_pt`: img + `poisson_noise` (measured on the 8-bit quantised
  image, added to the unquantised one), then clip and/or round as `clip` / `rounds` say."""
  return _finish(img + poisson_noise(key, img, scale, gray, valid), clip, rounds)
