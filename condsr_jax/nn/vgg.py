"""VGG19 feature extractor for perceptual losses, laid out as torchvision's `vgg19().features`."""

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import layers, registry

_CONVS_PER_STAGE = (2, 2, 4, 4, 4)
DEFAULT_WIDTHS = (64, 128, 256, 512, 512)


def _vgg19_layer_names() -> tuple[str, ...]:
  """Names in torchvision `features` order: conv1_1, relu1_1, ..., pool5 (index = Sequential index)."""
  names = []
  for stage, convs in enumerate(_CONVS_PER_STAGE, 1):
    for conv in range(1, convs + 1):
      names += [f'conv{stage}_{conv}', f'relu{stage}_{conv}']
    names.append(f'pool{stage}')
  return tuple(names)


VGG19_LAYER_NAMES = _vgg19_layer_names()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LAYERS = ('conv1_2', 'conv2_2', 'conv3_4', 'conv4_4', 'conv5_4')


def _stage(layer_name: str) -> int:
  """0-based stage of a layer: 'conv3_4' -> 2."""
  return int(re.match(r'[a-z]+(\d)', layer_name).group(1)) - 1


def _last_index(layer_names: Sequence[str]) -> int:
  return max(VGG19_LAYER_NAMES.index(n) for n in layer_names)


def _detect(sd: registry.StateDict) -> dict[str, Any]:
  """The deepest stored conv as the layer, and the stage widths of the stored convs."""
  convs = sorted(int(m.group(1)) for k in sd if (m := re.match(r'features\.(\d+)\.weight$', k)))
  widths = list(DEFAULT_WIDTHS)
  for i in convs:
    widths[_stage(VGG19_LAYER_NAMES[i])] = int(sd[f'features.{i}.weight'].shape[0])
  return dict(layer_names=(VGG19_LAYER_NAMES[convs[-1]],), widths=tuple(widths))


def _uses_key(kwargs: Mapping[str, Any], key: str) -> bool:
  """Only `features.N` up to the deepest requested layer (not the classifier, not deeper)."""
  last = _last_index(kwargs.get('layer_names', DEFAULT_LAYERS))
  m = re.match(r'features\.(\d+)\.', key)
  return m is not None and int(m.group(1)) <= last


@registry.register(detect_keys=('features.0.weight',), detect=_detect, uses_key=_uses_key)
class VGG19Features(nn.Module):
  """Returns {layer name: activation} for `layer_names` (e.g. 'conv5_4' is taken before its ReLU).

  Input is RGB in [0, 1] (or [-1, 1] with `range_norm`); ImageNet mean/std normalisation is
  applied when `use_input_norm`. `widths` are the conv widths of the five stages (torchvision's
  by default; smaller ones keep the layout and the `features.N` indices). Only the layers up to
  the deepest requested one are built, so a truncated state dict (as BasicSR's
  `features[:35]`) loads.
  """
  layer_names: Sequence[str] = DEFAULT_LAYERS
  use_input_norm: bool = True
  range_norm: bool = False
  widths: Sequence[int] = DEFAULT_WIDTHS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    unknown = [n for n in self.layer_names if n not in VGG19_LAYER_NAMES]
    if unknown:
      raise ValueError(f'unknown VGG19 layers {unknown}; valid: {VGG19_LAYER_NAMES}')
    if len(self.widths) != len(_CONVS_PER_STAGE):
      raise ValueError(f'widths needs one width per stage (5), got {tuple(self.widths)}')
    if self.range_norm:
      x = (x + 1.0) / 2.0
    if self.use_input_norm:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = x.astype(self.dtype)
    out = {}
    for i, name in enumerate(VGG19_LAYER_NAMES[: _last_index(self.layer_names) + 1]):
      if name.startswith('conv'):
        x = layers.conv(self.widths[_stage(name)], dtype=self.dtype, name=f'features_{i}')(x)
      elif name.startswith('relu'):
        x = nn.relu(x)
      else:
        x = nn.max_pool(x, (2, 2), (2, 2))
      if name in self.layer_names:
        out[name] = x.astype(jnp.float32)
    return out
