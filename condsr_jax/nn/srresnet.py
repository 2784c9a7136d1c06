"""MSRResNet (BasicSR): SRResNet without BatchNorm, plus a bilinear-upsampled skip."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import edsr, layers, registry


def _detect(sd: registry.StateDict) -> dict[str, Any]:
  nf, cin = registry.out_in(sd, 'conv_first.weight')
  up1 = int(sd['upconv1.weight'].shape[0])
  return dict(num_in_ch=cin, num_out_ch=int(sd['conv_last.weight'].shape[0]), num_feat=nf,
              num_block=registry.count_indices(sd, r'body\.(\d+)\.conv1\.weight'),
              upscale=4 if 'upconv2.weight' in sd else int(round((up1 / nf) ** 0.5)))


@registry.register(scale_arg='upscale', detect=_detect,
                   detect_keys=('conv_first.weight', 'body.0.conv1.weight', 'upconv1.weight',
                                'conv_hr.weight'))
class MSRResNet(nn.Module):
  """BasicSR `MSRResNet` (x2, x3, x4); residual blocks as EDSR's, LeakyReLU 0.1 elsewhere."""
  num_in_ch: int = 3
  num_out_ch: int = 3
  num_feat: int = 64
  num_block: int = 16
  upscale: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.upscale not in (2, 3, 4):
      raise ValueError(f'MSRResNet upscale must be 2, 3 or 4, got {self.upscale}')
    conv = functools.partial(layers.conv, dtype=self.dtype)
    act = functools.partial(layers.lrelu, slope=0.1)
    out = act(conv(self.num_feat, name='conv_first')(x))
    for i in range(self.num_block):
      out = edsr.ResidualBlockNoBN(self.num_feat, 1.0, self.dtype, name=f'body_{i}')(out)
    if self.upscale == 4:
      out = act(layers.pixel_shuffle(conv(self.num_feat * 4, name='upconv1')(out), 2))
      out = act(layers.pixel_shuffle(conv(self.num_feat * 4, name='upconv2')(out), 2))
    else:
      r = self.upscale
      out = act(layers.pixel_shuffle(conv(self.num_feat * r * r, name='upconv1')(out), r))
    out = conv(self.num_out_ch, name='conv_last')(act(conv(self.num_feat, name='conv_hr')(out)))
    return out.astype(jnp.float32) + layers.upsample_bilinear(x, self.upscale)
