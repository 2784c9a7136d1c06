"""PDM-SR (Luo et al., CVPR 2022): the probabilistic degradation model, HR plus random codes ->
(LR, blur kernel, noise), and its PatchGAN discriminator, with the parameter names of the
official `archs/deg_arch.py` and `archs/discriminator.py` (greatlog/UnpairedSR).

Images are NHWC in [0, 1]. The random codes come from the 'latent' rng stream unless the caller
passes them (`zk`, `zn`); `train` uses BatchNorm batch statistics and updates the running ones
(the 'batch_stats' collection), as the official modules in train() mode.
"""

import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.degrade import filters
from condsr_jax.degrade import noise as degrade_noise
from condsr_jax.nn import layers, registry


def apply_kernel(hr: jax.Array, kernel: jax.Array, scale: int) -> jax.Array:
  """The kernel branch's degradation: per-image cross-correlation (no flip) of the reflect-padded
  HR [B, H, W, C] with kernel [B, k, k], sampled at the top-left-aligned pixels (scale i,
  scale j); no bicubic step. H and W must be multiples of `scale`, as the official view needs."""
  h, w = hr.shape[1:3]
  if h % scale or w % scale:
    raise ValueError(f'the HR size {h}x{w} must be a multiple of the scale {scale}')
  return filters.filter2d(hr, kernel, stride=scale)


def sinusoidal_quantize(x: jax.Array, n: int = 5) -> jax.Array:
  """Official `Quantization(n)`, the stand-in for noise when there is no noise branch: a smooth,
  differentiable rounding to 1/255, (255x + sum_i (-1)^i / (pi i) sin(2 pi i 255x)) / 255."""
  y = x * 255.0
  return (y + sum((-1) ** i / (math.pi * i) * jnp.sin(2 * math.pi * i * y)
                  for i in range(1, n + 1))) / 255.0


def straight_through_quantize(x: jax.Array) -> jax.Array:
  """The official `Quant` on the SR input: clamp to [0, 1] and round to 1/255 forward, the
  identity backward, so a loss on the quantised image still reaches what made `x`."""
  return x - jax.lax.stop_gradient(x) + jax.lax.stop_gradient(degrade_noise.quantize(x))


class ResBlock(nn.Module):
  """Official `ResBlock`: conv, BatchNorm, ReLU, conv, plus the input."""
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(layers.conv, self.features, self.kernel_size, dtype=self.dtype)
    y = nn.relu(layers.BatchNorm(dtype=self.dtype, name='body_1')(conv(name='body_0')(x), train))
    return x + conv(name='body_3')(y)


_Inits = tuple[nn.initializers.Initializer, nn.initializers.Initializer]


def _trunk(x: jax.Array, prefix: str, nf: int, nb: int, head_k: int, body_k: int,
           features: int, last_init: _Inits, train: bool, dtype: Any) -> jax.Array:
  """The official branch body: conv, BatchNorm, ReLU, `nb` ResBlocks, 1x1 conv to `features`.

  Call inside a compact module: layers are named `{prefix}_{index in the PyTorch Sequential}`;
  `last_init` holds the last conv's (kernel, bias) initialisers.
  """
  x = layers.conv(nf, head_k, dtype=dtype, name=f'{prefix}_0')(x)
  x = nn.relu(layers.BatchNorm(dtype=dtype, name=f'{prefix}_1')(x, train))
  for i in range(nb):
    x = ResBlock(nf, body_k, dtype, name=f'{prefix}_{3 + i}')(x, train)
  kernel_init, bias_init = last_init
  last = nn.Conv(features, (1, 1), kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                 name=f'{prefix}_{3 + nb}')
  return last(x).astype(jnp.float32)


def _centre_tap(ksize: int) -> nn.initializers.Initializer:
  """Bias of the official zero_init: 1 at the kernel's centre tap, 0 elsewhere."""
  return lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype).at[ksize ** 2 // 2].set(1)


def _mean_shifted_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
                         ) -> jax.Array:
  """The official non-zero init of the noise head, `nn.init.normal_(w, 0.001)`: mean 0.001 and
  standard deviation 1 (the second argument of normal_ is the mean)."""
  return 0.001 + jax.random.normal(key, shape, dtype)


