"""DASR (Wang et al., CVPR 2021): the contrastive degradation encoder, MoCo's InfoNCE, and the
degradation-aware SR network, with the official `model/blindsr.py` parameter names.

Images enter both networks at 0..255 (the official `rgb_range`); the encoder sees them without
the mean shift, the SR network subtracts the DIV2K mean first (a fixed `MeanShift`).
"""

import functools
from typing import Any, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from condsr_jax.nn import conditional, edsr, layers, registry

_SLOPE = 0.1  # every activation of both networks is LeakyReLU(0.1)


def _lrelu(x: jax.Array) -> jax.Array:
  return layers.lrelu(x, _SLOPE)


class DegradationEncoder(nn.Module):
  """Official `Encoder`: 3x3 conv-BN-LeakyReLU layers, global average pooling, then an MLP.

  Returns (fea, proj): fea [B, widths[-1]] is the representation the SR network reads, proj
  [B, mlp_dim] what MoCo normalises into its query or key; with `spatial` also the map before
  pooling [B, h / 4, w / 4, widths[-1]]. `train` uses batch statistics and updates the running
  ones (the 'batch_stats' collection).
  """
  widths: Sequence[int] = (64, 64, 128, 128, 256, 256)
  strides: Sequence[int] = (1, 1, 2, 1, 2, 1)
  mlp_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, spatial: bool = False
               ) -> tuple[jax.Array, ...]:
    for i, (width, stride) in enumerate(zip(self.widths, self.strides)):
      x = layers.conv(width, stride=stride, dtype=self.dtype, name=f'E_{3 * i}')(x)
      x = layers.BatchNorm(dtype=self.dtype, name=f'E_{3 * i + 1}')(x, train)
      x = _lrelu(x)
    fea = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    proj = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp_0')(fea)
    proj = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp_2')(_lrelu(proj))
    if spatial:
      return fea, proj.astype(jnp.float32), x
    return fea, proj.astype(jnp.float32)


class Predictor(nn.Module):
  """BYOL's predictor on the query projection (Dense, LeakyReLU, Dense): with it, the query
  encoder can match the momentum encoder's keys without negatives and without collapsing."""
  hidden: int = 256
  features: int = 256

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, name='fc_2')(_lrelu(nn.Dense(self.hidden, name='fc_0')(x)))


def byol_loss(p: jax.Array, k: jax.Array) -> jax.Array:
  """BYOL's negative-free objective: 2 - 2 cos(prediction, key), averaged over the batch."""
  return jnp.mean(2.0 - 2.0 * jnp.sum(normalize(p) * normalize(k), axis=-1))


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """torch.nn.functional.normalize along the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float = 0.07
             ) -> tuple[jax.Array, jax.Array]:
  """MoCo's logits [N, 1 + K] = [q.k, q @ queue] / T and their cross entropy against index 0.

  q, k [N, dim] are normalised here; `queue` [dim, K] holds normalised keys (the official
  buffer layout). The caller enqueues k after this: current keys are not negatives.
  """
  q, k = normalize(q), normalize(k)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue], axis=1) / temperature
  loss = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[:, 0])
  return logits, loss


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The official `_dequeue_and_enqueue`: queue[:, ptr:ptr + N] = normalised keys.T, ptr + N
  modulo K (K must be a multiple of N, as the official code asserts)."""
  k_size, n = queue.shape[1], keys.shape[0]
  if k_size % n:
    raise ValueError(f'the queue length {k_size} must be a multiple of the key batch {n}')
  queue = jax.lax.dynamic_update_slice(queue, normalize(keys).T.astype(queue.dtype),
                                       (0, pointer.astype(jnp.int32)))
  return queue, (pointer + n) % k_size


def momentum_update(params_k: Any, params_q: Any, momentum: float) -> Any:
  """MoCo's key encoder step: k <- m k + (1 - m) q, with no gradient into q."""
  return jax.tree.map(lambda k, q: k * momentum + jax.lax.stop_gradient(q) * (1 - momentum),
                      params_k, params_q)


