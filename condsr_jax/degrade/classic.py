"""The classic degradation of the conditional blind-SR methods: Gaussian blur, downsampling,
Gaussian noise and optional JPEG, one draw per task (or image) shared by all its patches.

Two references, picked by `default_config(scale, reference)`:
- 'cmdsr' (CMDSR `SRMultiGroupRandomTaskDataSet`): isotropic 15x15 `cv2.GaussianBlur` with
  sigma in {0.2, 0.3, ..., 4.0}; `cv2.resize(INTER_CUBIC)` (A = -0.75, no antialiasing: PyTorch
  bicubic by size); noise level randint(0, 75) on 0..255, a fresh field per patch, clipped and
  truncated to uint8; the uint8 rounding of cv2's blur and resize; JPEG off (randint(30, 80)).
- 'dasr' (DASR `SRMDPreprocessing`): 21x21 isotropic Gaussian with sigma ~ U[0.2, 2 | 3 | 4] for
  x2 | x3 | x4 (or anisotropic: std-devs ~ U[0.2, 4], angle ~ U[0, pi)); MATLAB bicubic
  (antialiased); noise ~ U[0, noise] (0 in the isotropic setting, 25 in the general x4 one),
  then rounding and clamping.
Blur reflects (reflect-101) at each patch's border, as both references blur patches.
"""

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib
from condsr_jax.degrade import canvas, filters, jpeg, kernels, matlab, noise, pipelines, records
from condsr_jax.degrade import resize, sampling

Batch = pipelines.Batch

REFERENCES = ('cmdsr', 'dasr')
BLURS = ('iso', 'aniso')
DOWNSAMPLERS = ('bicubic', 'matlab', 'sfold')
ROUNDINGS = ('cmdsr', 'round', 'none')


def default_config(scale: int = 4, reference: str = 'cmdsr') -> ml_collections.ConfigDict:
  """The degradation of CMDSR's or DASR's training code at `scale` (see the module doc)."""
  if reference not in REFERENCES:
    raise ValueError(f'reference must be one of {REFERENCES}, got {reference!r}')
  c = ml_collections.ConfigDict()
  c.kind = 'classic'
  c.reference = reference
  c.crop_pad = 400 // scale * scale  # GT canvas crops come from (the training stream's crop)
  c.rotation_range = (0.0, math.pi)  # anisotropic kernel angle
  c.aniso_range = (0.2, 4.0)  # anisotropic std-devs (DASR lambda_min, lambda_max)
  c.jpeg_range = (30, 80)  # integer qualities, both ends included
  if reference == 'cmdsr':
    c.gt_size = 192  # hr_crop_size
    c.kernel_size = 15
    c.blur = 'iso'
    c.sigma_range = (0.2, 4.0)
    c.sigma_step = 0.1  # sigma = 0.2 + randint(0, 38) / 10
    c.downsample = 'bicubic'
    c.noise_range = (0.0, 75.0)
    c.noise_integer = True  # randint(0, 75)
    c.rounding = 'cmdsr'
    c.jpeg_prob = 0.0
  else:
    c.gt_size = 48 * scale  # patch_size 48 is the LR size
    c.kernel_size = 21
    c.blur = 'iso'
    c.sigma_range = (0.2, {2: 2.0, 3: 3.0}.get(scale, 4.0))
    c.sigma_step = 0.0  # continuous
    c.downsample = 'matlab'
    c.noise_range = (0.0, 0.0)  # the general anisotropic x4 setting uses (0, 25)
    c.noise_integer = False
    c.rounding = 'round'
    c.jpeg_prob = 0.0
  return c


# The degradation parameters an oracle condition reads, with the scales that normalise them.
ORACLE_FEATURES = (('blur/sigma_x', 4.0), ('blur/sigma_y', 4.0), ('blur/theta', np.pi),
                   ('noise/sigma', 75.0))


