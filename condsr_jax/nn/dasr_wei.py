"""DASR-Wei (Wei et al., CVPR 2021, "Unsupervised Real-world Image Super Resolution via Domain-
distance Aware Training"): the DSN down-sampling generator, its frequency-separated
discriminator and the SRN's wavelet PatchGAN, with the parameter names of the official
`codes/DSN/model.py` and `codes/SRN/models/modules/architecture.py` (ShuhangGu/DASR).

Images are NHWC in [0, 1]. The discriminators return raw logits; the official DSN applies the
sigmoid inside, so the caller applies it (or uses a BCE-with-logits loss).
"""

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from condsr_jax.degrade import frequency
from condsr_jax.nn import layers, registry


class ResidualBlock(nn.Module):
  """Official DSN `ResidualBlock`: conv, PReLU (one shared slope), conv, plus the input."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, self.features, 3, dtype=self.dtype)
    return x + conv(name='conv2')(layers.PReLU(name='prelu')(conv(name='conv1')(x)))


def _detect_generator(sd: registry.StateDict) -> dict[str, Any]:
  """Sizes of a `De_resnet` state dict; the scale is 2^(number of stride-2 convs)."""
  num_feat, in_channels = registry.out_in(sd, 'block_input.0.weight')
  down_convs = sum(1 for k, v in sd.items() if k.startswith('down_sample.') and v.ndim == 4)
  return dict(scale=2 ** down_convs, num_feat=num_feat, in_channels=in_channels,
              num_block=registry.count_indices(sd, r'res_blocks\.(\d+)\.conv1\.weight'),
              out_channels=int(sd['block_output.weight'].shape[0]))


@registry.register(detect_keys=('block_input.0.weight', 'res_blocks.0.conv1.weight',
                                'down_sample.0.weight', 'block_output.weight'),
                   detect=_detect_generator)
class DSNGenerator(nn.Module):
  """Official `De_resnet`: clean HR [B, H, W, in] -> a source-domain-like LR in (0, 1).

  Conv3x3 + PReLU, `num_block` ResidualBlocks, log2(scale) x [Conv3x3 stride 2 + PReLU],
  Conv3x3 to `out_channels`, sigmoid; no global skip. Every PReLU has one shared slope. Each
  stride-2 conv pads by 1 on every side, as PyTorch, so an odd side n becomes ceil(n / 2).
  """
  scale: int = 4
  num_feat: int = 64
  num_block: int = 8
  in_channels: int = 3
  out_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.scale < 2 or self.scale & (self.scale - 1):
      raise ValueError(f'DSNGenerator downscales by a power of two, got scale {self.scale}')
    conv = functools.partial(layers.conv, self.num_feat, 3, dtype=self.dtype)
    x = layers.PReLU(name='block_input_1')(conv(name='block_input_0')(x))
    for i in range(self.num_block):
      x = ResidualBlock(self.num_feat, self.dtype, name=f'res_blocks_{i}')(x)
    for i in range(int(math.log2(self.scale))):
      x = conv(stride=2, name=f'down_sample_{2 * i}')(x)
      x = layers.PReLU(name=f'down_sample_{2 * i + 1}')(x)
    x = layers.conv(self.out_channels, 3, dtype=self.dtype, name='block_output')(x)
    return nn.sigmoid(x.astype(jnp.float32))

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 4 * self.scale, 4 * self.scale, self.in_channels), jnp.float32),)


FSD_FILTERS = ('gau', 'avg_pool', 'wavelet_cat', 'wavelet_sum', 'none')


def fsd_filter(x: jax.Array, kind: str, kernel_size: int = 5) -> jax.Array:
  """What the DSN discriminator of filter type `kind` sees of [B, H, W, C]: the high-pass
  `filter_high` (Gaussian or box, include_pad=False) at full size, or the normalised Haar detail
  bands at half size ('wavelet_cat': 3C channels, 'wavelet_sum': C); 'none' is the whole image
  (the official `--no_highpass`, a full-image discriminator)."""
  if kind not in FSD_FILTERS:
    raise ValueError(f'unknown discriminator filter {kind!r}; known: {", ".join(FSD_FILTERS)}')
  if kind == 'none':
    return x
  if kind.startswith('wavelet_'):
    return frequency.wavelet_high(x, kind[len('wavelet_'):])
  low_pass = 'gau' if kind == 'gau' else 'avg'
  return frequency.filter_high(x, low_pass, kernel_size, include_pad=False)


def relativistic(logits: jax.Array, reference_logits: jax.Array) -> jax.Array:
  """The official DSN discriminator's RaGAN path (`forward(x, y)` with wgan=True): each logit
  map minus the batch mean of the reference images' maps."""
  return logits - jnp.mean(reference_logits, axis=0)


