"""Discriminators: Real-ESRGAN's U-Net with spectral norm."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers, registry


def _detect(sd: registry.StateDict) -> dict[str, Any]:
  nf, cin = registry.out_in(sd, 'conv0.weight')
  return dict(num_in_ch=cin, num_feat=nf)


@registry.register(detect_keys=('conv0.weight', 'conv1.weight_orig', 'conv9.weight'),
                   detect=_detect)
class UNetDiscriminatorSN(nn.Module):
  """Real-ESRGAN `UNetDiscriminatorSN`: per-pixel real/fake logits, H and W divisible by 8.

  `update_stats=True` (training) runs one power iteration per spectral-norm conv per call and
  needs `mutable=['spectral']`; the PyTorch reference does the same on every train-mode forward.
  """
  num_in_ch: int = 3
  num_feat: int = 64
  skip_connection: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    nf = self.num_feat
    sn = functools.partial(layers.SpectralNormConv, dtype=self.dtype)
    down = functools.partial(sn, kernel_size=4, stride=2, padding=1)

    def act(y):
      return layers.lrelu(y, 0.2)

    x0 = act(layers.conv(nf, dtype=self.dtype, name='conv0')(x))
    x1 = act(down(nf * 2, name='conv1')(x0, update_stats))
    x2 = act(down(nf * 4, name='conv2')(x1, update_stats))
    x3 = act(down(nf * 8, name='conv3')(x2, update_stats))
    x4 = act(sn(nf * 4, name='conv4')(layers.upsample_bilinear(x3, 2), update_stats))
    if self.skip_connection:
      x4 = x4 + x2
    x5 = act(sn(nf * 2, name='conv5')(layers.upsample_bilinear(x4, 2), update_stats))
    if self.skip_connection:
      x5 = x5 + x1
    x6 = act(sn(nf, name='conv6')(layers.upsample_bilinear(x5, 2), update_stats))
    if self.skip_connection:
      x6 = x6 + x0
    out = act(sn(nf, name='conv7')(x6, update_stats))
    out = act(sn(nf, name='conv8')(out, update_stats))
    return layers.conv(1, dtype=self.dtype, name='conv9')(out).astype(jnp.float32)
