"""CMDSR (conditional meta-network for blind SR): a ConditionNet reads a support set sharing one
degradation and modulates the input channels of the BaseNet's convs; also grafted onto RRDBNet.

Parameter names follow the official state dict (`sr_net.*`, `condition_net.*`) so checkpoints
convert with the generic key mapping. Support sets are NHWC `[k, h, w, n*C]`: channel
`patch*C + c`, the NHWC form of the reference's `[k, n*C, h, w]`. Both networks implement the
conditional-network interface of `condsr_jax.nn.conditional` (images in [0, 1]); their
`condition` and `super_resolve` read the range of the reference code.
"""

import functools
import math
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from condsr_jax.nn import conditional, layers, registry, rrdbnet


def stack_support(patches: jax.Array) -> jax.Array:
  """`[k, n, h, w, C]` patches (n per task) -> support set `[k, h, w, n*C]`."""
  k, n, h, w, c = patches.shape
  return patches.transpose(0, 2, 3, 1, 4).reshape(k, h, w, n * c)


def unstack_support(support: jax.Array, num_ch: int = 3) -> jax.Array:
  """Support set `[k, h, w, n*C]` -> its patches as a task-major batch `[k*n, h, w, C]`."""
  k, h, w, nc = support.shape
  n = nc // num_ch
  return support.reshape(k, h, w, n, num_ch).transpose(0, 3, 1, 2, 4).reshape(k * n, h, w, num_ch)