class DiscriminatorBasic(nn.Module):
  """The FSSR patch discriminator with InstanceNorm (receptive field 13), logits per pixel."""
  num_feat: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, kernel_size=5, dtype=self.dtype)
    x = layers.lrelu(conv(self.num_feat, name='net_0')(x))
    x = layers.lrelu(layers.instance_norm(conv(2 * self.num_feat, name='net_2')(x)))
    x = layers.lrelu(layers.instance_norm(conv(4 * self.num_feat, name='net_5')(x)))
    return layers.conv(1, 1, dtype=self.dtype, name='net_8')(x).astype(jnp.float32)


def _check_fixed_buffer(sd: registry.StateDict, key: str, expected: np.ndarray) -> None:
  """A fixed filter stored in an official state dict must be the one `fsd_filter` applies."""
  if key not in sd:
    raise ValueError(f'{key} is missing: the fixed filter buffers come together')
  value = np.asarray(sd[key], np.float32)
  if value.shape != expected.shape or not np.allclose(value, expected, rtol=0, atol=1e-6):
    raise ValueError(f'{key} is not the fixed filter the discriminator applies: '
                     f'{value.ravel()[:8]} vs {expected.ravel()[:8]}')


_GAUSSIAN_KEY = 'filter.filter_low.filter.gaussian_filter.weight'
_HAAR_KEYS = {f'DWT2.{band}_{axis}': (1, 1, 2, 1) if axis == 'col' else (1, 1, 1, 2)
              for band in ('h0', 'h1') for axis in ('col', 'row')}


def _fsd_buffers(kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The fixed filter buffers an official FSD state dict holds for these constructor arguments
  (the Gaussian `[C, 1, k, k]`, or the four Haar taps; none for the box filter)."""
  d = FSDiscriminator(**kwargs)
  if d.filter == 'gau':
    k = d.kernel_size
    return {_GAUSSIAN_KEY: np.broadcast_to(frequency.gaussian_kernel(k),
                                           (d.in_channels, 1, k, k)).copy()}
  if d.filter.startswith('wavelet'):
    s = 1 / math.sqrt(2)
    return {key: np.asarray([s, s] if '.h0_' in key else [s, -s], np.float32).reshape(shape)
            for key, shape in _HAAR_KEYS.items()}
  return {}


def _detect_fsd(sd: registry.StateDict) -> dict[str, Any]:
  """Filter and sizes of a DSN `Discriminator(D_arch='FSD')` state dict, with its fixed filter
  buffers checked. The Gaussian buffer gives the kernel size; the box filter's size is not
  stored (5 in every official launcher). A wavelet net reading 3C > 3 channels is taken as
  'wavelet_cat' on C-channel images, else as 'wavelet_sum'."""
  num_feat, net_in = registry.out_in(sd, 'net.net.0.weight')
  kwargs = dict(num_feat=num_feat, in_channels=net_in)
  if _GAUSSIAN_KEY in sd:
    kwargs.update(filter='gau', kernel_size=int(sd[_GAUSSIAN_KEY].shape[-1]))
  elif any(k in sd for k in _HAAR_KEYS):
    cat = net_in > 3 and net_in % 3 == 0
    kwargs.update(filter='wavelet_cat' if cat else 'wavelet_sum',
                  in_channels=net_in // 3 if cat else net_in)
  else:
    kwargs.update(filter='avg_pool')
  for key, expected in _fsd_buffers(kwargs).items():
    _check_fixed_buffer(sd, key, expected)
  return kwargs


def _fsd_reads(kwargs: Mapping[str, Any], key: str) -> bool:
  """The network's own weights; the fixed filter buffers are checked by detection instead."""
  del kwargs
  return key.startswith('net.')


@registry.register(detect_keys=('net.net.0.weight', 'net.net.2.weight', 'net.net.5.weight',
                                'net.net.8.weight'), detect=_detect_fsd, uses_key=_fsd_reads,
                   torch_constants=_fsd_buffers)
class FSDiscriminator(nn.Module):
  """Official DSN `Discriminator(D_arch='FSD', norm_layer='Instance')`: `fsd_filter`, then
  `DiscriminatorBasic`: Conv5x5 + LReLU(0.2), 2 x [Conv5x5 + InstanceNorm + LReLU(0.2)], Conv1x1
  to one map. Widths num_feat, 2 num_feat, 4 num_feat (official 64). Returns logits
  [B, h, w, 1] at the filter's size (H x W, or half for the wavelet filters).

  `kernel_size` is the low-pass filter's; `in_channels` (the image's) only sizes `init`.
  """
  filter: str = 'gau'
  kernel_size: int = 5
  num_feat: int = 64
  in_channels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return DiscriminatorBasic(self.num_feat, self.dtype, name='net')(
        fsd_filter(x, self.filter, self.kernel_size))

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 16, 16, self.in_channels), jnp.float32),)