def moco_forward(encoder: DegradationEncoder, variables_q: Any, variables_k: Any,
                 queue: jax.Array, pointer: jax.Array, im_q: jax.Array, im_k: jax.Array,
                 momentum: float = 0.999, temperature: float = 0.07) -> dict[str, Any]:
  """The official `MoCo.forward` in training, as a pure function of both encoders' variables.

  The key encoder's parameters move towards the query encoder's (`momentum`; its BatchNorm
  statistics are its own) before it encodes `im_k`; keys carry no gradient and enter the queue
  after the logits. Returns the query encoder's `embedding` (fea), 'q_proj', 'k_proj',
  'logits', 'loss', and the updated 'variables_q' (running stats), 'variables_k', 'queue',
  'pointer'.
  """
  (embedding, q_proj), q_state = encoder.apply(variables_q, im_q, True, mutable=['batch_stats'])
  params_k = momentum_update(variables_k['params'], variables_q['params'], momentum)
  (_, k_proj), k_state = encoder.apply({**variables_k, 'params': params_k}, im_k, True,
                                       mutable=['batch_stats'])
  k_proj = jax.lax.stop_gradient(k_proj)
  logits, loss = info_nce(q_proj, k_proj, queue, temperature)
  queue, pointer = enqueue(queue, pointer, k_proj)
  return {'embedding': embedding, 'q_proj': q_proj, 'k_proj': k_proj, 'logits': logits,
          'loss': loss, 'variables_q': {**variables_q, **q_state},
          'variables_k': {'params': params_k, **k_state}, 'queue': queue, 'pointer': pointer}


def per_sample_depthwise(x: jax.Array, kernels: jax.Array) -> jax.Array:
  """Cross-correlation of sample b's channel c with its own 3x3 kernel `kernels[b, c]` (zero
  padding 1), as the official grouped conv over [1, B*C, H, W] does; written as nine shifted
  products, which XLA:CPU runs far faster than a B*C-group convolution."""
  k = kernels.shape[-1]
  h, w = x.shape[1:3]
  pad = k // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = jnp.zeros_like(x)
  for dy in range(k):
    for dx in range(k):
      out = out + xp[:, dy:dy + h, dx:dx + w, :] * kernels[:, None, None, :, dy, dx]
  return out


class ChannelAttention(nn.Module):
  """Official `CA_layer` on the representation: sigmoid(W2 LeakyReLU(W1 rep)), 1x1 convs
  without bias on the [B, 1, 1, dim] map, as the official code (and its state dict) has them."""
  features: int = 64
  reduction: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rep: jax.Array) -> jax.Array:
    conv = functools.partial(layers.conv, kernel_size=1, use_bias=False, dtype=self.dtype)
    att = conv(rep.shape[-1] // self.reduction, name='conv_du_0')(rep[:, None, None, :])
    return nn.sigmoid(conv(self.features, name='conv_du_2')(_lrelu(att)))


class DAConv(nn.Module):
  """Official `DA_conv`: a per-sample depthwise kernel predicted from the representation
  (LeakyReLU, then a 1x1 conv), plus the input scaled by channel attention (`CA_layer`)."""
  features: int = 64
  kernel_size: int = 3
  reduction: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, rep: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype)
    kernel = dense(rep.shape[-1], name='kernel_0')(rep)
    kernel = dense(c * k * k, name='kernel_2')(_lrelu(kernel)).reshape(-1, c, k, k)
    out = _lrelu(per_sample_depthwise(x, kernel.astype(x.dtype)))
    out = layers.conv(self.features, 1, dtype=self.dtype, name='conv')(out)
    att = ChannelAttention(self.features, self.reduction, self.dtype, name='ca')(rep)
    return out + x * att.astype(x.dtype)


class DABlock(nn.Module):
  """Official `DAB`: DA conv, conv, DA conv, conv (LeakyReLU between), plus the input."""
  features: int = 64
  reduction: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, rep: jax.Array) -> jax.Array:
    da = functools.partial(DAConv, self.features, reduction=self.reduction, dtype=self.dtype)
    conv = functools.partial(layers.conv, self.features, dtype=self.dtype)
    out = _lrelu(da(name='da_conv1')(x, rep))
    out = _lrelu(conv(name='conv1')(out))
    out = _lrelu(da(name='da_conv2')(out, rep))
    return conv(name='conv2')(out) + x


class DAGroup(nn.Module):
  """Official `DAG`: `num_blocks` DA blocks and a conv, plus the group input."""
  features: int = 64
  num_blocks: int = 5
  reduction: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, rep: jax.Array) -> jax.Array:
    res = x
    for i in range(self.num_blocks):
      res = DABlock(self.features, self.reduction, self.dtype, name=f'body_{i}')(res, rep)
    return layers.conv(self.features, dtype=self.dtype, name=f'body_{self.num_blocks}')(res) + x


def _neighbours(x: jax.Array, k: int = 3) -> jax.Array:
  """[B, h, w, C] -> [B, h, w, k * k, C]: each pixel's k x k neighbourhood (zero padding)."""
  h, w, pad = x.shape[1], x.shape[2], k // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return jnp.stack([xp[:, dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)], axis=3)


