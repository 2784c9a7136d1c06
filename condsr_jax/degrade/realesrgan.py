"""Real-ESRGAN's second-order degradation as one jitted, batched function on static shapes.

Parameters are drawn per example on the host (`RealESRGANSampler`, run in grain); the pixel work
runs on the accelerator. Random resize scales change image sizes, so every stage works on a
fixed canvas (a multiple of 16) holding the image in its top-left corner: resizes are matrices
built from traced scales and valid sizes, filters reflect at the true border through index maps,
JPEG compresses the zero-filled canvas (what DiffJPEG's zero padding to 16 does), and Poisson
levels count the valid region only. The first resize's canvas is the smallest of a few sizes
(`canvas_buckets`) that holds its output, chosen at run time by `lax.switch`: one compilation
serves every draw, and a downscaled image is not processed on the largest canvas.

Randomness is per sample by default; `mode='reference'` shares the reference's per-batch choices
(resize up/down/keep, scale and mode of both stages, noise type of both stages, second-blur coin,
final order and resize mode, crop location) and its batch-shared gray Gaussian noise field. The
sampler draws those per element anyway and the device function takes element 0's values.

Per-sample randomness runs either over the whole batch (`loop='batch'`: the canvas of its
largest example; both sides of each per-example choice computed and selected: wide work for
accelerators) or one example at a time (`loop='examples'`: each on its own canvas, computing only
the branch it takes: the least work, for CPUs). 'auto' picks 'examples' on a single CPU device.
"""

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib
from condsr_jax.degrade import canvas, filters, kernels, noise, pipelines, records, resize
from condsr_jax.degrade import sampling

ArrayLike = jax.typing.ArrayLike
Batch = pipelines.Batch

RESIZE_CHOICES = ('up', 'down', 'keep')
MODES = resize.MODES  # index order of every `*/mode` parameter
PIPELINE_MODES = ('per_sample', 'reference')
LOOPS = ('auto', 'batch', 'examples')
# Parameters the reference draws once per batch (shared in 'reference' mode).
BATCH_LEVEL = ('resize1/choice', 'resize1/scale', 'resize1/size', 'resize1/mode',
               'noise1/gaussian', 'blur2/apply', 'resize2/choice', 'resize2/scale',
               'resize2/size', 'resize2/mode', 'noise2/gaussian', 'final/sinc_first',
               'final/mode', 'crop/top', 'crop/left')


def default_config(scale: int = 4) -> ml_collections.ConfigDict:
  """Real-ESRGAN's degradation settings (`train_realesrnet_x4plus.yml`, identical for x2).

  Field names follow the reference's options; `crop_pad` is the GT canvas the pipeline reads
  (the dataset's `crop_pad_size`). The reference's `queue_size` is the training method's
  `pool.size`.
  For a scale that does not divide them (x3), crop_pad and gt_size round down to multiples.
  """
  c = ml_collections.ConfigDict()
  c.kind = 'realesrgan'
  c.mode = 'per_sample'  # per_sample | reference (per-batch choices, as the PyTorch code)
  c.gt_size = 256 // scale * scale
  c.crop_pad = 400 // scale * scale
  c.kernel_range = (7, 9, 11, 13, 15, 17, 19, 21)
  c.kernel_pad = 21  # kernels are built on (zero-padded to) this canvas
  # First-resize canvases as fractions of crop_pad (the largest output is always one).
  c.canvas_buckets = (0.4, 0.7, 1.0, 1.28)
  c.loop = 'auto'  # auto | batch | examples: see the module docstring
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