class KernelModel(nn.Module):
  """Official `KernelModel`: a code zk [B, 1, 1, nc] -> a blur kernel [B, ksize, ksize] (softmax
  over the ksize^2 channels of a 1x1-conv network; kernel[b, u, v] is channel u ksize + v),
  applied to the HR image by `apply_kernel`. Returns (LR [B, H / scale, W / scale, C], kernel).

  Only `spatial=False, mix=False` runs: with either flag the official kernel map has the HR
  size and does not broadcast against the LR-sized patches, so the reference fails for any
  scale > 1 (no shipped configuration sets them); here they raise a ValueError instead.
  `zero_init` starts from the official near-uniform kernel (centre logit 1, others 0).
  `nc = 0` (not an official setting) is the deterministic degradation: no code, one learned
  kernel for every image, its ksize^2 logits a parameter ('logits', initialised as the last
  conv's bias).
  """
  nc: int = 3
  nf: int = 64
  nb: int = 16
  ksize: int = 21
  scale: int = 4
  zero_init: bool = True
  spatial: bool = False
  mix: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hr: jax.Array, zk: jax.Array | None = None, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    if self.spatial or self.mix:
      raise ValueError(
          f'KernelModel(spatial={self.spatial}, mix={self.mix}): the official kernel map then '
          'has the HR size and does not fit the LR patches (the reference fails at scale > 1); '
          'only spatial=False, mix=False is supported')
    b = hr.shape[0]
    last_init = ((nn.initializers.zeros, _centre_tap(self.ksize)) if self.zero_init
                 else (layers.torch_default_init, nn.initializers.zeros))
    if self.nc == 0:
      logits = jnp.broadcast_to(self.param('logits', last_init[1], (self.ksize ** 2,)),
                                (b, self.ksize ** 2))
    else:
      if zk is None:
        zk = jax.random.normal(self.make_rng('latent'), (b, 1, 1, self.nc))
      logits = _trunk(zk, 'deg_kernel', self.nf, self.nb, 1, 1, self.ksize ** 2, last_init,
                      train, self.dtype)
    kernel = jax.nn.softmax(logits.reshape(b, -1), axis=-1).reshape(b, self.ksize, self.ksize)
    return apply_kernel(hr, kernel.astype(hr.dtype), self.scale), kernel


class NoiseModel(nn.Module):
  """Official `NoiseModel`: LR [B, h, w, 3] and a code zn -> the noise to add.

  zn is [B, h, w, nc] with `spatial`, else [B, 1, 1, nc] (tiled over the image with `mix`). With
  `mix` the network reads concat(LR, zn) (the LR alone when nc is 0) and returns [B, h, w, dim];
  without, it reads zn alone, so a non-spatial model gives one value per image and channel,
  [B, 1, 1, dim] (official issue #15). Head and body convs are `head_k` / `body_k` wide only
  when `spatial`, 1x1 otherwise, as in the reference.
  """
  nc: int = 3
  nf: int = 64
  nb: int = 16
  dim: int = 3
  mix: bool = True
  spatial: bool = False
  head_k: int = 3
  body_k: int = 3
  zero_init: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, lr: jax.Array, zn: jax.Array | None = None, train: bool = False
               ) -> jax.Array:
    if not self.mix and self.nc == 0:
      raise ValueError('NoiseModel(mix=False) reads only its code: nc must be positive')
    b, h, w = lr.shape[:3]
    if zn is None and self.nc:
      size = (h, w) if self.spatial else (1, 1)
      zn = jax.random.normal(self.make_rng('latent'), (b, *size, self.nc))
    if self.mix:
      inp = lr if not self.nc else jnp.concatenate(
          [lr, jnp.broadcast_to(zn, (b, h, w, self.nc)).astype(lr.dtype)], axis=-1)
    else:
      inp = zn
    head_k, body_k = (self.head_k, self.body_k) if self.spatial else (1, 1)
    last_init = ((nn.initializers.zeros, nn.initializers.zeros) if self.zero_init
                 else (_mean_shifted_normal, nn.initializers.zeros))
    return _trunk(inp, 'deg_noise', self.nf, self.nb, head_k, body_k, self.dim, last_init, train,
                  self.dtype)


def _trunk_sizes(sd: registry.StateDict, prefix: str) -> dict[str, int]:
  """Input and width, depth, output channels and conv sizes of a branch stored under `prefix`."""
  nf, cin = registry.out_in(sd, f'{prefix}0.weight')
  nb = registry.count_indices(sd, re.escape(prefix) + r'(\d+)\.body\.0\.weight')
  head_k = int(sd[f'{prefix}0.weight'].shape[-1])
  body_k = int(sd[f'{prefix}3.body.0.weight'].shape[-1]) if nb else head_k
  return dict(cin=cin, nf=nf, nb=nb, out=int(sd[f'{prefix}{3 + nb}.weight'].shape[0]),
              head_k=head_k, body_k=body_k)


def _detect_deg(sd: registry.StateDict) -> dict[str, Any]:
  """A netDeg state dict's sizes. Not stored: the scale (4 in every official configuration)
  and the init flags. A noise head reading more than the 3 image channels is taken as `mix`
  with nc = in - 3 (every official configuration draws 3 noise channels), and a noise head wider
  than 1x1 as `spatial`."""
  k = _trunk_sizes(sd, 'deg_kernel.deg_kernel.')
  if k['head_k'] > 1:
    raise ValueError('a spatial kernel branch (head conv wider than 1x1) is not supported: '
                     'the official code fails on it at scale > 1')
  ksize = math.isqrt(k['out'])
  kwargs = dict(kernel_nc=k['cin'], kernel_nf=k['nf'], kernel_nb=k['nb'], ksize=ksize)
  if 'deg_noise.deg_noise.0.weight' not in sd:
    return {**kwargs, 'noise': False}
  n = _trunk_sizes(sd, 'deg_noise.deg_noise.')
  mix = n['cin'] > 3
  return {**kwargs, 'noise': True, 'noise_nc': n['cin'] - 3 if mix else n['cin'],
          'noise_nf': n['nf'], 'noise_nb': n['nb'], 'noise_dim': n['out'], 'noise_mix': mix,
          'noise_spatial': max(n['head_k'], n['body_k']) > 1, 'noise_head_k': n['head_k'],
          'noise_body_k': n['body_k']}


