"""EDSR (BasicSR `EDSR`), with its image range and RGB mean shift."""

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers, registry


class ResidualBlockNoBN(nn.Module):
  """conv-ReLU-conv, scaled by `res_scale`, plus the input."""
  num_feat: int = 64
  res_scale: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, self.num_feat, dtype=self.dtype)
    return x + conv(name='conv2')(nn.relu(conv(name='conv1')(x))) * self.res_scale


def upsample(x: jax.Array, scale: int, num_feat: int, dtype: Any, prefix: str = 'upsample') -> jax.Array:
  """BasicSR `Upsample`: log2(scale) x [conv(4 nf) + PixelShuffle(2)], or conv(9 nf) + PixelShuffle(3).

  Call inside a compact module: the convs are named `{prefix}_{index in the PyTorch Sequential}`.
  """
  conv = functools.partial(layers.conv, dtype=dtype)
  if scale & (scale - 1) == 0:
    for i in range(int(math.log2(scale))):
      x = layers.pixel_shuffle(conv(4 * num_feat, name=f'{prefix}_{2 * i}')(x), 2)
  elif scale == 3:
    x = layers.pixel_shuffle(conv(9 * num_feat, name=f'{prefix}_0')(x), 3)
  else:
    raise ValueError(f'scale {scale} is not supported: use 2^n or 3')
  return x


def _detect(sd: registry.StateDict) -> dict[str, Any]:
  nf, cin = registry.out_in(sd, 'conv_first.weight')
  ups = registry.count_indices(sd, r'upsample\.(\d+)\.weight')
  upscale = 3 if int(sd['upsample.0.weight'].shape[0]) == 9 * nf else 2 ** ups
  return dict(num_in_ch=cin, num_out_ch=int(sd['conv_last.weight'].shape[0]), num_feat=nf,
              num_block=registry.count_indices(sd, r'body\.(\d+)\.conv1\.weight'),
              upscale=upscale,
              res_scale=0.1 if nf >= 256 else 1.0)  # BasicSR EDSR-L uses 0.1; not stored


@registry.register(scale_arg='upscale', detect=_detect,
                   detect_keys=('conv_first.weight', 'body.0.conv1.weight',
                                'conv_after_body.weight', 'upsample.0.weight'))
class EDSR(nn.Module):
  """BasicSR `EDSR`: x -> (x - mean) * img_range -> ... -> / img_range + mean."""
  num_in_ch: int = 3
  num_out_ch: int = 3
  num_feat: int = 64
  num_block: int = 16
  upscale: int = 4
  res_scale: float = 1.0
  img_range: float = 255.0
  rgb_mean: Sequence[float] = layers.DIV2K_MEAN
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mean = jnp.asarray(self.rgb_mean, jnp.float32)
    if mean.shape[0] != self.num_in_ch:
      mean = jnp.full((self.num_in_ch,), jnp.mean(mean))
    conv = functools.partial(layers.conv, dtype=self.dtype)
    x = conv(self.num_feat, name='conv_first')((x - mean) * self.img_range)
    res = x
    for i in range(self.num_block):
      res = ResidualBlockNoBN(self.num_feat, self.res_scale, self.dtype, name=f'body_{i}')(res)
    res = conv(self.num_feat, name='conv_after_body')(res) + x
    x = upsample(res, self.upscale, self.num_feat, self.dtype)
    x = conv(self.num_out_ch, name='conv_last')(x).astype(jnp.float32)
    return x / self.img_range + mean[: self.num_out_ch]
