"""Full-reference perceptual distances as networks: LPIPS (AlexNet or VGG16 trunk) and DISTS.

Both are laid out as their PyTorch modules (`lpips.LPIPS`, `DISTS_pytorch.DISTS`), so their state
dicts convert key for key; `condsr_jax.perceptual` assembles those from the torchvision trunk and
the small learned part each package ships. Inputs are NHWC RGB in [0, 1]; the output is one
distance per image (lower: more alike).
"""

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from condsr_jax.nn import layers, registry

# torchvision `features` layouts, one entry per Sequential index: ('conv', kernel, stride, pad),
# ('relu',) or ('pool', window, stride). Conv widths are given separately.
_ALEXNET = (('conv', 11, 4, 2), ('relu',), ('pool', 3, 2), ('conv', 5, 1, 2), ('relu',),
            ('pool', 3, 2), ('conv', 3, 1, 1), ('relu',), ('conv', 3, 1, 1), ('relu',),
            ('conv', 3, 1, 1), ('relu',))
_VGG16 = tuple(layer for convs in (2, 2, 3, 3, 3)
               for layer in (('conv', 3, 1, 1), ('relu',)) * convs + (('pool', 2, 2),))
TRUNKS = {'alex': _ALEXNET, 'vgg': _VGG16}
WIDTHS = {'alex': (64, 192, 384, 256, 256), 'vgg': (64, 128, 256, 512, 512)}
# The Sequential index each of the five LPIPS slices / DISTS stages ends before.
LPIPS_SLICE_ENDS = {'alex': (2, 5, 8, 10, 12), 'vgg': (4, 9, 16, 23, 30)}
DISTS_STAGE_ENDS = (4, 9, 16, 23, 30)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips.ScalingLayer, on inputs in [-1, 1]
LPIPS_SCALE = (0.458, 0.448, 0.450)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def slice_of(index: int, ends: Sequence[int]) -> int:
  """1-based slice (stage) that holds Sequential index `index`."""
  return next(k for k, end in enumerate(ends, 1) if index < end)


def _conv_widths(layout: Sequence[tuple], widths: Sequence[int], ends: Sequence[int]
                 ) -> dict[int, int]:
  """Sequential index of each conv -> its width (the width of its slice)."""
  return {i: widths[slice_of(i, ends) - 1] for i, layer in enumerate(layout) if layer[0] == 'conv'}


def _max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  return nn.max_pool(x, (window, window), (stride, stride))  # floor mode, as torch


def _l2_pool(x: jax.Array) -> jax.Array:
  """DISTS's L2pooling: sqrt(depthwise 3x3 Hann blur of x^2, stride 2, padding 1)."""
  a = np.hanning(5)[1:-1]
  g = a[:, None] * a[None, :]
  g = jnp.asarray(g / g.sum(), x.dtype)
  c = x.shape[-1]
  out = jax.lax.conv_general_dilated(
      x * x, jnp.tile(g[:, :, None, None], (1, 1, 1, c)), (2, 2), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)
  return jnp.sqrt(out + 1e-12)


def _features(x: jax.Array, layout: Sequence[tuple], widths: Sequence[int], ends: Sequence[int],
              prefix: str, l2_pool: bool = False, dtype: Any = jnp.float32) -> list[jax.Array]:
  """Runs a torchvision feature stack inside the calling module's `compact` method, its convs
  named PREFIX{slice}_{index} and computing in `dtype`; returns the activation at the end of
  every slice. `l2_pool` swaps max-pooling for DISTS's L2 pooling."""
  conv_widths = _conv_widths(layout, widths, ends)
  taps = []
  for i, layer in enumerate(layout[:ends[-1]]):
    if layer[0] == 'conv':
      _, kernel, stride, pad = layer
      name = f'{prefix}{slice_of(i, ends)}_{i}'
      x = layers.conv(conv_widths[i], kernel, stride, pad, dtype=dtype, name=name)(x)
    elif layer[0] == 'relu':
      x = nn.relu(x)
    else:
      x = _l2_pool(x) if l2_pool else _max_pool(x, layer[1], layer[2])
    if i + 1 in ends:
      taps.append(x)
  return taps


class _LPIPSTrunk(nn.Module):
  """LPIPS's `net`: the trunk's five slices, convs named slice{k}_{index}."""
  net: str
  widths: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    return _features(x, TRUNKS[self.net], self.widths, LPIPS_SLICE_ENDS[self.net], 'slice',
                     dtype=self.dtype)


class _LinLayer(nn.Module):
  """lpips.NetLinLayer: (dropout, inactive at evaluation) then a 1x1 conv to one channel."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Conv(1, (1, 1), use_bias=False, name='model_1')(x)


def _unit_normalize(f: jax.Array) -> jax.Array:
  """lpips.normalize_tensor: each position's feature vector divided by its L2 norm + 1e-10."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)