@registry.register(detect_keys=('deg_kernel.deg_kernel.0.weight',
                                'deg_kernel.deg_kernel.1.running_mean'), detect=_detect_deg)
class DegModel(nn.Module):
  """Official `DegModel` (netDeg): HR [B, H, W, 3] -> (fake LR, kernel [B, ksize, ksize], noise).

  The kernel branch blurs and subsamples by `scale`; the noise branch reads the blurred LR with
  its gradient stopped (the official detach) and its noise is added. Without a noise branch
  (`noise=False`, the official noise_opt None) the blurred LR goes through
  `sinusoidal_quantize` and the noise output is None. `kernel_nc=0, noise=False` is a
  deterministic degradation: one learned kernel, no randomness (see `KernelModel`).
  """
  scale: int = 4
  kernel_nc: int = 3
  kernel_nf: int = 64
  kernel_nb: int = 16
  ksize: int = 21
  kernel_zero_init: bool = True
  noise: bool = True
  noise_nc: int = 3
  noise_nf: int = 64
  noise_nb: int = 16
  noise_dim: int = 3
  noise_mix: bool = True
  noise_spatial: bool = False
  noise_head_k: int = 3
  noise_body_k: int = 3
  noise_zero_init: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.deg_kernel = KernelModel(self.kernel_nc, self.kernel_nf, self.kernel_nb, self.ksize,
                                  self.scale, self.kernel_zero_init, dtype=self.dtype)
    if self.noise:
      self.deg_noise = NoiseModel(self.noise_nc, self.noise_nf, self.noise_nb, self.noise_dim,
                                  self.noise_mix, self.noise_spatial, self.noise_head_k,
                                  self.noise_body_k, self.noise_zero_init, self.dtype)

  def __call__(self, hr: jax.Array, zk: jax.Array | None = None, zn: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    lr, kernel = self.deg_kernel(hr, zk, train)
    if not self.noise:
      return sinusoidal_quantize(lr), kernel, None
    noise_map = self.deg_noise(jax.lax.stop_gradient(lr), zn, train)
    return lr + noise_map.astype(lr.dtype), kernel, noise_map

  def example_inputs(self) -> tuple[jax.Array, ...]:
    side = self.scale * self.ksize  # a multiple of the scale, wider than the kernel's padding
    return (jnp.zeros((1, side, side, 3), jnp.float32),)


def _detect_patchgan(sd: registry.StateDict) -> dict[str, Any]:
  """Sizes and output width; the stride is not stored (2 in the official deg configurations,
  1 in psnr/2020Track1)."""
  nf, in_c = registry.out_in(sd, 'model.0.weight')
  nb = registry.count_indices(sd, r'model\.(\d+)\.weight') - 2  # less the first and last convs
  return dict(in_c=in_c, nf=nf, nb=nb,
              reference_nf_output=int(sd[f'model.{3 * nb + 2}.weight'].shape[0]) != 1)


@registry.register(detect_keys=('model.0.weight', 'model.0.bias', 'model.2.weight',
                                'model.2.bias'), detect=_detect_patchgan)
class PatchGANDiscriminator(nn.Module):
  """Official `PatchGANDiscriminator` (netD1 on LR): raw per-patch scores [B, h, w, out].

  3x3 convs with bias: conv + LeakyReLU(0.2); nb - 1 convs of stride `stride` and width
  nf min(2^n, 8), each with InstanceNorm and LeakyReLU; a stride-1 conv to nf min(2^nb, 8) with
  InstanceNorm and LeakyReLU; a last conv. The official last conv has nf outputs (its comment
  says 1; issue #29): `reference_nf_output` keeps that, the default gives one score map.
  """
  in_c: int = 3
  nf: int = 64
  nb: int = 3
  stride: int = 1
  reference_nf_output: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, dtype=self.dtype)
    x = layers.lrelu(conv(self.nf, name='model_0')(x))
    for n in range(1, self.nb + 1):
      stride = self.stride if n < self.nb else 1
      x = conv(self.nf * min(2 ** n, 8), stride=stride, name=f'model_{3 * n - 1}')(x)
      x = layers.lrelu(layers.instance_norm(x))
    out = self.nf if self.reference_nf_output else 1
    return conv(out, name=f'model_{3 * self.nb + 2}')(x).astype(jnp.float32)

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 32, 32, self.in_c), jnp.float32),)