def oracle_features(record: Mapping[str, jax.Array]) -> jax.Array:
  """[k, 4] normalised true degradation parameters of k tasks: an oracle condition's input."""
  return jnp.stack([jnp.asarray(record[name], jnp.float32) / s for name, s in ORACLE_FEATURES],
                   -1)


@dataclasses.dataclass(frozen=True)
class ClassicSampler:
  """Draws one task's (or image's) degradation (picklable; runs in grain).

  Returns 'blur/*' (a `sampling` kernel record), 'noise/sigma' (0..255 scale), 'jpeg/apply',
  'jpeg/quality' and, with `crop`, 'crop/{top,left}' (LQ pixels of a gt_size crop).
  """
  options: records.Options
  scale: int
  crop: bool = True

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    o = dict(self.options)
    lo, hi = o['sigma_range']
    if o['blur'] == 'iso':
      if o['sigma_step']:
        sigma = lo + rng.integers(round((hi - lo) / o['sigma_step']) + 1) * o['sigma_step']
      else:
        sigma = rng.uniform(lo, hi)
      record = sampling.kernel_params('iso', o['kernel_size'], sigma)
    else:
      record = sampling.kernel_params(
          'aniso', o['kernel_size'], rng.uniform(*o['aniso_range']),
          rng.uniform(*o['aniso_range']), rng.uniform(*o['rotation_range']))
    out = records.prefixed('blur', record)
    n_lo, n_hi = o['noise_range']
    if o['noise_integer']:
      level = rng.integers(int(n_lo), int(n_hi) + 1)
    else:
      level = rng.uniform(n_lo, n_hi)
    out['noise/sigma'] = np.float32(level)
    out['jpeg/apply'] = np.bool_(rng.uniform() < o['jpeg_prob'])
    q_lo, q_hi = (int(q) for q in o['jpeg_range'])
    out['jpeg/quality'] = np.float32(rng.integers(q_lo, q_hi + 1))
    if self.crop:
      out.update(records.crop_offsets(rng, o['crop_pad'], o['gt_size'], self.scale))
    return out


