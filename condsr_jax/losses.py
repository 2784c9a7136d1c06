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
