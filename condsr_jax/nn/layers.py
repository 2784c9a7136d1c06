"""Building blocks shared by the networks: PyTorch-ordered pixel (un)shuffle, convs
initialised like their PyTorch counterparts, PReLU, PyTorch's BatchNorm and InstanceNorm,
nearest/bilinear upsampling and spectral-norm convolution with PyTorch's stored power-iteration
state."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any

# The RGB mean of DIV2K that EDSR-family MeanShift layers subtract (BasicSR, EDSR, DASR).
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

# PyTorch's default conv init (kaiming_uniform, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def kaiming_normal_scaled(scale: float) -> nn.initializers.Initializer:
  """BasicSR's `default_init_weights`: kaiming_normal (fan_in, ReLU gain) times `scale`."""
  return nn.initializers.variance_scaling(2.0 * scale * scale, 'fan_in', 'normal')


def conv(features: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
         use_bias: bool = True, kernel_init=torch_default_init, dtype: Dtype = jnp.float32,
         name: str | None = None) -> nn.Conv:
  """A square PyTorch-style convolution: symmetric zero padding of `kernel_size // 2`."""
  pad = kernel_size // 2 if padding is None else padding
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride, padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, name=name)


def lrelu(x: jax.Array, slope: float = 0.2) -> jax.Array:
  return jnp.where(x >= 0, x, slope * x)


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """`nn.InstanceNorm2d(affine=False)`: each image's channels normalised over H and W (biased
  variance, no running statistics)."""
  xf = x.astype(jnp.float32)
  mean, var = jnp.mean(xf, (1, 2), keepdims=True), jnp.var(xf, (1, 2), keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """`torch.nn.PixelShuffle` in NHWC: input channel `c*r*r + i*r + j` goes to pixel (i, j) of channel c.

  One merge per reshape keeps it valid under explicitly sharded meshes.
  """
  b, h, w, c = x.shape
  oc = c // (r * r)
  x = x.reshape(b, h, w, oc, r, r).transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, oc
  return x.reshape(b, h * r, w, r, oc).reshape(b, h * r, w * r, oc)


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
  """`F.pixel_unshuffle` in NHWC: output channel order `c*r*r + i*r + j`.

  On symbolic height and width (a shape-polymorphic export such as ONNX), where a reshape cannot
  prove divisibility, the same rearrangement is a stride-r convolution with one-hot kernels.
  """
  b, h, w, c = x.shape
  if not (isinstance(h, int) and isinstance(w, int)):
    onehot = np.eye(c * r * r, dtype=np.float32).reshape(c, r, r, c * r * r).transpose(1, 2, 0, 3)
    return jax.lax.conv_general_dilated(
        x, jnp.asarray(onehot, x.dtype), (r, r), 'VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=jax.lax.Precision.HIGHEST)
  if h % r or w % r:
    raise ValueError(f'pixel_unshuffle needs H and W divisible by {r}, got {h}x{w}')
  x = x.reshape(b, h // r, r, w // r, r, c).transpose(0, 1, 3, 5, 2, 4)  # b, h', w', c, i, j
  return x.reshape(b, h // r, w // r, c * r * r)


def upsample_nearest(x: jax.Array, r: int) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2)


def upsample_bilinear(x: jax.Array, r: int) -> jax.Array:
  """`F.interpolate(mode='bilinear', align_corners=False)` for an integer upscale."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * r, w * r, c), 'linear', antialias=False)


class PReLU(nn.Module):
  """`torch.nn.PReLU(num_parameters)`; one slope per channel (or one shared when `features=1`)."""
  features: int = 1
  init_value: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.constant(self.init_value), (self.features,))
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class BatchNorm(nn.Module):
  """`torch.nn.BatchNorm2d` over the last axis. Training normalises with the biased batch
  variance but, unlike flax's BatchNorm, moves the running variance towards the unbiased one
  (n / (n - 1)), as PyTorch does; `momentum` is PyTorch's (the weight of the new batch)."""
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,))
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,))
    axes = tuple(range(x.ndim - 1))
    if train:
      xf = x.astype(jnp.float32)
      mean, var = jnp.mean(xf, axes), jnp.var(xf, axes)
      n = xf.size // features
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean
        ra_var.value = (1 - m) * ra_var.value + m * var * n / max(n - 1, 1)
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var + self.epsilon).astype(x.dtype)
    return (y * scale.astype(x.dtype) + bias.astype(x.dtype)).astype(self.dtype)


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


def _unit_normal(key, n):
  return _l2_normalize(jax.random.normal(key, (n,), jnp.float32))


class SpectralNormConv(nn.Module):
  """Conv2d with `torch.nn.utils.spectral_norm` (dim 0, eps 1e-12).

  `u` (out,) and `v` (in*kh*kw,) live in the `spectral` collection in PyTorch's layout, so
  `weight_u`/`weight_v` load unchanged. With `update_stats` (training) one power iteration
  runs per call and the new u, v are written back; otherwise the stored ones are used, as in
  PyTorch's eval mode. sigma = u . (W v), differentiable through W only.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  use_bias: bool = False
  eps: float = 1e-12
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', torch_default_init, (k, k, cin, self.features))
    u = self.variable('spectral', 'u', lambda: _unit_normal(self.make_rng('params'), self.features))
    v = self.variable('spectral', 'v', lambda: _unit_normal(self.make_rng('params'), cin * k * k))
    w_mat = kernel.transpose(3, 2, 0, 1).reshape(self.features, -1)  # torch weight.view(out, -1)
    if update_stats and not self.is_initializing():
      w_sg = jax.lax.stop_gradient(w_mat)
      new_v = _l2_normalize(w_sg.T @ u.value, self.eps)
      new_u = _l2_normalize(w_sg @ new_v, self.eps)
      u.value, v.value = new_u, new_v
    sigma = jnp.dot(jax.lax.stop_gradient(u.value), w_mat @ jax.lax.stop_gradient(v.value))
    pad = self.padding
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), (kernel / sigma).astype(self.dtype), (self.stride, self.stride),
        ((pad, pad), (pad, pad)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y