def _lpips_detect(sd: registry.StateDict) -> dict[str, Any]:
  net = 'alex' if sd['net.slice1.0.weight'].shape[-1] == 11 else 'vgg'
  widths = tuple(int(sd[f'lin{k}.model.1.weight'].shape[1]) for k in range(5))
  return dict(net=net, widths=widths)


def _lpips_uses_key(kwargs: Mapping[str, Any], key: str) -> bool:
  del kwargs
  return key.startswith(('net.', 'lin')) and not key.startswith('lins.')


@registry.register(detect_keys=('net.slice1.0.weight', 'lin0.model.1.weight'),
                   detect=_lpips_detect, uses_key=_lpips_uses_key)
class LPIPS(nn.Module):
  """LPIPS v0.1 (`lpips.LPIPS(net=...)`): trunk features, unit-normalised per position, squared
  differences weighted by the linear layers, averaged over space and summed over the five
  layers. `per_layer` also returns the five terms ([N, 5]). The trunk computes in `dtype`; its
  features are normalised and compared in float32."""
  net: str = 'alex'  # 'alex' | 'vgg'
  widths: Sequence[int] | None = None  # the five slice widths (default: the trunk's)
  dtype: Any = jnp.float32

  def example_inputs(self) -> tuple[jax.Array, jax.Array]:
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    return x, x

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array, per_layer: bool = False):
    if self.net not in TRUNKS:
      raise ValueError(f'LPIPS net {self.net!r}: one of {sorted(TRUNKS)}')
    trunk = _LPIPSTrunk(self.net, self.widths or WIDTHS[self.net], self.dtype, name='net')
    shift, scale = jnp.asarray(LPIPS_SHIFT), jnp.asarray(LPIPS_SCALE)
    n = x.shape[0]
    feats = trunk((2 * jnp.concatenate([x, y]) - 1 - shift) / scale)
    terms = []
    for k, f in enumerate(feats):
      f = _unit_normalize(f.astype(jnp.float32))
      diff = jnp.square(f[:n] - f[n:])
      terms.append(_LinLayer(name=f'lin{k}')(diff).mean(axis=(1, 2, 3)))
    terms = jnp.stack(terms, axis=1)
    total = terms.sum(axis=1)
    return (total, terms) if per_layer else total


def _dists_detect(sd: registry.StateDict) -> dict[str, Any]:
  widths = []
  for k in range(1, 6):
    convs = [v for key, v in sd.items() if key.startswith(f'stage{k}.') and key.endswith('.weight')]
    widths.append(int(convs[-1].shape[0]))
  return dict(widths=tuple(widths))


def _dists_uses_key(kwargs: Mapping[str, Any], key: str) -> bool:
  del kwargs
  return key in ('alpha', 'beta') or (key.startswith('stage') and not key.endswith('.filter'))


@registry.register(detect_keys=('stage1.0.weight', 'alpha', 'beta'), detect=_dists_detect,
                   uses_key=_dists_uses_key)
class DISTS(nn.Module):
  """DISTS (`DISTS_pytorch.DISTS`): structure and texture similarity of the image itself and
  five VGG16 stages (L2 pooling instead of max-pooling), weighted by the learned alpha, beta."""
  widths: Sequence[int] = WIDTHS['vgg']

  def example_inputs(self) -> tuple[jax.Array, jax.Array]:
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    return x, x

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    channels = (x.shape[-1], *self.widths)
    init = nn.initializers.normal(0.01)
    alpha = self.param('alpha', lambda k, s: 0.1 + init(k, s), (1, sum(channels), 1, 1))
    beta = self.param('beta', lambda k, s: 0.1 + init(k, s), (1, sum(channels), 1, 1))
    n = x.shape[0]
    both = jnp.concatenate([x, y])
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    feats = [both] + _features((both - mean) / std, _VGG16, self.widths, DISTS_STAGE_ENDS,
                               'stage', l2_pool=True)
    w_sum = alpha.sum() + beta.sum()
    splits = np.cumsum(channels)[:-1]
    alphas = jnp.split(alpha.reshape(-1) / w_sum, splits)
    betas = jnp.split(beta.reshape(-1) / w_sum, splits)
    c1 = c2 = 1e-6
    structure = texture = 0.0
    for f, a, b in zip(feats, alphas, betas):
      fx, fy = f[:n], f[n:]
      mx, my = fx.mean(axis=(1, 2)), fy.mean(axis=(1, 2))
      s1 = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
      structure = structure + (a * s1).sum(axis=-1)
      vx = jnp.square(fx - mx[:, None, None]).mean(axis=(1, 2))
      vy = jnp.square(fy - my[:, None, None]).mean(axis=(1, 2))
      cov = (fx * fy).mean(axis=(1, 2)) - mx * my
      s2 = (2 * cov + c2) / (vx + vy + c2)
      texture = texture + (b * s2).sum(axis=-1)
    return 1 - (structure + texture)