def _ceil16(n: int) -> int:
  return -(-n // 16) * 16


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Static sizes of one pipeline: GT canvas, stage canvases and outputs."""
  crop_pad: int
  scale: int
  gt_size: int
  stage1: int  # canvas of the first resize's largest output
  stage2: int  # canvas of the second resize's output
  buckets: tuple[int, ...]  # first-resize canvases, ascending, ending at stage1

  @property
  def lq_size(self) -> int:
    return self.crop_pad // self.scale

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, scale: int) -> 'Geometry':
    """The sizes of a validated config."""
    s = config.crop_pad
    stage1 = _ceil16(max(s, math.floor(s * config.resize_range[1])))
    stage2 = _ceil16(max(s // scale, int(s / scale * config.resize_range2[1])))
    buckets = {min(_ceil16(max(1, math.floor(s * f))), stage1) for f in config.canvas_buckets}
    return cls(s, scale, config.gt_size, stage1, stage2, tuple(sorted(buckets | {stage1})))


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
  options: records.Options
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
      out.update(records.prefixed(f'kernel{stage}', record))
    out.update(records.prefixed('sinc', sampling.random_final_sinc_params(
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
      out.update(records.crop_offsets(rng, g.crop_pad, g.gt_size, g.scale))
    return out


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
  z = noise.normal_fields(key, img.shape, gray)

  def gauss():
    shared = reference and b > 1  # a batch of one shares its own gray field
    fields = noise.normal_fields(key, img.shape, gray, shared_gray=True) if shared else z
    return fields * noise.per_image(sigma, b) / 255.0

  def poisson():
    mask = None if valid is None else canvas.valid_mask(valid, h) > 0
    return noise.poisson_from_normals(z, img, gray, mask) * noise.per_image(poisson_scale, b)

  # The Poisson look-ups run in a branch of their own: it runs only when an image takes it, and
  # its operands (the deviates) are computed outside it, in vectorised loops, not inside the
  # look-ups' scalar one (XLA:CPU fuses everything else into it: 3x slower).
  gaussian = jnp.asarray(gaussian, bool)
  if reference:
    added = jax.lax.cond(gaussian[0], gauss, poisson)
  else:
    some_poisson = jax.lax.cond(jnp.all(gaussian), jnp.zeros_like, lambda _: poisson(), img)
    added = jnp.where(gaussian[:, None, None, None], gauss(), some_poisson)
  return jnp.clip(img + added, 0.0, 1.0)


def _choose(shared: bool, flag: jax.Array, if_true, if_false) -> jax.Array:
  """`if_true()` where the per-image `flag` [B] holds, else `if_false()`: with `shared` the
  batch follows flag[0] and only that branch runs (`lax.cond`), otherwise both run and are
  selected per image."""
  if shared:
    return jax.lax.cond(flag[0], if_true, if_false)
  return jnp.where(flag[:, None, None, None], if_true(), if_false())


@pipelines.register('realesrgan')
class RealESRGANDegradation:
  """GT crops -> (LQ, GT, USM GT) training pairs by Real-ESRGAN's second-order degradation."""

  patchwise = False  # degrades whole canvases once; patches are crops of the result

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    self.validate(config, scale)
    self.config = config
    self.scale = scale
    self.canvas = config.crop_pad
    self.geometry = Geometry.from_config(config, scale)
    self._options = records.options(config)

  @classmethod
  def default_config(cls, scale: int) -> ml_collections.ConfigDict:
    """Real-ESRGAN's settings at `scale` (`default_config` of this module)."""
    return default_config(scale)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict, scale: int,
               field: str = 'degradation') -> None:
    """Raises `ConfigError` naming the first wrong field (found at `field`)."""
    pipelines.check_sizes(config, scale, field)
    config_lib.check(config.mode in PIPELINE_MODES, f'{field}.mode', f'one of {PIPELINE_MODES}',
                     config.mode)
    config_lib.check(config.loop in LOOPS, f'{field}.loop', f'one of {LOOPS}', config.loop)
    config_lib.check(all(f > 0 for f in config.canvas_buckets), f'{field}.canvas_buckets',
                     'positive fractions of crop_pad', tuple(config.canvas_buckets))
    sizes = tuple(config.kernel_range)
    config_lib.check(
        bool(sizes) and all(k % 2 == 1 and k <= config.kernel_pad for k in sizes),
        f'{field}.kernel_range', f'odd sizes up to kernel_pad ({config.kernel_pad})', sizes)

  def param_sampler(self, crop: bool = True) -> RealESRGANSampler:
    """The per-example sampler for grain (`crop=False`: no crop offsets are drawn)."""
    return RealESRGANSampler(self._options, self.geometry, crop)

  def device_draws(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """{}: `param_sampler` draws every parameter on the host."""
    del batch, key
    return {}

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
      p[name] = kernels.kernel_from_params(records.kernel_record(p, name), self.config.kernel_pad)
    return p

  def first_degradation(self, img: jax.Array, p: Batch, key: jax.Array, size: int | None = None,
                        shared: bool | None = None) -> jax.Array:
    """Blur, resize by `scale_factor`, noise, JPEG: [B, S, S, 3] -> a `size` canvas (default:
    the largest). `shared`: the batch takes element 0's choices (default: 'reference' mode)."""
    n1 = p['resize1/size']
    out = filters.filter_on_canvas(img, p['kernel1'])
    out = canvas.resize_on_canvas(out, size or self.geometry.stage1, p['resize1/mode'],
                                  scale=p['resize1/scale'], out_valid=n1)
    out = add_noise(key, out, p['noise1/gaussian'], p['noise1/sigma'], p['noise1/poisson_scale'],
                    p['noise1/gray'], n1, self._shared(shared))
    return canvas.jpeg_on_canvas(out, p['jpeg1/quality'], n1)

  def second_degradation(self, img: jax.Array, p: Batch, key: jax.Array,
                         shared: bool | None = None) -> jax.Array:
    """Optional blur, resize by `size`, noise: stage-1 canvas -> stage-2 canvas."""
    n1, n2 = p['resize1/size'], p['resize2/size']
    shared = self._shared(shared)
    out = _choose(shared, p['blur2/apply'],
                  lambda: filters.filter_on_canvas(img, p['kernel2'], n1), lambda: img)
    out = canvas.resize_on_canvas(out, self.geometry.stage2, p['resize2/mode'], in_valid=n1,
                                  out_valid=n2)
    return add_noise(key, out, p['noise2/gaussian'], p['noise2/sigma'],
                     p['noise2/poisson_scale'], p['noise2/gray'], n2, shared)

  def final_degradation(self, img: jax.Array, p: Batch, shared: bool | None = None
                        ) -> jax.Array:
    """[resize to S / scale, sinc filter] and JPEG in either order, then 8-bit rounding:
    stage-2 canvas -> LQ [B, S / scale, S / scale, 3]."""
    n2 = p['resize2/size']

    def resize_back(x):
      return canvas.resize_on_canvas(x, self.geometry.lq_size, p['final/mode'], in_valid=n2)

    out = _choose(
        self._shared(shared), p['final/sinc_first'],
        lambda: canvas.jpeg_on_canvas(filters.filter_on_canvas(resize_back(img), p['sinc']),
                                      p['jpeg2/quality']),
        lambda: filters.filter_on_canvas(
            resize_back(canvas.jpeg_on_canvas(img, p['jpeg2/quality'], n2)), p['sinc']))
    return noise.quantize(out)

  def _shared(self, shared: bool | None) -> bool:
    return self.config.mode == 'reference' if shared is None else shared

  def per_example(self) -> bool:
    """Whether per-sample draws run one example at a time (`loop`; 'auto': on one CPU)."""
    if self.config.mode == 'reference' or self.config.loop == 'batch':
      return False
    return self.config.loop == 'examples' or filters.single_cpu_device()

  def _degrade_batch(self, img: jax.Array, p: Batch, key: jax.Array, shared: bool
                     ) -> jax.Array:
    """All three degradations of RGB canvases, the first on the smallest bucket canvas that
    holds the batch's largest first-resize output."""
    k1, k2 = jax.random.split(key)

    def stages(size):
      return lambda x: self.second_degradation(
          self.first_degradation(x, p, k1, size, shared), p, k2, shared)

    sizes = self.geometry.buckets
    index = jnp.searchsorted(jnp.asarray(sizes), jnp.max(p['resize1/size']))
    out = jax.lax.switch(index, [stages(size) for size in sizes], img)
    return self.final_degradation(out, p, shared)

  def _gt_canvas(self, batch: Batch) -> jax.Array:
    """`batch['gt']` as float32, checked against the canvas and the channel counts."""
    gt = pipelines.gt_canvas(batch, self.canvas)
    if gt.shape[3] not in (1, 3):
      raise ValueError(f'{gt.shape[3]}-channel images: 1 or 3 supported')
    return gt

  def synthesize(self, img: jax.Array, p: Batch, key: jax.Array) -> jax.Array:
    """LQ [B, S / scale, S / scale, C] of canvases [B, S, S, C] under the record `p`."""
    b, s, _, channels = img.shape
    # Gray images run as RGB with gray noise only, so they stay gray through JPEG.
    rgb = jnp.broadcast_to(img, (b, s, s, 3))
    if not self.per_example():
      return self._degrade_batch(rgb, p, key, self._shared(None))[..., :channels]

    def one(example):
      x, q, k = jax.tree.map(lambda v: v[None], example)
      return self._degrade_batch(x, q, k[0], True)[0]

    # A batch of one shares its own choices: only the branches it takes run.
    return jax.lax.map(one, (rgb, p, jax.random.split(key, b)))[..., :channels]

  def degrade(self, batch: Batch, key: jax.Array, crop: bool = True) -> dict[str, Any]:
    """Whole-canvas training degradation: {'lq': [B, S/scale, S/scale, C], 'gt_usm': [B, S, S,
    C], 'record'} for `batch['gt']` [B, S, S, C] (S = crop_pad), degraded from USM(GT)."""
    c = self.config
    gt = self._gt_canvas(batch)
    p = self.record(batch, crop)
    gt_usm = filters.usm_sharp(gt, c.usm_weight, c.usm_threshold, c.usm_radius)
    return {'lq': self.synthesize(gt_usm, p, key), 'gt_usm': gt_usm, 'record': p}

  def degrade_whole(self, batch: Batch, key: jax.Array) -> jax.Array:
    """LQ [B, S/scale, S/scale, C] of the plain canvas `batch['gt']` (no USM; no crop draws)."""
    return self.synthesize(self._gt_canvas(batch), self.record(batch, crop=False), key)

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs: {'lq': [B, gt_size/scale, ., C], 'gt': plain GT crop [B, gt_size, .,
    C], 'gt_usm': the same crop of USM(GT) (computed on the whole canvas), 'record'}.

    The crop is at ('crop/top', 'crop/left') in LQ pixels, the same place in all three.
    """
    g = self.geometry
    out = self.degrade(batch, key)
    top, left = out['record']['crop/top'], out['record']['crop/left']
    lq = canvas.crop_batch(out['lq'], top, left, g.gt_size // g.scale)
    gt = canvas.crop_batch(jnp.asarray(batch['gt'], jnp.float32), top * g.scale,
                           left * g.scale, g.gt_size)
    gt_usm = canvas.crop_batch(out['gt_usm'], top * g.scale, left * g.scale, g.gt_size)
    return {'lq': lq, 'gt': gt, 'gt_usm': gt_usm, 'record': out['record']}
