"""LPIPS and DISTS from the weight files their reference packages use, as per-image distances.

Nothing is downloaded at run time, so a metric is built from files the user names: the
torchvision ImageNet trunk and the small learned part its package ships (LPIPS's linear layers,
DISTS's alpha and beta), in any order, or one state dict of the whole `lpips.LPIPS` /
`DISTS_pytorch.DISTS` module. `Perceptual.distance` is differentiable, for losses.
"""

import dataclasses
import functools
import os
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax import convert, models
from condsr_jax.nn import iqa

_TV = 'https://download.pytorch.org/models/'
_LPIPS = 'https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/'
# metric -> (arch kwargs, [(file, where to get it)] for the trunk and the learned part)
METRICS = {
    'lpips_alex': ('LPIPS', {'net': 'alex'}, (
        ('alexnet-owt-7be5be79.pth', _TV + 'alexnet-owt-7be5be79.pth'),
        ('alex.pth', f'{_LPIPS}alex.pth (or lpips/weights/v0.1/alex.pth of `pip install lpips`)'))),
    'lpips_vgg': ('LPIPS', {'net': 'vgg'}, (
        ('vgg16-397923af.pth', _TV + 'vgg16-397923af.pth'),
        ('vgg.pth', f'{_LPIPS}vgg.pth (or lpips/weights/v0.1/vgg.pth of `pip install lpips`)'))),
    'dists': ('DISTS', {}, (
        ('vgg16-397923af.pth', _TV + 'vgg16-397923af.pth'),
        ('weights.pt', 'https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt '
                       '(or DISTS_pytorch/weights.pt of `pip install DISTS_pytorch`)'))),
}


def weights_hint(metric: str) -> str:
  """Which files `metric` needs and where to get them."""
  files = METRICS[metric][2]
  return f'{metric} needs ' + ' and '.join(f'{name} ({url})' for name, url in files)


def _trunk_key(metric: str, key: str) -> str | None:
  """torchvision `features.N.weight` -> the module's key (None: not part of the metric)."""
  m = re.match(r'features\.(\d+)\.(weight|bias)$', key)
  if m is None:
    return None
  index = int(m.group(1))
  if metric == 'dists':
    ends, prefix = iqa.DISTS_STAGE_ENDS, 'stage'
  else:
    ends, prefix = iqa.LPIPS_SLICE_ENDS[METRICS[metric][1]['net']], 'net.slice'
  if index >= ends[-1]:
    return None
  return f'{prefix}{iqa.slice_of(index, ends)}.{index}.{m.group(2)}'


def module_state_dict(metric: str, paths: Sequence[str]) -> dict[str, np.ndarray]:
  """The metric module's state dict from its weight files (trunk + learned part, or one file)."""
  if metric not in METRICS:
    raise ValueError(f'unknown perceptual metric {metric!r}; one of {sorted(METRICS)}')
  if not paths:
    raise ValueError(f'no weight files given: {weights_hint(metric)}')
  sd = {}
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: no such file; {weights_hint(metric)}')
    for key, value in convert.read_state_dict(path).items():
      mapped = _trunk_key(metric, key)
      if mapped is not None:
        sd[mapped] = value
      elif not key.startswith(('features.', 'classifier.')):
        sd[key] = value
  return sd


@dataclasses.dataclass(frozen=True)
class Perceptual:
  """A loaded perceptual metric: `metric(x, y)` -> one distance per image (lower: more alike)."""
  name: str
  spec: models.ModelSpec
  variables: Any

  def distance(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """[N] distances of NHWC RGB batches in [0, 1]; jit-able and differentiable (a loss)."""
    return self.spec.build().apply(self.variables, x, y)

  @functools.cached_property
  def _jitted(self):
    return jax.jit(self.distance)

  def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distances of HWC images or NHWC batches in [0, 1] (float) or uint8 / uint16."""
    x, y = _as_unit_batch(x), _as_unit_batch(y)
    if x.shape != y.shape:
      raise ValueError(f'image shapes differ: {x.shape} vs {y.shape}')
    return np.asarray(self._jitted(x, y))


def _as_unit_batch(img: np.ndarray) -> jnp.ndarray:
  img = np.asarray(img)
  if np.issubdtype(img.dtype, np.integer):
    img = img.astype(np.float32) / np.iinfo(img.dtype).max
  img = img.astype(np.float32)
  if img.ndim == 3:
    img = img[None]
  if img.shape[-1] == 1:
    img = np.repeat(img, 3, axis=-1)
  return jnp.asarray(img[..., :3])


def load(metric: str, paths: Sequence[str]) -> Perceptual:
  """`metric` ('lpips_alex', 'lpips_vgg' or 'dists') from its weight files."""
  sd = module_state_dict(metric, paths)
  arch, kwargs, _ = METRICS[metric]
  try:
    spec = convert.detect_architecture(sd, arch)
    spec = models.ModelSpec(arch, {**spec.kwargs, **kwargs})
    variables = convert.state_dict_to_variables(sd, spec)
  except (KeyError, ValueError) as e:
    raise ValueError(f'{", ".join(map(str, paths))}: not the weights of {metric}: {e}; '
                     f'{weights_hint(metric)}') from e
  return Perceptual(metric, spec, variables)
