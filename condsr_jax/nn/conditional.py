"""The support-crop protocol of conditional networks: where the crops that condition a network
come from, deterministic, so that training validation, `condsr-jax upscale` and experiments give
one model the same condition for the same image.

A conditional network (e.g. `CMDSRNet`) has, all images in [0, 1]:
- `condition_from_support(patches)`: `[k, n, p, p, C]` (n crops per task) -> `[k, D]`,
- `condition_from_lr(lr)`: `[B, h, w, C]` -> `[B, D]`, each image conditioning itself through
  `lr_support_crops`,
- `upscale(lr, condition)`: `[B, h, w, C]` under `[k, D]` (task-major batch; `per_sample`
  spreads the conditions over it) -> SR.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from condsr_jax.nn import registry


def support_positions(h: int, w: int, n: int, patch: int) -> list[tuple[int, int]]:
  """n (top, left) corners of patch x patch crops spread over an h x w image.

  The crops sit at the cell centres of an evenly spaced grid of ceil(sqrt(n)) per side, taken
  in raster order; the first n are returned.
  """
  if n < 1:
    raise ValueError(f'a support set needs at least one crop, got {n}')
  if not 0 < patch <= min(h, w):
    raise ValueError(f'{patch} px crops do not fit a {h}x{w} image')
  side = math.isqrt(n - 1) + 1
  tops = [(2 * i + 1) * (h - patch) // (2 * side) for i in range(side)]
  lefts = [(2 * i + 1) * (w - patch) // (2 * side) for i in range(side)]
  return [(t, l) for t in tops for l in lefts][:n]


def lr_support_crops(lr: jax.Array | np.ndarray, n: int, patch: int) -> jax.Array | np.ndarray:
  """`[B, h, w, C]` -> each image's own support set `[B, n, p, p, C]`, p = min(h, w, patch).

  Static slices at `support_positions`, so it runs under jit; numpy in, numpy out.
  """
  h, w = lr.shape[1:3]
  p = min(h, w, patch)
  xp = np if isinstance(lr, np.ndarray) else jnp
  return xp.stack([lr[:, t:t + p, l:l + p] for t, l in support_positions(h, w, n, p)], axis=1)


def support_crops(images: Sequence[np.ndarray], n: int, patch: int) -> np.ndarray:
  """One support set `[1, n, patch, patch, C]` from HWC images that share a degradation.

  Crops go round-robin (image i gets crops i, i + m, ... of m images), each image's at its
  `support_positions`; an image smaller than the patch is reflect-padded first.
  """
  if not images:
    raise ValueError('a support set needs at least one image')
  m = len(images)
  crops: list[np.ndarray] = [np.empty(0)] * n
  for i, img in enumerate(images[:n]):
    h, w = img.shape[:2]
    img = np.pad(img, ((0, max(patch - h, 0)), (0, max(patch - w, 0)), (0, 0)), 'reflect')
    mine = range(i, n, m)
    for j, (t, l) in zip(mine, support_positions(*img.shape[:2], len(mine), patch)):
      crops[j] = img[t:t + patch, l:l + patch]
  return np.stack(crops)[None].astype(np.float32)


def per_sample(task_values: jax.Array, batch: int) -> jax.Array:
  """Repeats `[k, ...]` per-task values over a task-major batch: sample j gets task j // (B/k)."""
  k = task_values.shape[0]
  if batch % k:
    raise ValueError(f'batch of {batch} images is not a multiple of the {k} tasks')
  return jnp.repeat(task_values, batch // k, axis=0)


@registry.register()
class OracleCondition(nn.Module):
  """A condition from the true degradation parameters (a 2-layer MLP): the upper bound that
  experiments compare a learned condition with."""
  features: int = 128

  @nn.compact
  def __call__(self, degradation_params: jax.Array) -> jax.Array:
    return nn.Dense(self.features)(nn.relu(nn.Dense(self.features)(degradation_params)))
