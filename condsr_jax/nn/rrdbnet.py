"""RRDBNet (ESRGAN / Real-ESRGAN generator), parameter names as BasicSR's state dict."""

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers, registry

_rdb_init = layers.kaiming_normal_scaled(0.1)


class ResidualDenseBlock(nn.Module):
  """Five densely connected 3x3 convs; output scaled by 0.2 and added to the input."""
  num_feat: int = 64
  num_grow_ch: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, scales: Sequence[jax.Array] | None = None) -> jax.Array:
    """`scales[i]` ([B, C_in]), when given, multiplies the input channels of conv i + 1."""
    conv = functools.partial(layers.conv, kernel_init=_rdb_init, dtype=self.dtype)
    feats = [x]

    def conv_input(i: int) -> jax.Array:
      inp = jnp.concatenate(feats, -1)
      return inp if scales is None else inp * scales[i][:, None, None, :].astype(inp.dtype)

    for i in range(1, 5):
      feats.append(layers.lrelu(conv(self.num_grow_ch, name=f'conv{i}')(conv_input(i - 1))))
    x5 = conv(self.num_feat, name='conv5')(conv_input(4))
    return x5 * 0.2 + x


class RRDB(nn.Module):
  """Residual-in-residual dense block: three RDBs, output scaled by 0.2 plus the input."""
  num_feat: int = 64
  num_grow_ch: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               scales: Sequence[Sequence[jax.Array]] | None = None) -> jax.Array:
    """`scales[i]`, when given, are the input-channel scales of RDB i + 1's convs."""
    out = x
    for i in range(1, 4):
      out = ResidualDenseBlock(self.num_feat, self.num_grow_ch, self.dtype, name=f'rdb{i}')(
          out, None if scales is None else scales[i - 1])
    return out * 0.2 + x


def detect(sd: registry.StateDict) -> dict[str, Any]:
  """RRDBNet arguments from a BasicSR state dict; the scale from conv_first's input channels."""
  nf, cin = registry.out_in(sd, 'conv_first.weight')
  cout = int(sd['conv_last.weight'].shape[0])
  scale = {1: 4, 4: 2, 16: 1}.get(cin // cout)
  if scale is None or cin % cout:
    raise ValueError(f'RRDBNet conv_first has {cin} input channels for {cout} output channels: '
                     'expected 1x (x4), 4x (x2) or 16x (x1)')
  return dict(num_in_ch=cout, num_out_ch=cout, scale=scale, num_feat=nf,
              num_block=registry.count_indices(sd, r'body\.(\d+)\.rdb1\.conv1\.weight'),
              num_grow_ch=int(sd['body.0.rdb1.conv1.weight'].shape[0]))


DETECT_KEYS = ('conv_first.weight', 'body.0.rdb1.conv1.weight', 'conv_up1.weight')


# ESRGAN's own RRDBNet (xinntao/ESRGAN, the RRDB_ESRGAN_x4.pth release) under BasicSR's names.
ESRGAN_RENAMES = ((r'^RRDB_trunk\.(\d+)\.RDB(\d)\.', r'body.\1.rdb\2.'),
                  (r'^trunk_conv\.', 'conv_body.'), (r'^upconv(\d)\.', r'conv_up\1.'),
                  (r'^HRconv\.', 'conv_hr.'))


def torch_notes(kwargs: Mapping[str, Any]) -> list[str]:
  """spandrel reads RRDBNet checkpoints with the growth width of every released ESRGAN."""
  growth = kwargs.get('num_grow_ch', 32)
  if growth == 32:
    return []
  return [f'spandrel will not load this RRDBNet: its growth width is {growth}, spandrel assumes '
          "32 (BasicSR's RRDBNet(num_grow_ch=...) loads it)"]


@registry.register(scale_arg='scale', detect_keys=DETECT_KEYS, detect=detect,
                   key_renames=ESRGAN_RENAMES, torch_notes=torch_notes)
class RRDBNet(nn.Module):
  """BasicSR `RRDBNet`. Scale 2 and 1 pixel-unshuffle the input first (by 2 and 4).

  `remat` recomputes each RRDB in the backward pass (less memory, same result).
  `body_scales[i]`, when given, scales the conv inputs of trunk block i channel-wise (one
  [B, C_in] array per conv, nested per RDB), the hook of the conditional `CMDSRRRDBNet`.
  """
  num_in_ch: int = 3
  num_out_ch: int = 3
  scale: int = 4
  num_feat: int = 64
  num_block: int = 23
  num_grow_ch: int = 32
  remat: bool = False
  dtype: Any = jnp.float32

  @property
  def input_multiple(self) -> int:
    """Input H and W must be multiples of this (pixel-unshuffle factor)."""
    return 4 // self.scale

  @nn.compact
  def __call__(self, x: jax.Array,
               body_scales: Sequence[Sequence[Sequence[jax.Array]]] | None = None) -> jax.Array:
    if self.scale not in (1, 2, 4):
      raise ValueError(f'RRDBNet scale must be 1, 2 or 4, got {self.scale}')
    if self.scale < 4:
      x = layers.pixel_unshuffle(x, 4 // self.scale)
    conv = functools.partial(layers.conv, dtype=self.dtype)
    block = nn.remat(RRDB) if self.remat else RRDB
    feat = conv(self.num_feat, name='conv_first')(x)
    body = feat
    for i in range(self.num_block):
      body = block(self.num_feat, self.num_grow_ch, self.dtype, name=f'body_{i}')(
          body, None if body_scales is None else body_scales[i])
    feat = feat + conv(self.num_feat, name='conv_body')(body)
    feat = layers.lrelu(conv(self.num_feat, name='conv_up1')(layers.upsample_nearest(feat, 2)))
    feat = layers.lrelu(conv(self.num_feat, name='conv_up2')(layers.upsample_nearest(feat, 2)))
    out = conv(self.num_out_ch, name='conv_last')(layers.lrelu(conv(self.num_feat, name='conv_hr')(feat)))
    return out.astype(jnp.float32)