@pipelines.register('classic')
class ClassicDegradation:
  """One classic degradation per task (or image), applied to every patch of the task."""

  patchwise = True  # every patch of a task is blurred, downsampled and noised on its own

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    self.validate(config, scale)
    self.config = config
    self.scale = scale
    self.canvas = config.crop_pad
    self._options = records.options(config)

  @classmethod
  def default_config(cls, scale: int) -> ml_collections.ConfigDict:
    """CMDSR's degradation at `scale` (`default_config(scale, 'dasr')` gives DASR's)."""
    return default_config(scale)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict, scale: int,
               field: str = 'degradation') -> None:
    """Raises `ConfigError` naming the first wrong field (found at `field`)."""
    pipelines.check_sizes(config, scale, field)
    for name, allowed in (('blur', BLURS), ('downsample', DOWNSAMPLERS),
                          ('rounding', ROUNDINGS)):
      config_lib.check(config[name] in allowed, f'{field}.{name}', f'one of {allowed}',
                       config[name])
    config_lib.check(config.kernel_size % 2 == 1, f'{field}.kernel_size', 'must be odd',
                     config.kernel_size)

  def param_sampler(self, crop: bool = True) -> ClassicSampler:
    """The per-task sampler for grain (`crop=False`: no crop offsets are drawn)."""
    return ClassicSampler(self._options, self.scale, crop)

  def device_draws(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """{}: `param_sampler` draws every parameter on the host."""
    del batch, key
    return {}

  def param_keys(self, crop: bool = True) -> tuple[str, ...]:
    """The keys `param_sampler(crop)` adds to each element."""
    return tuple(self.param_sampler(crop)(np.random.default_rng(0)))

  def record(self, batch: Batch, crop: bool = True) -> dict[str, jax.Array]:
    """The sampled parameters in `batch` plus the blur kernels 'kernel' [B, k, k]."""
    p = {k: jnp.asarray(batch[k]) for k in self.param_keys(crop)}
    p['kernel'] = kernels.kernel_from_params(records.kernel_record(p, 'blur'),
                                             self.config.kernel_size)
    return p

  def _downsample(self, x: jax.Array) -> jax.Array:
    s, how = self.scale, self.config.downsample
    if how == 'bicubic':
      return resize.interpolate(x, size=(x.shape[1] // s, x.shape[2] // s), mode='bicubic')
    if how == 'matlab':
      return matlab.imresize_matlab(x, 1.0 / s)
    return x[:, ::s, ::s]

  def apply(self, hr: jax.Array, p: Batch, key: jax.Array) -> jax.Array:
    """LR patches [B, M, H/s, W/s, C] of HR patches [B, M, H, W, C], task b degraded by the
    record `p` (arrays [B]); each patch gets its own noise field."""
    b, m, h, w, c = hr.shape
    rounding = self.config.rounding
    # Patches as channels: one kernel per task, reflect-101 at each patch's border.
    x = jnp.asarray(hr, jnp.float32).transpose(0, 2, 3, 1, 4).reshape(b, h, w, m * c)
    x = filters.filter_on_canvas(x, p['kernel'])
    if rounding == 'cmdsr':  # cv2 blurs and resizes uint8 images
      x = noise.quantize(x)
    x = self._downsample(x)
    if rounding == 'cmdsr':
      x = noise.quantize(x)
    sigma = p['noise/sigma'][:, None, None, None]
    # 8-bit images stay exact integers on 0..255 (x * 255 may land an ulp below one).
    y = jnp.round(x * 255.0) if rounding == 'cmdsr' else x * 255.0
    y = y + jax.random.normal(key, x.shape, jnp.float32) * sigma
    if rounding == 'cmdsr':  # clip, then numpy's astype(uint8) truncates
      y = jnp.floor(jnp.clip(y, 0.0, 255.0))
    elif rounding == 'round':
      y = jnp.clip(jnp.round(y), 0.0, 255.0)
    else:
      y = jnp.clip(y, 0.0, 255.0)
    x = y / 255.0
    hl, wl = x.shape[1:3]
    x = x.reshape(b, hl, wl, m, c).transpose(0, 3, 1, 2, 4).reshape(b * m, hl, wl, c)
    compressed = _jpeg(x, jnp.repeat(p['jpeg/quality'], m))
    if rounding != 'none':  # decoded JPEG files are 8-bit
      compressed = noise.quantize(compressed)
    x = jnp.where(jnp.repeat(p['jpeg/apply'], m)[:, None, None, None], compressed, x)
    return x.reshape(b, m, hl, wl, c)

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs: {'lq': [B, gt_size/s, ., C], 'gt': [B, gt_size, ., C], 'record'} from
    `batch['gt']` [B, crop_pad, crop_pad, C], the GT crop at 'crop/{top,left}' (LQ pixels)."""
    gt = pipelines.gt_canvas(batch, self.canvas)
    p = self.record(batch)
    s = self.scale
    gt = canvas.crop_batch(gt, p['crop/top'] * s, p['crop/left'] * s, self.config.gt_size)
    lq = self.apply(gt[:, None], p, key)[:, 0]
    return {'lq': lq, 'gt': gt, 'record': p}

  def degrade_whole(self, batch: Batch, key: jax.Array) -> jax.Array:
    """LQ [B, crop_pad/s, ., C] of the whole canvas `batch['gt']` (no crop draws)."""
    gt = pipelines.gt_canvas(batch, self.canvas)
    return self.apply(gt[:, None], self.record(batch, crop=False), key)[:, 0]


def _jpeg(img: jax.Array, quality: jax.Array) -> jax.Array:
  """`diff_jpeg` of RGB or gray [N, H, W, C] (gray compresses as equal RGB channels)."""
  if img.shape[-1] == 3:
    return jpeg.diff_jpeg(img, quality)
  return jpeg.diff_jpeg(jnp.broadcast_to(img, img.shape[:3] + (3,)), quality)[..., :1]