class LocalAttentionFusion(nn.Module):
  """The spatial representation attends over 3x3 neighbourhoods of the LR features.

  The encoder's map before pooling (stride 4) is brought to the LR grid (nearest) and is the
  query; the LR features are keys and values. The result is added to the features through a
  zero-initialised projection, so the network starts as the one without fusion.
  """
  dim: int = 32
  window: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array, rep_map: jax.Array) -> jax.Array:
    h, w = feat.shape[1:3]
    stride = -(-h // rep_map.shape[1])
    rep = jnp.repeat(jnp.repeat(rep_map, stride, axis=1), stride, axis=2)[:, :h, :w]
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    q = dense(self.dim, name='query')(rep.astype(feat.dtype))
    keys = _neighbours(dense(self.dim, name='key')(feat), self.window)
    values = _neighbours(feat, self.window)
    logits = jnp.einsum('bhwd,bhwnd->bhwn', q, keys).astype(jnp.float32) / self.dim ** 0.5
    att = jax.nn.softmax(logits, axis=-1).astype(values.dtype)  # the softmax in float32
    fused = jnp.einsum('bhwn,bhwnc->bhwc', att, values)
    return feat + dense(feat.shape[-1], kernel_init=nn.initializers.zeros, name='proj')(fused)


class DASRNet(nn.Module):
  """Official `DASR` (the generator G): LR [B, h, w, 3] at 0..255 and the encoder's
  representation [B, rep_dim] -> SR [B, h * scale, w * scale, 3] at 0..255."""
  num_feat: int = 64
  num_group: int = 5
  num_block: int = 5
  reduction: int = 8
  scale: int = 4
  rep_dim: int = 64  # width of the compressed representation the DA convs read
  num_ch: int = 3
  rgb_range: float = 255.0
  rgb_mean: Sequence[float] = layers.DIV2K_MEAN
  local_fusion: bool = False  # seed 004: fuse the encoder's map before pooling after the head
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, fea: jax.Array, rep_map: jax.Array | None = None
               ) -> jax.Array:
    mean = self.rgb_range * jnp.asarray(self.rgb_mean, jnp.float32)
    # k_v: the compressed representation every DA conv reads.
    rep = _lrelu(nn.Dense(self.rep_dim, use_bias=False, dtype=self.dtype, name='compress_0')(fea))
    x = layers.conv(self.num_feat, dtype=self.dtype, name='head_0')(x - mean)
    if self.local_fusion:
      x = LocalAttentionFusion(self.rep_dim, dtype=self.dtype, name='fusion')(x, rep_map)
    res = x
    for i in range(self.num_group):
      res = DAGroup(self.num_feat, self.num_block, self.reduction, self.dtype,
                    name=f'body_{i}')(res, rep)
    res = layers.conv(self.num_feat, dtype=self.dtype, name=f'body_{self.num_group}')(res) + x
    out = edsr.upsample(res, self.scale, self.num_feat, self.dtype, prefix='tail_0')
    out = layers.conv(self.num_ch, dtype=self.dtype, name='tail_1')(out)
    return out.astype(jnp.float32) + mean


class _MoCoQuery(nn.Module):
  """The official `MoCo` module as a checkpoint holds it for inference: its query encoder."""
  widths: Sequence[int]
  mlp_dim: int
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder_q = DegradationEncoder(self.widths, mlp_dim=self.mlp_dim, dtype=self.dtype)

  def __call__(self, x: jax.Array, spatial: bool = False) -> jax.Array | tuple[jax.Array, ...]:
    """fea [B, D]; with `spatial`, (fea, the map before pooling)."""
    out = self.encoder_q(x, spatial=spatial)
    return (out[0], out[2]) if spatial else out[0]


def _detect_blindsr(sd: registry.StateDict) -> dict[str, Any]:
  num_feat = int(sd['G.head.0.weight'].shape[0])
  ups = registry.count_indices(sd, r'G\.tail\.0\.(\d+)\.weight')
  num_convs = registry.count_indices(sd, r'E\.encoder_q\.E\.(\d+)\.weight') // 2
  rep_dim = int(sd['G.compress.0.weight'].shape[0])
  return dict(
      num_feat=num_feat, rep_dim=rep_dim,
      num_group=registry.count_indices(sd, r'G\.body\.(\d+)\.body\.0\.da_conv1\.conv\.weight'),
      num_block=registry.count_indices(sd, r'G\.body\.0\.body\.(\d+)\.da_conv1\.conv\.weight'),
      reduction=rep_dim // int(sd['G.body.0.body.0.da_conv1.ca.conv_du.0.weight'].shape[0]),
      scale=3 if int(sd['G.tail.0.0.weight'].shape[0]) == 9 * num_feat else 2 ** ups,
      enc_widths=tuple(int(sd[f'E.encoder_q.E.{3 * i}.weight'].shape[0])
                       for i in range(num_convs)),
      mlp_dim=int(sd['E.encoder_q.mlp.2.weight'].shape[0]))


