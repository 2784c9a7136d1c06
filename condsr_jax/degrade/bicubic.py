"""The classic "bicubic" training pairs: LR = MATLAB bicubic downscale of HR, stored as 8 bits."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from condsr_jax.degrade import canvas, matlab, noise, pipelines, records

Batch = pipelines.Batch


def default_config(scale: int = 4) -> ml_collections.ConfigDict:
  """EDSR's and RCAN's training pairs: GT patches of 48 LR pixels, taken from the whole crop."""
  c = ml_collections.ConfigDict()
  c.kind = 'bicubic'
  c.gt_size = 48 * scale
  c.crop_pad = 48 * scale  # GT canvas the patches come from (the training stream's crop)
  return c


def downscale(gt: jax.Array, scale: int) -> jax.Array:
  """MATLAB `imresize(gt, 1/scale)` rounded to 8 bits, as the LR files of a bicubic dataset."""
  return noise.quantize(matlab.imresize_matlab(gt, 1.0 / scale))


@pipelines.register('bicubic')
class BicubicDegradation:
  """GT crops of `gt_size` (random, per sample) and their MATLAB-bicubic 1/scale LR."""

  patchwise = True  # each crop is downscaled on its own

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    self.validate(config, scale)
    self.config = config
    self.scale = scale
    self.canvas = config.crop_pad

  @classmethod
  def default_config(cls, scale: int) -> ml_collections.ConfigDict:
    """EDSR's settings at `scale` (`default_config` of this module)."""
    return default_config(scale)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict, scale: int,
               field: str = 'degradation') -> None:
    """Raises `ConfigError` naming the first wrong field (found at `field`)."""
    pipelines.check_sizes(config, scale, field)

  def param_sampler(self, crop: bool = True) -> records.CropSampler | None:
    """The crop offsets for grain; None without `crop` (the rest is deterministic)."""
    return records.CropSampler(self.canvas, self.config.gt_size, self.scale) if crop else None

  def device_draws(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """{}: `param_sampler` draws every parameter on the host."""
    del batch, key
    return {}

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs {'lq': [B, gt_size/s, ., C], 'gt': [B, gt_size, ., C], 'record'}: the GT
    crop at 'crop/{top,left}' (LQ pixels) of `batch['gt']` and its downscale."""
    del key  # deterministic
    top, left = (jnp.asarray(batch[k], jnp.int32) for k in ('crop/top', 'crop/left'))
    s = self.scale
    gt = pipelines.gt_canvas(batch, self.canvas)
    gt = canvas.crop_batch(gt, top * s, left * s, self.config.gt_size)
    return {'lq': downscale(gt, s), 'gt': gt, 'record': {'crop/top': top, 'crop/left': left}}

  def degrade_whole(self, batch: Batch, key: jax.Array) -> jax.Array:
    """LQ [B, crop_pad/s, ., C]: the downscale of the whole canvas `batch['gt']`."""
    del key
    return downscale(pipelines.gt_canvas(batch, self.canvas), self.scale)
