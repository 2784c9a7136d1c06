"""Real-ESRGAN's second-order degradation as one jitted, batched function on static shapes.

Parameters are drawn per example on the host (`RealESRGANSampler`, run in grain); the pixel work
runs on the accelerator. Random resize scales change image sizes, so every stage works on a
fixed canvas (the largest size the stage can produce, a multiple of 16) holding the image in its
top-left corner: resizes are matrices built from traced scales and valid sizes, filters reflect
at the true border through index maps, JPEG compresses the zero-filled canvas (what DiffJPEG's
zero padding to 16 does), and Poisson levels count the valid region only. One compilation
serves every draw.

Randomness is per sample by default; `mode='reference'` shares the reference's per-batch choices
(resize up/down/keep, scale and mode of both stages, noise type of both stages, second-blur coin,
final order and resize mode, crop location) and its batch-shared gray Gaussian noise field. The
sampler draws those per element anyway and the device function takes element 0's values.
"""

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax.degrade import filters, jpeg, kernels, noise, resize, sampling

ArrayLike = jax.typing.ArrayLike
Batch = Mapping[str, jax.Array]

KERNEL_FIELDS = ('kernel_type', 'size', 'sigma_x', 'sigma_y', 'theta', 'beta', 'omega_c')
RESIZE_CHOICES = ('up', 'down', 'keep')
MODES = resize.MODES  # index order of every `*/mode` parameter
PIPELINE_MODES = ('per_sample', 'reference')
# Parameters the reference draws once per batch (shared in 'reference' mode).
BATCH_LEVEL = ('resize1/choice', 'resize1/scale', 'resize1/size', 'resize1/mode',
               'noise1/gaussian', 'blur2/apply', 'resize2/choice', 'resize2/scale',
               'resize2/size', 'resize2/mode', 'noise2/gaussian', 'final/sinc_first',
               'final/mode', 'crop/top', 'crop/left')


def default_config(scale: int = 4) -> ml_collections.ConfigDict:
  """Real-ESRGAN's degradation settings (`train_realesrnet_x4plus.yml`, identical for x2).

  Field names follow the reference's options (`queue_size` is `pool_size`); `crop_pad` is the
  GT canvas the pipeline reads (the dataset's `crop_pad_size`, the data config's `crop_size`).
  For a scale that does not divide them (x3), crop_pad and gt_size round down to multiples.
  """
  c = ml_collections.ConfigDict()
  c.kind = 'realesrgan'
  c.mode = 'per_sample'  # per_sample | reference (per-batch choices, as the PyTorch code)
  c.gt_size = 256 // scale * scale
  c.crop_pad = 400 // scale * scale
  c.pool_size = 180
  c.kernel_range = (7, 9, 11, 13, 15, 17, 19, 21)
  c.kernel_pad = 21  # kernels are built on (zero-padded to) this canvas
  c.usm_weight = 0.5
  c.usm_radius = 50
  c.usm_threshold = 10.0
  # First degradation.
  c.kernel_list = sampling.REALESRGAN_KERNEL_LIST
  c.kernel_prob = sampling.REALESRGAN_KERNEL_PROB
  c.sinc_prob = 0.1
  c.blur_sigma = (0.2, 3.0)
  c.betag_range = (0.5, 4.0)
  c.betap_range = (1.0, 2.0)
  c.resize_prob = (0.2, 0.7, 0.1)  # up, down, keep
  c.resize_range = (0.15, 1.5)
  c.gaussian_noise_prob = 0.5
  c.noise_range = (1.0, 30.0)
  c.poisson_scale_range = (0.05, 3.0)
  c.gray_noise_prob = 0.4
  c.jpeg_range = (30.0, 95.0)
  # Second degradation.
  c.second_blur_prob = 0.8
  c.kernel_list2 = sampling.REALESRGAN_KERNEL_LIST
  c.kernel_prob2 = sampling.REALESRGAN_KERNEL_PROB
  c.sinc_prob2 = 0.1
  c.blur_sigma2 = (0.2, 1.5)
  c.betag_range2 = (0.5, 4.0)
  c.betap_range2 = (1.0, 2.0)
  c.resize_prob2 = (0.3, 0.4, 0.3)
  c.resize_range2 = (0.3, 1.2)
  c.gaussian_noise_prob2 = 0.5
  c.noise_range2 = (1.0, 25.0)
  c.poisson_scale_range2 = (0.05, 2.5)
  c.gray_noise_prob2 = 0.4
  c.jpeg_range2 = (30.0, 95.0)
  c.final_sinc_prob = 0.8
  return c


