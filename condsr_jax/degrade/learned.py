"""A learned degradation: LR synthesised by a trained PDM-SR degradation model (`DegModel`).

`degradation.model` is a model file of a `DegModel` (`models.save_model`); its variables are
loaded once and held as constants of the jitted step. Each sample gets its own random codes
(the kernel code zk and the noise code zn), drawn on the device from the step key, so each
sample has its own blur kernel and noise; BatchNorm uses the model's running statistics. The
GT crop is degraded as PDM-SR degrades HR patches (no USM sharpening of the input), and the LR
is by default clamped and rounded to 8 bits, as PDM-SR's SR network reads it. The only host
draws are the crop offsets.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import canvas, filters, kernels, noise, pipelines, records

Batch = pipelines.Batch

ARCH = 'DegModel'
CODES = ('code/kernel', 'code/noise')  # the record keys of the random codes zk, zn


def default_config(scale: int = 4) -> ml_collections.ConfigDict:
  """GT crops of 256 pixels degraded by the model file `model` (a path to set)."""
  c = ml_collections.ConfigDict()
  c.kind = 'learned'
  c.model = ''  # path of a DegModel model file (`models.save_model`)
  c.gt_size = 256 // scale * scale
  c.crop_pad = c.gt_size  # GT canvas the crops come from (the training stream's crop)
  c.quantize = True  # clamp the LR to [0, 1] and round it to 8 bits (the SR input of PDM-SR)
  # Real-ESRGAN's USM of the GT crop, the pixel target of recipes with `loss.pixel_target='usm'`.
  c.usm_weight = 0.5
  c.usm_radius = 50
  c.usm_threshold = 10.0
  return c


def load(config: ml_collections.ConfigDict, scale: int, field: str = 'degradation'
         ) -> tuple[Any, Any]:
  """The (`models.ModelSpec`, variables) of `config.model`, checked to be a DegModel of
  `scale`."""
  # Imported here: the networks (`nn.pdm`) import this package.
  from condsr_jax import models  # pylint: disable=g-import-not-at-top
  path = config.model
  config_lib.check(bool(path) and os.path.isfile(path), f'{field}.model',
                   'no such file: the path of a DegModel model file', path)
  try:
    spec, variables, _ = models.load_model_file(path)
  except (OSError, ValueError) as e:
    raise config_lib.ConfigError(
        f'config.{field}.model = {path!r}: unreadable as a model file ({e})') from e
  config_lib.check(spec.arch == ARCH, f'{field}.model',
                   f'a {spec.arch} model file, not a {ARCH} (a learned degradation)', path)
  model_scale = int(spec.build().scale)
  config_lib.check(model_scale == scale, f'{field}.model',
                   f'a x{model_scale} degradation model; the run is x{scale}', path)
  return spec, variables


def _checked(config: ml_collections.ConfigDict, scale: int, field: str = 'degradation'
             ) -> tuple[Any, Any]:
  """`load` after the size checks, the crop checked against the model's kernel padding: what
  `validate` checks and the constructor uses, the model file read once."""
  pipelines.check_sizes(config, scale, field)
  spec, variables = load(config, scale, field)
  pad = int(spec.build().ksize) // 2
  config_lib.check(config.gt_size > pad, f'{field}.gt_size',
                   f'must exceed the model\'s kernel padding ({pad} pixels)', config.gt_size)
  return spec, variables


@pipelines.register('learned')
class LearnedDegradation:
  """GT crops -> LQ by a DegModel file, one random kernel and noise code per sample."""

  patchwise = False  # degrades whole canvases once; patches are crops of the result

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    spec, variables = _checked(config, scale)
    self.config = config
    self.scale = scale
    self.canvas = config.crop_pad
    self.model = spec.build()
    self.variables = jax.tree.map(jnp.asarray, variables)

  @classmethod
  def default_config(cls, scale: int) -> ml_collections.ConfigDict:
    """`default_config` of this module (its `model` is to be set)."""
    return default_config(scale)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict, scale: int,
               field: str = 'degradation') -> None:
    """Raises `ConfigError` naming the first wrong field (found at `field`)."""
    _checked(config, scale, field)

  def param_sampler(self, crop: bool = True) -> records.CropSampler | None:
    """The crop offsets for grain; None without `crop` (the codes are drawn on the device)."""
    return records.CropSampler(self.canvas, self.config.gt_size, self.scale) if crop else None

  def device_draws(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """The codes 'code/kernel' [B, 1, 1, nc] and 'code/noise' (when the model reads one) of
    the images `batch['gt']` [B, H, W, C], standard normal as the model's own 'latent' draws."""
    m = self.model
    b, h, w = batch['gt'].shape[:3]
    k_kernel, k_noise = jax.random.split(key)
    out = {'code/kernel': jax.random.normal(k_kernel, (b, 1, 1, m.kernel_nc))}
    if m.noise and m.noise_nc:
      size = (h // self.scale, w // self.scale) if m.noise_spatial else (1, 1)
      out['code/noise'] = jax.random.normal(k_noise, (b, *size, m.noise_nc))
    return out

  def synthesize(self, hr: jax.Array, codes: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """LQ [B, H/s, W/s, C] of HR [B, H, W, C] under `codes`, and its record: the codes, the
    kernels 'kernel' [B, k, k], their widths 'kernel/sigma_x', 'kernel/sigma_y' (HR pixels)
    and 'noise/sigma', the RMS of the added noise (on 0..255, as the classic kind's)."""
    channels = hr.shape[-1]
    rgb = jnp.broadcast_to(hr, (*hr.shape[:3], 3))  # gray images run as equal RGB channels
    lq, kernel, noise_map = self.model.apply(self.variables, rgb, codes['code/kernel'],
                                             codes.get('code/noise'), train=False)
    if self.config.quantize:
      lq = noise.quantize(lq)
    sigma_x, sigma_y = kernels.widths(kernel)
    level = (jnp.zeros(hr.shape[0]) if noise_map is None
             else jnp.sqrt(jnp.mean(jnp.square(noise_map), (1, 2, 3))) * 255.0)
    record = {**codes, 'kernel': kernel, 'kernel/sigma_x': sigma_x, 'kernel/sigma_y': sigma_y,
              'noise/sigma': level}
    return lq[..., :channels], record

  def _codes(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """The codes `batch` carries (drawn once for several calls), else fresh ones from `key`."""
    if CODES[0] in batch:
      return {k: jnp.asarray(batch[k]) for k in CODES if k in batch}
    return self.device_draws(batch, key)

  def _usm(self, gt: jax.Array) -> jax.Array:
    c = self.config
    return filters.usm_sharp(gt, c.usm_weight, c.usm_threshold, c.usm_radius)

  def degrade(self, batch: Batch, key: jax.Array, crop: bool = True) -> dict[str, Any]:
    """Whole-canvas degradation: {'lq': [B, S/s, S/s, C], 'gt_usm': [B, S, S, C], 'record'}
    of `batch['gt']` [B, S, S, C] (S = crop_pad); `crop` adds its crop offsets to the record."""
    gt = pipelines.gt_canvas(batch, self.canvas)
    lq, record = self.synthesize(gt, self._codes(batch, key))
    if crop:
      record.update({k: jnp.asarray(batch[k]) for k in ('crop/top', 'crop/left')})
    return {'lq': lq, 'gt_usm': self._usm(gt), 'record': record}

  def degrade_whole(self, batch: Batch, key: jax.Array) -> jax.Array:
    """LQ [B, crop_pad/s, ., C] of the whole canvas `batch['gt']` (no crop draws)."""
    return self.degrade(batch, key, crop=False)['lq']

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs {'lq': [B, gt_size/s, ., C], 'gt', 'gt_usm': [B, gt_size, ., C],
    'record'}: the GT crop at 'crop/{top,left}' (LQ pixels) of `batch['gt']`, degraded."""
    top, left = (jnp.asarray(batch[k], jnp.int32) for k in ('crop/top', 'crop/left'))
    s = self.scale
    gt = pipelines.gt_canvas(batch, self.canvas)
    gt = canvas.crop_batch(gt, top * s, left * s, self.config.gt_size)
    lq, record = self.synthesize(gt, self.device_draws({'gt': gt}, key))
    record.update({'crop/top': top, 'crop/left': left})
    return {'lq': lq, 'gt': gt, 'gt_usm': self._usm(gt), 'record': record}
