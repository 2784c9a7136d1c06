"""SRVGGNetCompact (Real-ESRGAN's small model: realesr-general-x4v3, animevideov3)."""

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.degrade import resize
from condsr_jax.nn import layers, registry


def _detect(sd: registry.StateDict) -> dict[str, Any]:
  convs = sorted(int(m.group(1)) for k in sd if (m := re.match(r'body\.(\d+)\.weight$', k))
                 and sd[k].ndim == 4)
  nf, cin = registry.out_in(sd, 'body.0.weight')
  last_out = int(sd[f'body.{convs[-1]}.weight'].shape[0])
  upscale = int(round((last_out / cin) ** 0.5))
  if 'body.1.weight' not in sd:
    raise ValueError('SRVGGNetCompact without PReLU weights: the activation (relu or lrelu) is '
                     'not stored in the file; pass --set act_type=relu or act_type=lrelu')
  return dict(num_in_ch=cin, num_out_ch=last_out // upscale ** 2, num_feat=nf,
              num_conv=len(convs) - 2, upscale=upscale, act_type='prelu')


def _torch_notes(kwargs: Mapping[str, Any]) -> list[str]:
  """Real-ESRGAN's SRVGGNetCompact (and spandrel) always add a nearest-upsampled skip."""
  skip = kwargs.get('skip', 'nearest')
  if skip == 'nearest':
    return []
  return [f"this SRVGGNetCompact adds a {skip}-upsampled input; Real-ESRGAN's class and spandrel "
          'add a nearest-upsampled one, so they load the weights but compute another output '
          '(condsr_jax reads the skip stored in the file)']


@registry.register(scale_arg='upscale', detect_keys=('body.0.weight',), detect=_detect,
                   torch_notes=_torch_notes)
class SRVGGNetCompact(nn.Module):
  """A plain conv stack at LR resolution, pixel shuffle, plus the upsampled input.

  Layers are named `body_{index}` as in the PyTorch `ModuleList` (convs even, activations odd).
  `skip` is how the input is upsampled: 'nearest' as Real-ESRGAN (its checkpoints need it), or
  'bicubic' (PyTorch's): the net then starts from bicubic's output and learns what bicubic
  misses, so a short training does not show the nearest skip's 4x4 blocks.
  """
  num_in_ch: int = 3
  num_out_ch: int = 3
  num_feat: int = 64
  num_conv: int = 16
  upscale: int = 4
  act_type: str = 'prelu'
  skip: str = 'nearest'  # or 'bicubic'
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
    if self.skip == 'nearest':
      return out + layers.upsample_nearest(x, self.upscale)
    if self.skip == 'bicubic':
      return out + resize.interpolate(x.astype(jnp.float32), scale_factor=self.upscale,
                                      mode='bicubic')
    raise ValueError(f"skip must be 'nearest' or 'bicubic', got {self.skip!r}")
