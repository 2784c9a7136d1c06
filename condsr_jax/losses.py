"""Training losses: pixel, perceptual (VGG19), GAN, edge and contrastive terms."""

from typing import Callable, Mapping

import jax
import jax.numpy as jnp


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
