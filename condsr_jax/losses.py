"""Training losses: pixel, perceptual (VGG19), GAN, edge and contrastive terms."""

import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax.degrade import color, filters


def l1_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(x - y))


def mse_loss(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(x - y))


def _gram(f: jax.Array) -> jax.Array:
  b, h, w, c = f.shape
  f = f.reshape(b, h * w, c)
  return jnp.einsum('bnc,bnd->bcd', f, f) / (c * h * w)


def perceptual_loss(features: Callable[[jax.Array], Mapping[str, jax.Array]], x: jax.Array,
                    gt: jax.Array, layer_weights: Mapping[str, float], criterion: str = 'l1',
                    perceptual_weight: float = 1.0, style_weight: float = 0.0
                    ) -> tuple[jax.Array, jax.Array]:
  """BasicSR `PerceptualLoss`: weighted per-layer distance of (pre-ReLU) features.

  `features` maps an NHWC image to {layer: feature}; ground-truth features are not
  differentiated. Returns (perceptual, style); a zero weight gives a zero term.
  """
  if criterion not in ('l1', 'l2', 'fro'):
    raise ValueError(f"criterion must be 'l1', 'l2' or 'fro', got {criterion!r}")
  fx = features(x)
  fg = jax.tree.map(jax.lax.stop_gradient, features(gt))

  def dist(a, b):
    if criterion == 'l1':
      return l1_loss(a, b)
    if criterion == 'l2':
      return mse_loss(a, b)
    return jnp.sqrt(jnp.sum(jnp.square(a - b)))

  zero = jnp.zeros((), jnp.float32)
  percep = sum((dist(fx[k], fg[k]) * w for k, w in layer_weights.items()), zero)
  style = sum((dist(_gram(fx[k]), _gram(fg[k])) * w for k, w in layer_weights.items()), zero)
  return percep * perceptual_weight, style * style_weight


def task_distances(f1: jax.Array, f2: jax.Array, perm: jax.Array, elementwise: bool = True,
                   eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  """CMDSR's intra-task (f1 vs f2) and cross-task (f1 vs f2[perm]) distances of `[k, ...]` features.

  `elementwise` (the reference, whose `pairwise_distance` runs over a size-1 axis): `|a - b + eps|`
  per feature, `[k, D]`; otherwise the Euclidean distance `||a - b + eps||` per task, `[k]`.
  """
  k = f1.shape[0]
  f1, f2 = f1.reshape(k, -1), f2.reshape(k, -1)

  def dist(a, b):
    d = a - b + eps
    return jnp.abs(d) if elementwise else jnp.sqrt(jnp.sum(jnp.square(d), axis=-1))

  return dist(f1, f2), dist(f1, f2[perm])


def task_contrastive_loss(f1: jax.Array, f2: jax.Array, perm: jax.Array, elementwise: bool = True
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """CMDSR task contrastive loss: mean(softplus(d_in^2) + softplus(-d_cross^2)), no margin.

  f1, f2: conditions of the two halves of each task's support set, `[k, ...]`; perm: a
  derangement of the k tasks (the negatives are f2[perm]). The default, element-wise distances,
  is the reference's behaviour, which trained its checkpoints. Returns (loss, mean d_in, mean
  d_cross); the two means should diverge as training proceeds.
  """
  d_in, d_cross = task_distances(f1, f2, perm, elementwise)
  loss = jnp.mean(jax.nn.softplus(jnp.square(d_in)) + jax.nn.softplus(-jnp.square(d_cross)))
  return loss, jnp.mean(d_in), jnp.mean(d_cross)


def random_derangement(key: jax.Array, k: int) -> jax.Array:
  """A uniformly random permutation of range(k) without fixed points (k >= 2); jit-able."""
  if k < 2:
    raise ValueError(f'a derangement needs at least 2 tasks, got {k}')
  arange = jnp.arange(k)

  def draw(state):
    key, _ = state
    key, sub = jax.random.split(key)
    return key, jax.random.permutation(sub, k)

  def has_fixed_point(state):
    return jnp.any(state[1] == arange)

  return jax.lax.while_loop(has_fixed_point, draw, draw((key, arange)))[1]


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 4.0


def _luma(x: jax.Array) -> jax.Array:
  return color.rgb_to_gray(x) if x.shape[-1] == 3 else jnp.mean(x, -1, keepdims=True)


def sobel_magnitude(x: jax.Array) -> jax.Array:
  """Gradient magnitude of the luma with 3x3 Sobel filters (reflect-101 border), [B, H, W, 1]."""
  y = _luma(x)
  gx, gy = filters.filter2d(y, _SOBEL_X), filters.filter2d(y, _SOBEL_X.T)
  return jnp.sqrt(gx * gx + gy * gy + 1e-12)


def sobel_edge_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
  """L1 between Sobel gradient magnitudes: weights edges and fine lines more than flat areas."""
  return l1_loss(sobel_magnitude(sr), jax.lax.stop_gradient(sobel_magnitude(gt)))


def soft_canny(x: jax.Array, sigma: float = 1.0, low: float = 0.05, high: float = 0.15,
               temperature: float = 0.02) -> jax.Array:
  """A differentiable Canny-like edge map in [0, 1]: Gaussian smoothing, Sobel magnitude, and a
  soft double threshold (sigmoids at `low` and `high`) standing in for hysteresis; no thinning."""
  size = 2 * int(math.ceil(3 * sigma)) + 1
  ax = np.arange(size, dtype=np.float32) - size // 2
  g = np.exp(-0.5 * (ax / sigma) ** 2)
  g = np.outer(g, g) / np.outer(g, g).sum()
  mag = sobel_magnitude(filters.filter2d(_luma(x), g.astype(np.float32)))
  strong = jax.nn.sigmoid((mag - high) / temperature)
  weak = jax.nn.sigmoid((mag - low) / temperature)
  return jnp.maximum(strong, 0.5 * weak)


def canny_edge_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
  """L1 between soft Canny edge maps of SR and GT."""
  return l1_loss(soft_canny(sr), jax.lax.stop_gradient(soft_canny(gt)))


def gan_loss(logits: jax.Array, target_is_real: bool, gan_type: str,
             for_discriminator: bool = True) -> jax.Array:
  """BasicSR `GANLoss` (unweighted): vanilla (BCE with logits), lsgan, hinge, wgan_softplus.

  The generator's hinge loss is -mean(logits); every other generator loss is the
  discriminator's loss with the "real" target.
  """
  if gan_type in ('vanilla', 'wgan_softplus'):  # BCE(x, 1) = softplus(-x); BCE(x, 0) = softplus(x)
    return jnp.mean(jax.nn.softplus(-logits if target_is_real else logits))
  if gan_type == 'lsgan':
    return jnp.mean(jnp.square(logits - (1.0 if target_is_real else 0.0)))
  if gan_type == 'hinge':
    if not for_discriminator:
      return -jnp.mean(logits)
    return jnp.mean(jax.nn.relu(1.0 - logits if target_is_real else 1.0 + logits))
  raise ValueError(f'unknown gan_type {gan_type!r}')