def plain(value: Any) -> Any:
  """A ConfigDict value as a hashable, picklable Python value (lists become tuples)."""
  if isinstance(value, (list, tuple)):
    return tuple(plain(v) for v in value)
  return value


def _ceil16(n: int) -> int:
  return -(-n // 16) * 16


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Static sizes of one pipeline: GT canvas, stage canvases and outputs."""
  crop_pad: int
  scale: int
  gt_size: int
  stage1: int  # canvas of the first resize's output
  stage2: int  # canvas of the second resize's output

  @property
  def lq_size(self) -> int:
    return self.crop_pad // self.scale

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, scale: int) -> 'Geometry':
    s = config.crop_pad
    if s % scale or config.gt_size % scale or config.gt_size > s:
      raise ValueError(f'crop_pad {s} and gt_size {config.gt_size} must be multiples of the '
                       f'scale {scale}, with gt_size <= crop_pad')
    stage1 = _ceil16(max(s, math.floor(s * config.resize_range[1])))
    stage2 = _ceil16(max(s // scale, int(s / scale * config.resize_range2[1])))
    return cls(s, scale, config.gt_size, stage1, stage2)


def prefixed(prefix: str, record: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`record`'s keys as 'prefix/key'."""
  return {f'{prefix}/{k}': v for k, v in record.items()}


def _resize_draw(rng: np.random.Generator, prob, value_range, prefix: str
                 ) -> dict[str, np.ndarray]:
  """Up / down / keep with `prob`, a scale from U(1, hi) / U(lo, 1) / 1, a uniform mode."""
  choice = int(rng.choice(3, p=np.asarray(prob, np.float64) / np.sum(prob)))
  if choice == 0:
    scale = rng.uniform(1.0, value_range[1])
  elif choice == 1:
    scale = rng.uniform(value_range[0], 1.0)
  else:
    scale = 1.0
  return {f'{prefix}/choice': np.int32(choice), f'{prefix}/scale': np.float32(scale),
          f'{prefix}/mode': np.int32(rng.integers(len(MODES)))}


def _noise_draw(rng: np.random.Generator, gaussian_prob, sigma_range, poisson_range, gray_prob,
                prefix: str) -> dict[str, np.ndarray]:
  """Noise type (Gaussian with `gaussian_prob`, else Poisson), both strengths, gray flag."""
  return {f'{prefix}/gaussian': np.bool_(rng.uniform() < gaussian_prob),
          f'{prefix}/sigma': np.float32(rng.uniform(*sigma_range)),
          f'{prefix}/poisson_scale': np.float32(rng.uniform(*poisson_range)),
          f'{prefix}/gray': np.bool_(rng.uniform() < gray_prob)}


@dataclasses.dataclass(frozen=True)
class RealESRGANSampler:
  """Draws every random choice of one example's degradation (picklable; runs in grain).

  Returns fixed-shape numpy scalars keyed 'kernel1/*', 'kernel2/*', 'sinc/*' (parameter records
  of `sampling`, built into kernels on the device), 'resize{1,2}/{choice,scale,size,mode}',
  'noise{1,2}/{gaussian,sigma,poisson_scale,gray}', 'jpeg{1,2}/quality', 'blur2/apply',
  'final/{sinc_first,mode}' and, with `crop`, 'crop/{top,left}' (LQ pixels).
  """
  options: tuple[tuple[str, Any], ...]
  geometry: Geometry
  crop: bool = True

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    o, g = dict(self.options), self.geometry
    out = {}
    for stage, suffix in ((1, ''), (2, '2')):
      record = sampling.random_blur_kernel_params(
          rng, o['sinc_prob' + suffix], o['kernel_range'],
          kernel_list=o['kernel_list' + suffix], kernel_prob=o['kernel_prob' + suffix],
          sigma_x_range=o['blur_sigma' + suffix], sigma_y_range=o['blur_sigma' + suffix],
          betag_range=o['betag_range' + suffix], betap_range=o['betap_range' + suffix])
      out.update(prefixed(f'kernel{stage}', record))
    out.update(prefixed('sinc', sampling.random_final_sinc_params(
        rng, o['final_sinc_prob'], o['kernel_range'])))

    out.update(_resize_draw(rng, o['resize_prob'], o['resize_range'], 'resize1'))
    # Sizes as PyTorch computes them (float64) from the float32 scale the device uses.
    out['resize1/size'] = np.int32(math.floor(g.crop_pad * float(out['resize1/scale'])))
    out.update(_noise_draw(rng, o['gaussian_noise_prob'], o['noise_range'],
                           o['poisson_scale_range'], o['gray_noise_prob'], 'noise1'))
    out['jpeg1/quality'] = np.float32(rng.uniform(*o['jpeg_range']))
    out['blur2/apply'] = np.bool_(rng.uniform() < o['second_blur_prob'])
    out.update(_resize_draw(rng, o['resize_prob2'], o['resize_range2'], 'resize2'))
    out['resize2/size'] = np.int32(int(g.crop_pad / g.scale * float(out['resize2/scale'])))
    out.update(_noise_draw(rng, o['gaussian_noise_prob2'], o['noise_range2'],
                           o['poisson_scale_range2'], o['gray_noise_prob2'], 'noise2'))
    out['jpeg2/quality'] = np.float32(rng.uniform(*o['jpeg_range2']))
    out['final/sinc_first'] = np.bool_(rng.uniform() < 0.5)
    out['final/mode'] = np.int32(rng.integers(len(MODES)))
    if self.crop:
      span = (g.crop_pad - g.gt_size) // g.scale + 1
      out['crop/top'] = np.int32(rng.integers(span))
      out['crop/left'] = np.int32(rng.integers(span))
    return out


# ------------------------------------------------------------------------------------------------
# Canvas ops: images in the top-left `valid` x `valid` square of a square canvas.


def valid_mask(valid: ArrayLike, size: int) -> jax.Array:
  """[B, size, size, 1] float32, 1 inside each image's top-left valid square."""
  inside = jnp.arange(size)[None, :] < jnp.asarray(valid, jnp.int32)[:, None]
  return (inside[:, :, None] & inside[:, None, :]).astype(jnp.float32)[..., None]


def resize_matrices(in_size: int, out_size: int, mode: ArrayLike, *,
                    scale: ArrayLike | None = None, in_valid: ArrayLike | None = None,
                    out_valid: ArrayLike | None = None) -> jax.Array:
  """[B, out_size, in_size] `resize.resize_matrix` per image, with a per-image mode index.

  `mode` [B] indexes `MODES`; `scale`, `in_valid`, `out_valid` are [B] arrays or None (as in
  `resize_matrix`: a scale maps coordinates like `scale_factor=`, None like `size=`).
  """
  mode = jnp.asarray(mode, jnp.int32)
  b = mode.shape[0]
  fill = lambda v, d: jnp.broadcast_to(jnp.asarray(d if v is None else v), (b,))
  args = (mode, fill(scale, 1.0), fill(in_valid, in_size), fill(out_valid, out_size))

  def one(m, s, n, o):
    mats = [resize.resize_matrix(in_size, out_size, name, scale=None if scale is None else s,
                                 in_valid=n, out_valid=o) for name in MODES]
    return jnp.stack(mats)[m]

  return jax.vmap(one)(*args)


@functools.partial(jax.jit, static_argnames=('out_size',))
def resize_on_canvas(img: jax.Array, out_size: int, mode: ArrayLike, *,
                     scale: ArrayLike | None = None, in_valid: ArrayLike | None = None,
                     out_valid: ArrayLike | None = None) -> jax.Array:
  """`F.interpolate` of each image's valid region into an `out_size` canvas (zero outside)."""
  h = img.shape[1]
  mat = resize_matrices(h, out_size, mode, scale=scale, in_valid=in_valid, out_valid=out_valid)
  return resize.apply_resize_matrices(img, mat, mat)


@jax.jit
def jpeg_on_canvas(img: jax.Array, quality: ArrayLike, valid: ArrayLike | None = None
                   ) -> jax.Array:
  """`diff_jpeg` of each clamped valid region (the zeroed rest of the canvas acts as
  DiffJPEG's zero padding to a multiple of 16, so the valid region compresses exactly)."""
  img = jnp.clip(img, 0.0, 1.0)
  if valid is None:
    return jpeg.diff_jpeg(img, quality)
  mask = valid_mask(valid, img.shape[1])
  return jpeg.diff_jpeg(img * mask, quality) * mask


# ------------------------------------------------------------------------------------------------
# Noise.

@functools.partial(jax.jit, static_argnames=('reference',))
def add_noise(key: jax.Array, img: jax.Array, gaussian: ArrayLike, sigma: ArrayLike,
              poisson_scale: ArrayLike, gray: ArrayLike, valid: ArrayLike | None = None,
              reference: bool = False) -> jax.Array:
  """Real-ESRGAN's noise step on RGB [B, H, W, 3], clipped to [0, 1].

  Gaussian (BasicSR `generate_gaussian_noise_pt`, sigma on 0..255) where `gaussian` [B], else
  Poisson (`generate_poisson_noise_pt` times `poisson_scale`); `gray` images get one field for
  all channels (the gray image's, for Poisson). Both draw on one set of deviates
  (`noise.normal_fields`; each image uses one of the two). Poisson levels count the `valid`
  region only. `reference`: the batch shares the noise type (element 0's, and only that field
  is computed) and the gray Gaussian field, as in the PyTorch code.
  """
  b, h = img.shape[:2]
  # The barrier keeps XLA from recomputing the deviates in every fusion that reads them.
  z = jax.lax.optimization_barrier(noise.normal_fields(key, img.shape, gray))

  def gauss():
    fields = noise.normal_fields(key, img.shape, gray, shared_gray=True) if reference else z
    return fields * noise.per_image(sigma, b) / 255.0

  def poisson():
    mask = None if valid is None else valid_mask(valid, h) > 0
    return noise.poisson_from_normals(z, img, gray, mask) * noise.per_image(poisson_scale, b)

  gaussian = jnp.asarray(gaussian, bool)
  if reference:
    added = jax.lax.cond(gaussian[0], gauss, poisson)
  else:
    added = jnp.where(gaussian[:, None, None, None], gauss(), poisson())
  return jnp.clip(img + added, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# The pipeline.


@functools.partial(jax.jit, static_argnames=('size',))
def crop_batch(img: jax.Array, top: ArrayLike, left: ArrayLike, size: int) -> jax.Array:
  """Per-image `size` x `size` crops at (top [B], left [B])."""
  def one(x, t, l):
    return jax.lax.dynamic_slice(x, (t, l, 0), (size, size, x.shape[-1]))
  return jax.vmap(one)(img, jnp.asarray(top, jnp.int32), jnp.asarray(left, jnp.int32))


def kernel_record(params: Mapping[str, ArrayLike], prefix: str) -> dict[str, ArrayLike]:
  """The `kernels.kernel_from_params` record stored under `prefix/` in `params`."""
  return {k: params[f'{prefix}/{k}'] for k in KERNEL_FIELDS}


class RealESRGANDegradation:
  """GT crops -> (LQ, GT, USM GT) training pairs by Real-ESRGAN's second-order degradation."""

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    if config.mode not in PIPELINE_MODES:
      raise ValueError(f'degradation.mode = {config.mode!r}: one of {PIPELINE_MODES}')
    self.config = config
    self.scale = scale
    self.geometry = Geometry.from_config(config, scale)
    options = {k: plain(v) for k, v in config.items()
               if not isinstance(v, ml_collections.ConfigDict)}  # nested sections: not ours
    self._options = tuple(sorted(options.items()))

  def param_sampler(self, crop: bool = True) -> RealESRGANSampler:
    """The per-example sampler for grain (`crop=False`: no crop offsets are drawn)."""
    return RealESRGANSampler(self._options, self.geometry, crop)

  def param_keys(self, crop: bool = True) -> tuple[str, ...]:
    """The keys `param_sampler(crop)` adds to each element."""
    return tuple(self.param_sampler(crop)(np.random.default_rng(0)))

  def record(self, batch: Batch, crop: bool = True) -> dict[str, jax.Array]:
    """The parameters applied to `batch`: its sampled ones (in 'reference' mode, batch-level
    ones are element 0's; gray images always get gray noise) and the kernels they build,
    'kernel1', 'kernel2' and 'sinc' [B, kernel_pad, kernel_pad]."""
    p = {k: jnp.asarray(batch[k]) for k in self.param_keys(crop)}
    if self.config.mode == 'reference':
      p = {k: jnp.broadcast_to(v[:1], v.shape) if k in BATCH_LEVEL else v for k, v in p.items()}
    if batch['gt'].shape[-1] == 1:
      p['noise1/gray'] = p['noise2/gray'] = jnp.ones_like(p['noise1/gray'])
    for name in ('kernel1', 'kernel2', 'sinc'):
      p[name] = kernels.kernel_from_params(kernel_record(p, name), self.config.kernel_pad)
    return p

  def first_degradation(self, img: jax.Array, p: Batch, key: jax.Array) -> jax.Array:
    """Blur, resize by `scale_factor`, noise, JPEG: [B, S, S, 3] -> stage-1 canvas."""
    n1 = p['resize1/size']
    out = filters.filter_on_canvas(img, p['kernel1'])
    out = resize_on_canvas(out, self.geometry.stage1, p['resize1/mode'],
                           scale=p['resize1/scale'], out_valid=n1)
    out = add_noise(key, out, p['noise1/gaussian'], p['noise1/sigma'], p['noise1/poisson_scale'],
                    p['noise1/gray'], n1, self.config.mode == 'reference')
    return jpeg_on_canvas(out, p['jpeg1/quality'], n1)

  def second_degradation(self, img: jax.Array, p: Batch, key: jax.Array) -> jax.Array:
    """Optional blur, resize by `size`, noise: stage-1 canvas -> stage-2 canvas."""
    n1, n2 = p['resize1/size'], p['resize2/size']
    blurred = filters.filter_on_canvas(img, p['kernel2'], n1)
    out = jnp.where(p['blur2/apply'][:, None, None, None], blurred, img)
    out = resize_on_canvas(out, self.geometry.stage2, p['resize2/mode'], in_valid=n1,
                           out_valid=n2)
    return add_noise(key, out, p['noise2/gaussian'], p['noise2/sigma'],
                     p['noise2/poisson_scale'], p['noise2/gray'], n2,
                     self.config.mode == 'reference')

  def final_degradation(self, img: jax.Array, p: Batch) -> jax.Array:
    """[resize to S / scale, sinc filter] and JPEG in either order, then 8-bit rounding:
    stage-2 canvas -> LQ [B, S / scale, S / scale, 3]."""
    n2 = p['resize2/size']

    def resize_back(x):
      return resize_on_canvas(x, self.geometry.lq_size, p['final/mode'], in_valid=n2)

    sinc_first = jpeg_on_canvas(filters.filter_on_canvas(resize_back(img), p['sinc']),
                                p['jpeg2/quality'])
    jpeg_first = filters.filter_on_canvas(
        resize_back(jpeg_on_canvas(img, p['jpeg2/quality'], n2)), p['sinc'])
    out = jnp.where(p['final/sinc_first'][:, None, None, None], sinc_first, jpeg_first)
    return noise.quantize(out)

  def degrade(self, batch: Batch, key: jax.Array, crop: bool = True) -> dict[str, Any]:
    """Whole-canvas degradation: {'lq': [B, S/scale, S/scale, C], 'gt_usm': [B, S, S, C],
    'record'} for `batch['gt']` [B, S, S, C] (S = crop_pad) and its sampled parameters."""
    c, g = self.config, self.geometry
    gt = jnp.asarray(batch['gt'], jnp.float32)
    b, s, _, channels = gt.shape
    if s != g.crop_pad or gt.shape[2] != s:
      raise ValueError(f'GT batch of {s}x{gt.shape[2]} images; degradation.crop_pad is '
                       f'{g.crop_pad} (set data.crop_size to it)')
    if channels not in (1, 3):
      raise ValueError(f'{channels}-channel images: 1 or 3 supported')
    p = self.record(batch, crop)
    k1, k2 = jax.random.split(key)
    gt_usm = filters.usm_sharp(gt, c.usm_weight, c.usm_threshold, c.usm_radius)
    # Gray images run as RGB with gray noise only, so they stay gray through JPEG.
    out = jnp.broadcast_to(gt_usm, (b, s, s, 3))
    out = self.first_degradation(out, p, k1)
    out = self.second_degradation(out, p, k2)
    lq = self.final_degradation(out, p)
    return {'lq': lq[..., :channels], 'gt_usm': gt_usm, 'record': p}

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs: {'lq': [B, gt_size/scale, ., C], 'gt': plain GT crop [B, gt_size, .,
    C], 'gt_usm': the same crop of USM(GT) (computed on the whole canvas), 'record'}.

    The crop is at ('crop/top', 'crop/left') in LQ pixels, the same place in all three.
    """
    g = self.geometry
    out = self.degrade(batch, key)
    top, left = out['record']['crop/top'], out['record']['crop/left']
    lq = crop_batch(out['lq'], top, left, g.gt_size // g.scale)
    gt = crop_batch(jnp.asarray(batch['gt'], jnp.float32), top * g.scale, left * g.scale,
                    g.gt_size)
    gt_usm = crop_batch(out['gt_usm'], top * g.scale, left * g.scale, g.gt_size)
    return {'lq': lq, 'gt': gt, 'gt_usm': gt_usm, 'record': out['record']}