class EqualLinear(nn.Module):
  """StyleGAN2 equalised-LR linear layer (CMDSR's modulation FCs).

  The kernel is stored unscaled (N(0, 1/lr_mul^2)) and applied times `lr_mul / sqrt(in)`; the
  bias is applied times `lr_mul`. `zero_init` starts the kernel at 0.
  """
  features: int
  bias_init: float = 1.0
  lr_mul: float = 1.0
  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.zeros if self.zero_init else nn.initializers.normal(1.0 / self.lr_mul)
    kernel = self.param('kernel', init, (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.constant(self.bias_init), (self.features,))
    return x @ (kernel * (self.lr_mul / math.sqrt(x.shape[-1]))) + bias * self.lr_mul


class Modulations(nn.Module):
  """One `EqualLinear(condition -> width)` per modulated conv; returns the `[k, width]` scales."""
  widths: Sequence[int]
  zero_init: bool = False

  @nn.compact
  def __call__(self, condition: jax.Array) -> list[jax.Array]:
    return [EqualLinear(w, zero_init=self.zero_init, name=f'modulations_{i}')(condition)
            for i, w in enumerate(self.widths)]


class EqualConv(nn.Module):
  """CMDSR `BaseConv2d`: kernel stored ~N(0, 1), applied times `1/sqrt(in*k*k)`; bias 0.

  `modulation` (`[B, C_in]`) scales the input channels of the kernel per sample, computed
  exactly as a shared conv of the channel-scaled input. `bias_repeat_bug` reproduces the
  reference's batched modulated conv, where sample g, channel o gets `bias[(g*C_out + o) // B]`.
  """
  features: int
  kernel_size: int = 3
  bias_repeat_bug: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, modulation: jax.Array | None = None) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.normal(1.0), (k, k, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    if modulation is not None:
      x = x * modulation[:, None, None, :].astype(self.dtype)
    pad = k // 2
    y = jax.lax.conv_general_dilated(
        x, (kernel / math.sqrt(cin * k * k)).astype(self.dtype), (1, 1), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if modulation is not None and self.bias_repeat_bug:
      b = x.shape[0]
      bias = jnp.repeat(bias, b).reshape(b, 1, 1, self.features)
    return y + bias.astype(self.dtype)


class ConditionNet(nn.Module):
  """Support set `[k, h, w, n*C]` -> condition `[k, 2*num_feat]`.

  conv-ReLU x2 (num_feat), 2x2 average pool, conv-ReLU x2 (2*num_feat), global average.
  `left_square_pool` reproduces the reference's `avg_pool2d(kernel=h, stride=w)`, which on a
  wide feature map averages only its left h x h square; by default all positions are averaged.
  """
  support_size: int = 20
  num_in_ch: int = 3
  num_feat: int = 64
  left_square_pool: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, support: jax.Array) -> jax.Array:
    want = self.support_size * self.num_in_ch
    if support.shape[-1] != want:
      raise ValueError(f'support set has {support.shape[-1]} channels; this ConditionNet takes '
                       f'{self.support_size} patches of {self.num_in_ch} channels ({want})')
    conv = functools.partial(layers.conv, kernel_init=layers.kaiming_normal_scaled(0.1),
                             dtype=self.dtype)
    x = nn.relu(conv(self.num_feat, name='condition_0')(support))
    x = nn.relu(conv(self.num_feat, name='condition_2')(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(conv(2 * self.num_feat, name='condition_5')(x))
    x = nn.relu(conv(2 * self.num_feat, name='condition_7')(x)).astype(jnp.float32)
    if self.left_square_pool:
      h, w = x.shape[1:3]
      if w < h:
        raise ValueError('left_square_pool needs a feature map at least as wide as high, '
                         f'got {h}x{w}')
      x = x[:, :, :h]
    return jnp.mean(x, axis=(1, 2))


class ModulatedResBlock(nn.Module):
  """conv[mod] - ReLU - conv[mod], times `res_scale`, plus the input."""
  num_feat: int = 64
  res_scale: float = 1.0
  bias_repeat_bug: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mod1: jax.Array, mod2: jax.Array) -> jax.Array:
    conv = functools.partial(EqualConv, self.num_feat, bias_repeat_bug=self.bias_repeat_bug,
                             dtype=self.dtype)
    res = conv(name='conv2')(nn.relu(conv(name='conv1')(x, mod1)), mod2)
    return res * self.res_scale + x


class CMDSRBaseNet(nn.Module):
  """CMDSR's BaseNet (`SRResNet_10`): equalised-LR SRResNet whose ResBlock convs are modulated.

  `__call__(x, condition)`: x `[B, h, w, C]` in [0, 255] (task-major: B a multiple of k),
  condition `[k, D]`. Head conv, num_block modulated ResBlocks, skip `head*res_scale + body`,
  upsampler (x2^n: convs to 4*nf + PixelShuffle(2); x3: 9*nf + PixelShuffle(3)), output conv.
  `rgb_mean` (not in the reference, which learns the image level from its biases) subtracts
  255 x this mean before the head and adds it back after the output conv, as EDSR's MeanShift;
  from scratch the network then trains in thousands of steps rather than hundreds of thousands.
  """
  num_in_ch: int = 3
  num_feat: int = 64
  num_block: int = 10
  scale: int = 4
  res_scale: float = 1.0
  bias_repeat_bug: bool = False
  rgb_mean: Sequence[float] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, condition: jax.Array) -> jax.Array:
    if self.scale & (self.scale - 1) == 0:
      steps = [(2, 2 * i) for i in range(int(math.log2(self.scale)))]
    elif self.scale == 3:
      steps = [(3, 0)]
    else:
      raise ValueError(f'CMDSR scale must be a power of 2 or 3, got {self.scale}')
    mods = Modulations((self.num_feat,) * (2 * self.num_block), name='modulations')(condition)
    mods = [conditional.per_sample(m, x.shape[0]) for m in mods]
    conv = functools.partial(EqualConv, dtype=self.dtype)
    mean = 0.0
    if self.rgb_mean is not None:
      if len(self.rgb_mean) != self.num_in_ch:
        raise ValueError(f'rgb_mean has {len(self.rgb_mean)} values for {self.num_in_ch} channels')
      mean = 255.0 * jnp.asarray(self.rgb_mean, jnp.float32)
    head = conv(self.num_feat, name='input_conv')(x - mean)
    body = head
    for i in range(self.num_block):
      body = ModulatedResBlock(self.num_feat, self.res_scale, self.bias_repeat_bug, self.dtype,
                               name=f'backbone_{i}')(body, mods[2 * i], mods[2 * i + 1])
    feat = head * self.res_scale + body
    for r, idx in steps:
      feat = layers.pixel_shuffle(conv(self.num_feat * r * r, name=f'upsampler_{idx}')(feat), r)
    return conv(self.num_in_ch, name='output_conv')(feat).astype(jnp.float32) + mean


class ConditionalCMDSR(nn.Module):
  """What the CMDSR models share: the one-call forward and the conditional-network interface of
  `condsr_jax.nn.conditional`, whose images are in [0, 1] whatever range the network reads.

  A subclass defines `condition(support)` and `super_resolve(lr, condition)`, which read images
  in `image_range`, and the fields `support_size`, `support_patch`, `num_in_ch` and `blind`
  (no ConditionNet: the condition is zeros, the blind BaseNet).
  """
  image_range: ClassVar[float] = 1.0

  def __call__(self, lr: jax.Array, support: jax.Array) -> jax.Array:
    return self.super_resolve(lr, self.condition(support))

  def condition_from_support(self, patches: jax.Array) -> jax.Array:
    """`[k, n, p, p, C]` patches in [0, 1], n per task -> conditions `[k, D]`."""
    return self.condition(stack_support(patches) * self.image_range)

  def condition_from_lr(self, lr: jax.Array) -> jax.Array:
    """`[B, h, w, C]` in [0, 1] -> `[B, D]`: each image's condition from crops of itself."""
    return self.condition_from_support(
        conditional.lr_support_crops(lr, self.support_size, self.support_patch))

  def upscale(self, lr: jax.Array, condition: jax.Array) -> jax.Array:
    """`[B, h, w, C]` in [0, 1] (task-major) under `[k, D]` conditions -> SR in [0, 1]."""
    return self.super_resolve(lr * self.image_range, condition) / self.image_range

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 16, 16, self.num_in_ch), jnp.float32),
            jnp.zeros((1, 16, 16, self.support_size * self.num_in_ch), jnp.float32))


