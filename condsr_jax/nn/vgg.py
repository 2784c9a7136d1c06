"""VGG19 feature extractor for perceptual losses, laid out as torchvision's `vgg19().features`."""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers

_VGG19_CHANNELS = (64, 64, 'P', 128, 128, 'P', 256, 256, 256, 256, 'P', 512, 512, 512, 512, 'P',
                   512, 512, 512, 512, 'P')


def _vgg19_layer_names() -> tuple[str, ...]:
  """Names in torchvision `features` order: conv1_1, relu1_1, ..., pool5 (index = Sequential index)."""
  names, block, conv = [], 1, 1
  for c in _VGG19_CHANNELS:
    if c == 'P':
      names.append(f'pool{block}')
      block, conv = block + 1, 1
    else:
      names += [f'conv{block}_{conv}', f'relu{block}_{conv}']
      conv += 1
  return tuple(names)


VGG19_LAYER_NAMES = _vgg19_layer_names()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
  """Returns {layer name: activation} for `layer_names` (e.g. 'conv5_4' is taken before its ReLU).

  Input is RGB in [0, 1] (or [-1, 1] with `range_norm`); ImageNet mean/std normalisation is
  applied when `use_input_norm`. Only the layers up to the deepest requested one are built, so a
  truncated torchvision state dict (as BasicSR's `features[:35]`) loads.
  """
  layer_names: Sequence[str] = ('conv1_2', 'conv2_2', 'conv3_4', 'conv4_4', 'conv5_4')
  use_input_norm: bool = True
  range_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    unknown = [n for n in self.layer_names if n not in VGG19_LAYER_NAMES]
    if unknown:
      raise ValueError(f'unknown VGG19 layers {unknown}; valid: {VGG19_LAYER_NAMES}')
    last = max(VGG19_LAYER_NAMES.index(n) for n in self.layer_names)
    if self.range_norm:
      x = (x + 1.0) / 2.0
    if self.use_input_norm:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = x.astype(self.dtype)
    out, channels = {}, [c for c in _VGG19_CHANNELS if c != 'P']
    conv_index = 0
    for i, name in enumerate(VGG19_LAYER_NAMES[: last + 1]):
      if name.startswith('conv'):
        x = layers.conv(channels[conv_index], dtype=self.dtype, name=f'features_{i}')(x)
        conv_index += 1
      elif name.startswith('relu'):
        x = nn.relu(x)
      else:
        x = nn.max_pool(x, (2, 2), (2, 2))
      if name in self.layer_names:
        out[name] = x.astype(jnp.float32)
    return out