def _detect_nlayer(sd: registry.StateDict) -> dict[str, Any]:
  """Sizes of an SRN `NLayerDiscriminator`; one whose middle convs have a bias is the DSN or
  PDM-SR variant, not this one."""
  if 'model.2.bias' in sd:
    raise ValueError('model.2 has a bias: not the SRN NLayerDiscriminator (its middle convs '
                     'have none)')
  num_feat, in_channels = registry.out_in(sd, 'model.0.weight')
  n_layers = registry.count_indices(sd, r'model\.(\d+)\.weight') - 2  # less the first and last
  return dict(in_channels=in_channels, num_feat=num_feat, n_layers=n_layers)


@registry.register(detect_keys=('model.0.weight', 'model.0.bias', 'model.2.weight'),
                   detect=_detect_nlayer)
class NLayerPatchGAN(nn.Module):
  """Official SRN `NLayerDiscriminator` (netD_target; in 9 = the normalised wavelet detail bands
  of `frequency.wavelet_high`): raw logits [B, h, w, 1].

  4x4 convs with padding 1 on every side: conv stride 2 (bias) + LReLU(0.2); n_layers - 1 x
  [conv stride 2, no bias, InstanceNorm, LReLU]; conv stride 1, no bias, InstanceNorm, LReLU;
  conv stride 1 to one map (bias). Widths num_feat min(2^n, 8).
  """
  in_channels: int = 9
  num_feat: int = 64
  n_layers: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, kernel_size=4, padding=1, dtype=self.dtype)
    x = layers.lrelu(conv(self.num_feat, stride=2, name='model_0')(x))
    for n in range(1, self.n_layers + 1):
      stride = 2 if n < self.n_layers else 1
      x = conv(self.num_feat * min(2 ** n, 8), stride=stride, use_bias=False,
               name=f'model_{3 * n - 1}')(x)
      x = layers.lrelu(layers.instance_norm(x))
    return conv(1, name=f'model_{3 * self.n_layers + 2}')(x).astype(jnp.float32)

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 32, 32, self.in_channels), jnp.float32),)


# Domain-distance maps (DASR-Wei stage 2): the discriminator's per-pixel scores spread back over
# the pixels each one sees, overlaps averaged (the official `receptive_cal.getWeights`).

ConvGeometry = tuple[int, int, int]  # (kernel, stride, padding) of one conv layer, per axis
# `FSDiscriminator`'s convs: three 5x5 (padding 2) and a 1x1, receptive field 13.
FSD_LAYERS: tuple[ConvGeometry, ...] = ((5, 1, 2),) * 3 + ((1, 1, 0),)
# What the official `create_dataset_modified.py` back-projects FSD scores through: four
# [k5, s1, p2] layers, receptive field 17, one 5x5 layer more than the network has.
FSD_REFERENCE_LAYERS: tuple[ConvGeometry, ...] = ((5, 1, 2),) * 4


def receptive_windows(size: int, conv_layers: tuple[ConvGeometry, ...]) -> np.ndarray:
  """[n_out, size] 0/1: the input pixels each output of the conv stack sees along one axis.

  The official `receptive_cal.outFromIn` geometry (jump, receptive field, centre of output 0 at
  `start`) and `weights_matrix` window [start + i jump - rf // 2, ... + rf), truncated to ints
  and clipped to the image.
  """
  n, jump, rf, start = size, 1, 1, 0.5
  for k, s, p in conv_layers:
    n_out = (n - k + 2 * p) // s + 1
    pad_left = ((n_out - 1) * s - n + k) // 2
    start += ((k - 1) / 2 - pad_left) * jump
    rf += (k - 1) * jump
    jump *= s
    n = n_out
  windows = np.zeros((n, size), np.float32)
  for i in range(n):
    centre = start + i * jump
    windows[i, int(max(0, centre - rf // 2)):int(centre + rf - rf // 2)] = 1
  return windows


def domain_distance_map(scores: jax.Array, conv_layers: tuple[ConvGeometry, ...],
                        in_size: tuple[int, int]) -> jax.Array:
  """[B, h, w, 1] discriminator scores -> [B, H, W, 1] on its input grid `in_size`: each pixel
  the mean of the scores whose receptive field covers it (0 where none does)."""
  rows = jnp.asarray(receptive_windows(in_size[0], conv_layers))
  cols = jnp.asarray(receptive_windows(in_size[1], conv_layers))
  if (rows.shape[0], cols.shape[0]) != scores.shape[1:3]:
    raise ValueError(f'scores of size {scores.shape[1:3]} do not come from a {in_size} input '
                     f'through {conv_layers} (that gives {(rows.shape[0], cols.shape[0])})')
  total = jnp.einsum('ip,bijc,jq->bpqc', rows, scores, cols)
  count = jnp.einsum('ip,jq->pq', rows, cols)[None, :, :, None]
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