def _blindsr_reads(kwargs: Mapping[str, Any], key: str) -> bool:
  """The inference model reads G (less its constant mean shifts) and the query encoder; the key
  encoder, queue and pointer of a full training state dict are left out."""
  del kwargs
  return key.startswith(('G.', 'E.encoder_q.')) and not key.startswith(('G.sub_mean.',
                                                                        'G.add_mean.'))


def _blindsr_mean_shifts(kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The official `MeanShift` 1x1 convs (std 1) around G, which the flax module computes."""
  net = BlindSR(**kwargs)
  mean = np.float32(net.rgb_range) * np.asarray(net.rgb_mean, np.float32)
  eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
  return {'G.sub_mean.weight': eye, 'G.sub_mean.bias': -mean,
          'G.add_mean.weight': eye.copy(), 'G.add_mean.bias': mean}


@registry.register(scale_arg='scale', detect=_detect_blindsr, uses_key=_blindsr_reads,
                   detect_keys=('G.head.0.weight', 'G.compress.0.weight',
                                'E.encoder_q.E.0.weight'), torch_constants=_blindsr_mean_shifts)
class BlindSR(nn.Module):
  """The official `BlindSR` at test time, as `model_*.pt` stores it: the query encoder reads the
  LR image, the SR network upscales it under that representation; images in [0, 1] here.

  The representation is one per image (the conditional-network interface of
  `condsr_jax.nn.conditional`): from the whole LR image, as the official test does, up to
  `support_patch` pixels a side; past that, the mean over `support_size` fixed crops of that
  size, so memory stays bounded and tiled and whole-image outputs agree.
  """
  num_feat: int = 64
  num_group: int = 5
  num_block: int = 5
  reduction: int = 8
  scale: int = 4
  rep_dim: int = 64
  enc_widths: Sequence[int] = (64, 64, 128, 128, 256, 256)
  mlp_dim: int = 256
  support_size: int = 4
  support_patch: int = 512
  blind: bool = False
  local_fusion: bool = False
  num_in_ch: ClassVar[int] = 3
  dtype: Any = jnp.float32

  def setup(self):
    if self.blind:
      self.blind_rep = self.param('blind_rep', nn.initializers.normal(1.0),
                                  (self.enc_widths[-1],))
    else:
      self.E = _MoCoQuery(tuple(self.enc_widths), self.mlp_dim, self.dtype)
    self.G = DASRNet(self.num_feat, self.num_group, self.num_block, self.reduction, self.scale,
                     self.rep_dim, local_fusion=self.local_fusion, dtype=self.dtype)

  def __call__(self, lr: jax.Array) -> jax.Array:
    return self.upscale(lr, self.condition_from_lr(lr))

  def condition_from_support(self, patches: jax.Array) -> jax.Array:
    """`[k, n, p, p, 3]` in [0, 1] -> `[k, D]`: the mean representation of each task's crops."""
    k, n = patches.shape[:2]
    if self.blind:
      return jnp.broadcast_to(self.blind_rep, (k, self.enc_widths[-1]))
    fea = self.E(patches.reshape(k * n, *patches.shape[2:]) * 255.0)
    return jnp.mean(fea.reshape(k, n, -1), axis=1)

  def condition_from_lr(self, lr: jax.Array) -> jax.Array:
    """`[B, h, w, 3]` in [0, 1] -> `[B, D]`: the whole image, or crops past `support_patch`."""
    if self.blind:
      return jnp.broadcast_to(self.blind_rep, (lr.shape[0], self.enc_widths[-1]))
    if max(lr.shape[1:3]) <= self.support_patch:
      return self.E(lr * 255.0)
    return self.condition_from_support(
        conditional.lr_support_crops(lr, self.support_size, self.support_patch))

  def upscale(self, lr: jax.Array, condition: jax.Array) -> jax.Array:
    """`[B, h, w, 3]` in [0, 1] (task-major) under `[k, D]` representations -> SR in [0, 1]."""
    rep_map = self.E(lr * 255.0, spatial=True)[1] if self.local_fusion else None
    return self.G(lr * 255.0, conditional.per_sample(condition, lr.shape[0]), rep_map) / 255.0

  def example_inputs(self) -> tuple[jax.Array, ...]:
    return (jnp.zeros((1, 16, 16, 3), jnp.float32),)
