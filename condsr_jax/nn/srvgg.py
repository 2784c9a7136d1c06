"""SRVGGNetCompact (Real-ESRGAN's small model: realesr-general-x4v3, animevideov3)."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers


class SRVGGNetCompact(nn.Module):
  """A plain conv stack at LR resolution, pixel shuffle, plus the nearest-upsampled input.

  Layers are named `body_{index}` as in the PyTorch `ModuleList` (convs even, activations odd).
  """
  num_in_ch: int = 3
  num_out_ch: int = 3
  num_feat: int = 64
  num_conv: int = 16
  upscale: int = 4
  act_type: str = 'prelu'
  dtype: Any = jnp.float32

  def _act(self, x: jax.Array, index: int) -> jax.Array:
    if self.act_type == 'prelu':
      return layers.PReLU(self.num_feat, name=f'body_{index}')(x)
    if self.act_type == 'relu':
      return nn.relu(x)
    if self.act_type == 'lrelu':
      return layers.lrelu(x, 0.1)
    raise ValueError(f"act_type must be 'prelu', 'relu' or 'lrelu', got {self.act_type!r}")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = layers.conv(self.num_feat, dtype=self.dtype, name='body_0')(x)
    out = self._act(out, 1)
    for i in range(self.num_conv):
      out = layers.conv(self.num_feat, dtype=self.dtype, name=f'body_{2 * i + 2}')(out)
      out = self._act(out, 2 * i + 3)
    last = 2 * self.num_conv + 2
    out = layers.conv(self.num_out_ch * self.upscale ** 2, dtype=self.dtype, name=f'body_{last}')(out)
    out = layers.pixel_shuffle(out.astype(jnp.float32), self.upscale)
    return out + layers.upsample_nearest(x, self.upscale)