def _condition_args(sd: registry.StateDict, num_in_ch: int, modulation: str) -> dict[str, Any]:
  """ConditionNet arguments; without one, a blind model (the width from a modulation FC)."""
  if 'condition_net.condition.0.weight' not in sd:
    return dict(blind=True, cond_feat=int(sd[modulation].shape[1]) // 2)
  cond_feat, support_ch = registry.out_in(sd, 'condition_net.condition.0.weight')
  if support_ch % num_in_ch:
    raise ValueError(f'CMDSR ConditionNet takes {support_ch} channels: not a multiple of the '
                     f'{num_in_ch} image channels')
  return dict(support_size=support_ch // num_in_ch, cond_feat=cond_feat)


def _detect_cmdsr(sd: registry.StateDict) -> dict[str, Any]:
  nf, cin = registry.out_in(sd, 'sr_net.input_conv.weight')
  ups = registry.count_indices(sd, r'sr_net\.upsampler\.(\d+)\.weight$')
  nine = ups == 1 and sd['sr_net.upsampler.0.weight'].shape[0] == 9 * nf
  return dict(num_in_ch=cin, num_feat=nf, scale=3 if nine else 2 ** ups,
              num_block=registry.count_indices(sd, r'sr_net\.backbone\.(\d+)\.conv1\.weight'),
              **_condition_args(sd, cin, 'sr_net.modulations.modulations.0.weight'))


@registry.register(scale_arg='scale', detect=_detect_cmdsr,
                   detect_keys=('sr_net.input_conv.weight',
                                'sr_net.modulations.modulations.0.weight'))
class CMDSRNet(ConditionalCMDSR):
  """CMDSR: ConditionNet + modulated BaseNet; `condition` and `super_resolve` read [0, 255].

  `__call__(lr, support)`: lr `[B, h, w, C]` task-major, support `[k, h', w', n*C]`.
  `condition(support)` and `super_resolve(lr, condition)` are the two halves (compute the
  condition once, reuse it for every tile); parameters split into `condition_net` and `sr_net`.
  `support_patch` is the LR crop size of the support set (CMDSR trains on 192 / 4 = 48 px).
  """
  num_in_ch: int = 3
  num_feat: int = 64
  num_block: int = 10
  support_size: int = 20
  support_patch: int = 48
  scale: int = 4
  cond_feat: int = 64
  blind: bool = False
  res_scale: float = 1.0
  bias_repeat_bug: bool = False
  left_square_pool: bool = False
  rgb_mean: Sequence[float] | None = None  # a mean shift around the BaseNet (not the reference)
  dtype: Any = jnp.float32

  image_range: ClassVar[float] = 255.0

  def setup(self):
    if not self.blind:
      self.condition_net = ConditionNet(self.support_size, self.num_in_ch, self.cond_feat,
                                        self.left_square_pool, self.dtype)
    self.sr_net = CMDSRBaseNet(self.num_in_ch, self.num_feat, self.num_block, self.scale,
                               self.res_scale, self.bias_repeat_bug, self.rgb_mean, self.dtype)

  def condition(self, support: jax.Array) -> jax.Array:
    if self.blind:
      return jnp.zeros((support.shape[0], 2 * self.cond_feat), jnp.float32)
    return self.condition_net(support)

  def super_resolve(self, lr: jax.Array, condition: jax.Array) -> jax.Array:
    return self.sr_net(lr, condition)


def _detect_cmdsr_rrdb(sd: registry.StateDict) -> dict[str, Any]:
  args = rrdbnet.detect({k[len('sr_net.'):]: v for k, v in sd.items() if k.startswith('sr_net.')})
  return {**args, **_condition_args(sd, args['num_in_ch'], 'modulations.modulations.0.weight')}


@registry.register(scale_arg='scale', detect=_detect_cmdsr_rrdb,
                   detect_keys=tuple(f'sr_net.{k}' for k in rrdbnet.DETECT_KEYS)
                   + ('modulations.modulations.0.weight',))
class CMDSRRRDBNet(ConditionalCMDSR):
  """RRDBNet whose trunk convs are modulated channel-wise by a ConditionNet; images in [0, 1].

  Every conv of every RDB in the trunk gets one `EqualLinear(condition -> C_in)` scale on its
  input channels, initialised to exactly 1 (zero kernel, bias 1), so a plain RRDBNet checkpoint
  (`init_from_rrdbnet`) starts as that network. The support set is multiplied by `support_range`
  before the ConditionNet, which then sees CMDSR's [0, 255] range. Parameters: `condition_net`,
  `sr_net` (a plain `RRDBNet`) and `modulations`.
  """
  num_in_ch: int = 3
  num_out_ch: int = 3
  scale: int = 4
  num_feat: int = 64
  num_block: int = 23
  num_grow_ch: int = 32
  support_size: int = 20
  support_patch: int = 48
  cond_feat: int = 64
  blind: bool = False
  support_range: float = 255.0
  left_square_pool: bool = False
  remat: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    if not self.blind:
      self.condition_net = ConditionNet(self.support_size, self.num_in_ch, self.cond_feat,
                                        self.left_square_pool, self.dtype)
    self.sr_net = rrdbnet.RRDBNet(self.num_in_ch, self.num_out_ch, self.scale, self.num_feat,
                                  self.num_block, self.num_grow_ch, self.remat, self.dtype)
    rdb_widths = tuple(self.num_feat + i * self.num_grow_ch for i in range(5))
    self.modulations = Modulations(rdb_widths * (3 * self.num_block), zero_init=True)

  def condition(self, support: jax.Array) -> jax.Array:
    if self.blind:
      return jnp.zeros((support.shape[0], 2 * self.cond_feat), jnp.float32)
    return self.condition_net(support * self.support_range)

  def super_resolve(self, lr: jax.Array, condition: jax.Array) -> jax.Array:
    s = [conditional.per_sample(m, lr.shape[0]) for m in self.modulations(condition)]
    body_scales = [[s[15 * b + 5 * r: 15 * b + 5 * r + 5] for r in range(3)]
                   for b in range(self.num_block)]
    return self.sr_net(lr, body_scales)


def _shapes(tree: Any) -> Any:
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def init_from_rrdbnet(model: CMDSRRRDBNet, rrdb_variables: Any, rng: jax.Array) -> dict[str, Any]:
  """Initial `model` variables with the given RRDBNet's (e.g. a converted checkpoint) as SR net.

  The ConditionNet is freshly initialised from `rng`; the modulations start as identity.
  """
  want = jax.eval_shape(lambda: model.init(rng, *model.example_inputs()))['params']['sr_net']
  got = rrdb_variables['params']
  if _shapes(got) != _shapes(want):
    raise ValueError('RRDBNet variables do not fit this CMDSRRRDBNet (check num_feat, num_block, '
                     'num_grow_ch, scale, num_in_ch, num_out_ch)')
  params = model.init(rng, model.example_inputs()[1],
                      method=lambda m, s: m.modulations(m.condition(s)))['params']
  return {'params': {**params, 'sr_net': got}}


def parameter_groups(params: dict[str, Any]) -> dict[str, Any]:
  """Labels for `optax.multi_transform`: 'condition' (ConditionNet) or 'sr' (everything else).

  These are CMDSR's two separately stepped optimisers; the modulations belong to the SR side.
  """
  return {k: jax.tree.map(lambda _, k=k: 'condition' if k == 'condition_net' else 'sr', v)
          for k, v in params.items()}
