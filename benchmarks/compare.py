"""condsr_jax and the PyTorch originals side by side: the same work, one after the other, one run.

  python benchmarks/compare.py --quick          # CPU: reduced sizes, minutes
  python benchmarks/compare.py                  # real sizes (GT 256, batch 16): an accelerator
  python benchmarks/compare.py --toy --steps 1  # tiny networks, seconds: keeps the script alive

The PyTorch side is BasicSR's and Real-ESRGAN's own code (`pip install condsr_jax[bench]`, or
`--basicsr-src` / `--realesrgan-src` source folders): their RRDBNet, SRVGGNetCompact, EDSR,
UNetDiscriminatorSN and VGG19 perceptual loss, `RealESRGANModel.feed_data` (the second-order
degradation and the training-pair queue) and `optimize_parameters` (G, D, EMA),
`RealESRGANDataset`'s kernel sampling and `RealESRGANer`'s tiling. It runs eager and under
`torch.compile`, float32 and bfloat16 autocast, channels-last. condsr_jax runs the equivalent
library code: the networks, the loop's step around the 'esrgan' method with the 'realesrgan'
degradation on the device, the host parameter sampler, `Upscaler.upscale` with tiles.

Every (item, dtype, framework mode) runs in its own subprocess, PyTorch first, then condsr_jax,
so neither holds the other's threads or device memory. Each figure is the median of `--steps`
steady-state repeats after a warm-up; compile time (JAX's lower + compile, PyTorch's first call
minus a steady call) is separate. FLOP/s use XLA's count of the JAX program for both columns (the
same work); the fraction of the device's peak is printed where the peak is known (`--peak-tflops`
otherwise). Ratios > 1 mean condsr_jax is faster.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = 4

# Network constructor arguments (BasicSR's names, also ours) at each size.
NETWORKS = {
    'real': {'rrdb': ('RRDBNet', dict(num_feat=64, num_block=23, num_grow_ch=32)),
             'srvgg': ('SRVGGNetCompact', dict(num_feat=64, num_conv=32)),
             'edsr': ('EDSR', dict(num_feat=64, num_block=16)),
             'unet_d': ('UNetDiscriminatorSN', dict(num_feat=64, skip_connection=True))},
    'toy': {'rrdb': ('RRDBNet', dict(num_feat=8, num_block=1, num_grow_ch=8)),
            'srvgg': ('SRVGGNetCompact', dict(num_feat=8, num_conv=2)),
            'edsr': ('EDSR', dict(num_feat=8, num_block=1)),
            'unet_d': ('UNetDiscriminatorSN', dict(num_feat=8, skip_connection=True))},
}
NET_NAMES = {'rrdb': 'RRDBNet x4plus', 'srvgg': 'SRVGGNetCompact x4v3', 'edsr': 'EDSR-baseline x4'}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Work sizes of one profile."""
  networks: str
  forward_hw: int  # forward: one image of this many LQ pixels a side
  train_batch: int  # L1 + Adam: batch of LQ train_hw -> GT train_hw * 4
  train_hw: int
  stage2_batch: int  # Real-ESRGAN stage 2: batch of crop_pad GT canvases -> gt_size crops
  stage2_crop_pad: int
  stage2_gt: int
  pairs_batch: int  # pair synthesis at the reference's sizes (400 -> 256 / 64)
  pairs_crop_pad: int
  pairs_gt: int
  tile_hw: int  # tiled upscaling: an image this many pixels a side, in tiles of tile + 2 pads
  tile: int
  tile_pad: int = 10


PROFILES = {
    'full': Sizes('real', 256, 16, 64, 16, 400, 256, 16, 400, 256, 1024, 256),
    'quick': Sizes('real', 64, 2, 32, 2, 160, 128, 8, 400, 256, 128, 64),
    'toy': Sizes('toy', 16, 1, 8, 2, 64, 32, 2, 64, 32, 48, 16, 4),
}
ITEMS = ('forward:rrdb', 'forward:srvgg', 'forward:edsr', 'train:rrdb', 'train:srvgg',
         'train:edsr', 'stage2', 'pairs', 'tile')
FLOAT32_ONLY = ('pairs',)  # the degradation is float32 in both

# Dense peak TFLOP/s (float32 rows: TF32 tensor cores, which convolutions use by default in both
# frameworks; bfloat16 rows: bf16 tensor cores), by device kind.
PEAK_TFLOPS = {
    'H200': {'float32': 494.7, 'bfloat16': 989.4},
    'H100': {'float32': 494.7, 'bfloat16': 989.4},
    'A100': {'float32': 156.0, 'bfloat16': 312.0},
    'TPU v4': {'float32': 275.0, 'bfloat16': 275.0},
    'TPU v5 lite': {'float32': 197.0, 'bfloat16': 197.0},
    'TPU v5p': {'float32': 459.0, 'bfloat16': 459.0},
}


def median_repeats(call: Callable[[], Any], steps: int) -> tuple[float, float]:
  """(first call seconds, median of `steps` later calls) of a call that waits for its result."""
  t0 = time.perf_counter()
  call()
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  times.sort()
  return first, times[len(times) // 2]


def demo_images(n: int, size: int) -> list:
  """`n` float32 HWC RGB crops of `size` pixels from the shipped demo photos (upscaled when a
  photo is smaller), rounded to 8 bits: what a training set's PNGs hold."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = os.path.join(os.path.dirname(HERE), 'data', 'demo', 'train')
  paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(('.png', '.jpg')))
  out = []
  for i in range(n):
    img = Image.open(paths[i % len(paths)]).convert('RGB')
    if min(img.size) < size:
      img = img.resize((max(size, img.size[0]), max(size, img.size[1])), Image.BICUBIC)
    top, left = (i * 37) % (img.size[1] - size + 1), (i * 53) % (img.size[0] - size + 1)
    out.append(np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255.0)
  return out


# ---------------------------------------------------------------------------- condsr_jax side


def jax_worker(item: str, dtype: str, sizes: Sizes, steps: int) -> dict:
  """One item with condsr_jax: compile seconds, steady seconds, XLA's FLOP count."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from condsr_jax import models, xla_flags  # pylint: disable=g-import-not-at-top
  import timing  # pylint: disable=g-import-not-at-top
  xla_flags.tune_xla_cpu()
  rng = np.random.default_rng(0)
  kind, _, net = item.partition(':')

  def spec_of(name: str) -> models.ModelSpec:
    arch, kwargs = NETWORKS[sizes.networks][name]
    scale_arg = 'scale' if arch == 'RRDBNet' else 'upscale'
    return models.ModelSpec(arch, {**kwargs, scale_arg: SCALE})

  def timed(fn, args, carry_state=False):
    compiled, compile_s = timing.compile_seconds(fn, *args)
    step_s = timing.median_seconds(compiled, args, steps, carry_state=carry_state)
    return {'compile_s': compile_s, 'step_s': step_s, 'flops': _flops(compiled)}

  if kind == 'forward':
    module = spec_of(net).build(dtype=jnp.dtype(dtype))
    x = jnp.asarray(rng.random((1, sizes.forward_hw, sizes.forward_hw, 3), np.float32))
    variables = jax.jit(module.init)(jax.random.key(0), x)
    return timed(jax.jit(module.apply), (variables, x))
  if kind == 'train':
    module = spec_of(net).build(dtype=jnp.dtype(dtype))
    n, hw = sizes.train_batch, sizes.train_hw
    lq = jnp.asarray(rng.random((n, hw, hw, 3), np.float32))
    gt = jnp.asarray(rng.random((n, hw * SCALE, hw * SCALE, 3), np.float32))
    params = jax.jit(module.init)(jax.random.key(0), lq)['params']
    tx = optax.adam(2e-4, b1=0.9, b2=0.99)

    def step(state, lq, gt):
      params, opt_state = state
      loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(
          module.apply({'params': p}, lq).astype(jnp.float32) - gt)))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    return timed(jax.jit(step, donate_argnums=0), ((params, tx.init(params)), lq, gt), True)
  if kind == 'stage2':
    return _jax_stage2(dtype, sizes, steps, timed)
  if kind == 'pairs':
    return _jax_pairs(sizes, steps)
  if kind == 'tile':
    import condsr_jax  # pylint: disable=g-import-not-at-top
    spec = spec_of('rrdb')
    module = spec.build()
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    upscaler = condsr_jax.Upscaler(spec, variables, dtype=dtype)
    img = (demo_images(1, sizes.tile_hw)[0] * 255).astype(np.uint8)
    tile = sizes.tile + 2 * sizes.tile_pad
    first, step_s = median_repeats(
        lambda: upscaler.upscale(img, tile=tile, tile_overlap=2 * sizes.tile_pad), steps)
    return {'compile_s': max(first - step_s, 0.0), 'step_s': step_s,
            'rate': (sizes.tile_hw * SCALE) ** 2 / 1e6 / step_s, 'unit': 'MP/s'}
  raise ValueError(f'unknown item {item!r}')


def _flops(compiled: Any) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and cost.get('flops') else None


def _jax_stage2(dtype: str, sizes: Sizes, steps: int, timed: Callable) -> dict:
  """The training loop's step around the 'esrgan' method on Real-ESRGAN's degradation."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from condsr_jax import config as config_lib, methods, train  # pylint: disable=g-import-not-at-top
  import degrade as pair_bench  # pylint: disable=g-import-not-at-top
  c = config_lib.sibling_recipe(os.path.join(os.path.dirname(HERE), 'configs', 'x.py'),
                               'realesrgan_x4plus').get_config()
  _, g_kwargs = NETWORKS[sizes.networks]['rrdb']
  _, d_kwargs = NETWORKS[sizes.networks]['unet_d']
  c.model.kwargs = ml_collections.ConfigDict(g_kwargs)
  c.discriminator.kwargs = ml_collections.ConfigDict(d_kwargs)
  c.train.precision = dtype  # every network, the VGG19 of the perceptual loss too
  c.data.batch_size = sizes.stage2_batch
  c.degradation.crop_pad, c.degradation.gt_size = sizes.stage2_crop_pad, sizes.stage2_gt
  c.pool.size = _queue_size(sizes.stage2_batch)
  c.loss.allow_random_vgg = True
  method = methods.build(c)
  rng = jax.random.key_data(jax.random.key(0))
  state = jax.jit(lambda: train.init_loop_state(method, rng, {}))()
  batch = {'train': jax.device_put(pair_bench.make_batch(
      method.degradation, sizes.stage2_batch, images=demo_images(
          sizes.stage2_batch, sizes.stage2_crop_pad)))}
  step = jax.jit(train.make_train_step(method, c.train.ema_decay), donate_argnums=0)
  return timed(step, (state, batch, method.constants()), True)


def _queue_size(batch: int) -> int:
  """The reference's queue of 180 pairs, rounded up to a multiple of the batch (it asserts)."""
  return -(-180 // batch) * batch


def pair_batches(steps: int) -> int:
  """Batches the pair-synthesis figures average over: the cost follows the random draws (the
  canvas sizes, the branches taken), so each figure is total pairs over total time."""
  return max(steps, 8)


def _jax_pairs(sizes: Sizes, steps: int) -> dict:
  """Real-ESRGAN pairs per second: the host sampler per pair plus the jitted degradation, over
  `pair_batches` batches of fresh draws (the median of several passes over them), for both
  pipeline modes."""
  import jax  # pylint: disable=g-import-not-at-top
  from condsr_jax.degrade import realesrgan  # pylint: disable=g-import-not-at-top
  import degrade as pair_bench  # pylint: disable=g-import-not-at-top
  import timing  # pylint: disable=g-import-not-at-top
  config = realesrgan.default_config(SCALE)
  config.crop_pad, config.gt_size = sizes.pairs_crop_pad, sizes.pairs_gt
  images = demo_images(sizes.pairs_batch, sizes.pairs_crop_pad)
  out = {}
  for mode in realesrgan.PIPELINE_MODES:
    config.mode = mode
    deg = realesrgan.RealESRGANDegradation(config, SCALE)
    batches = [jax.device_put(pair_bench.make_batch(deg, sizes.pairs_batch, seed, images))
               for seed in range(pair_batches(steps) + 1)]
    key = jax.random.key(0)
    compiled, compile_s = timing.compile_seconds(jax.jit(deg), batches[0], key)
    jax.block_until_ready(compiled(batches[0], key))
    # A pass over the draws takes seconds where the reference's takes a minute: the median of
    # passes spanning 10 s or more keeps a moment's load on this shared machine from deciding.
    passes = []
    while len(passes) < 3 or (sum(passes) < 10.0 and len(passes) < 25):
      t0 = time.perf_counter()
      for i, batch in enumerate(batches[1:]):
        jax.block_until_ready(compiled(batch, jax.random.fold_in(key, i)))
      passes.append(time.perf_counter() - t0)
    device_s = statistics.median(passes) / (len(batches) - 1)
    host_s = pair_bench.sampling_seconds(deg, 20 * sizes.pairs_batch) * sizes.pairs_batch
    out[mode] = {'compile_s': compile_s, 'step_s': device_s + host_s, 'device_s': device_s,
                 'rate': sizes.pairs_batch / (device_s + host_s), 'unit': 'pairs/s',
                 'loop': 'examples' if deg.per_example() else 'batch'}
  return out


# ------------------------------------------------------------------------------ PyTorch side


def torch_worker(item: str, dtype: str, mode: str, sizes: Sizes, steps: int) -> dict:
  """One item with the PyTorch originals, eager or `torch.compile`d."""
  import torch  # pylint: disable=g-import-not-at-top
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  _basicsr_imports(device)
  from basicsr.archs.edsr_arch import EDSR  # pylint: disable=g-import-not-at-top
  from basicsr.archs.rrdbnet_arch import RRDBNet  # pylint: disable=g-import-not-at-top
  from basicsr.archs.srvgg_arch import SRVGGNetCompact  # pylint: disable=g-import-not-at-top
  classes = {'RRDBNet': RRDBNet, 'SRVGGNetCompact': SRVGGNetCompact, 'EDSR': EDSR}
  kind, _, net = item.partition(':')
  autocast = dtype == 'bfloat16'

  def sync():
    if device.type == 'cuda':
      torch.cuda.synchronize()

  def build(name: str) -> torch.nn.Module:
    arch, kwargs = NETWORKS[sizes.networks][name]
    scale = {'scale': SCALE} if arch == 'RRDBNet' else {'upscale': SCALE}
    module = classes[arch](num_in_ch=3, num_out_ch=3, **kwargs, **scale)
    return module.to(device).to(memory_format=torch.channels_last)

  def maybe_compile(module):
    if mode == 'compile':
      module.compile()  # in place: parameter names stay those of the module
    return module

  def amp():
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)

  def timed(call):
    def wait():
      call()
      sync()
    first, step_s = median_repeats(wait, steps)
    return {'compile_s': max(first - step_s, 0.0), 'step_s': step_s}

  gen = torch.Generator().manual_seed(0)
  if kind == 'forward':
    module = build(net).eval()
    fn = maybe_compile(module)
    x = torch.rand((1, 3, sizes.forward_hw, sizes.forward_hw), generator=gen).to(device)
    x = x.contiguous(memory_format=torch.channels_last)

    def forward():
      with torch.no_grad(), amp():
        fn(x)
    return timed(forward)
  if kind == 'train':
    module = build(net).train()
    fn = maybe_compile(module)
    n, hw = sizes.train_batch, sizes.train_hw
    lq = torch.rand((n, 3, hw, hw), generator=gen).to(device).contiguous(
        memory_format=torch.channels_last)
    gt = torch.rand((n, 3, hw * SCALE, hw * SCALE), generator=gen).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.9, 0.99))

    def step():
      opt.zero_grad(set_to_none=True)
      with amp():
        loss = torch.nn.functional.l1_loss(fn(lq).float(), gt)
      loss.backward()
      opt.step()
    return timed(step)
  if kind == 'stage2':
    return _torch_stage2(device, mode, autocast, sizes, steps, timed)
  if kind == 'pairs':
    return _torch_pairs(device, sizes, steps, sync)
  if kind == 'tile':
    return _torch_tile(device, build, mode, autocast, sizes, steps)
  raise ValueError(f'unknown item {item!r}')


def _basicsr_imports(device: Any) -> None:
  """Makes BasicSR 1.4.2 / Real-ESRGAN 0.3 importable and runnable here: torchvision >= 0.17
  moved `functional_tensor`; their training model calls `.cuda()` (mapped to `device` on a CPU
  machine); their VGG19 downloads ImageNet weights (random weights: speed does not depend on
  them)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  from torchvision.transforms import functional  # pylint: disable=g-import-not-at-top
  sys.modules.setdefault('torchvision.transforms.functional_tensor', functional)
  if device.type == 'cpu':
    torch.nn.Module.cuda = lambda self, *a, **k: self.to(device)
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)
  from basicsr.archs import vgg_arch  # pylint: disable=g-import-not-at-top
  vgg_arch.vgg = type('RandomVGG', (), {
      'vgg19': staticmethod(lambda **_: torchvision.models.vgg19(weights=None))})


def _realesrgan_model_class():
  """Real-ESRGAN's training model (its package), else BasicSR's copy of it. Its `filter2D`
  views its padded input, which recent PyTorch can hand over in a non-contiguous layout: the
  module's name is wrapped to make the input contiguous first (the same values)."""
  try:
    from realesrgan.models import realesrgan_model  # pylint: disable=g-import-not-at-top
  except ImportError:
    from basicsr.models import realesrgan_model  # pylint: disable=g-import-not-at-top
  filter2d = realesrgan_model.filter2D
  realesrgan_model.filter2D = lambda img, kernel: filter2d(img.contiguous(), kernel)
  return realesrgan_model.RealESRGANModel


def _reference_options(sizes_batch: int, crop_pad: int, gt_size: int, networks: str,
                       device: Any, root: str) -> dict:
  """`train_realesrgan_x4plus.yml` as the options dict BasicSR builds from it."""
  _, g_kwargs = NETWORKS[networks]['rrdb']
  _, d_kwargs = NETWORKS[networks]['unet_d']
  adam = {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]}
  return {
      'name': 'compare', 'model_type': 'RealESRGANModel', 'scale': SCALE,
      'num_gpu': 1 if device.type == 'cuda' else 0, 'is_train': True, 'dist': False,
      'rank': 0, 'world_size': 1, 'high_order_degradation': True,
      'l1_gt_usm': True, 'percep_gt_usm': True, 'gan_gt_usm': False,
      'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5,
      'noise_range': [1, 30], 'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4,
      'jpeg_range': [30, 95], 'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3],
      'resize_range2': [0.3, 1.2], 'gaussian_noise_prob2': 0.5, 'noise_range2': [1, 25],
      'poisson_scale_range2': [0.05, 2.5], 'gray_noise_prob2': 0.4, 'jpeg_range2': [30, 95],
      'gt_size': gt_size, 'queue_size': _queue_size(sizes_batch),
      'datasets': {'train': {'crop_pad_size': crop_pad}},
      'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, **g_kwargs},
      'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, **d_kwargs},
      'path': {'pretrain_network_g': None, 'pretrain_network_d': None, 'resume_state': None,
               'experiments_root': root, 'models': root, 'training_states': root,
               'visualization': root, 'log': root},
      'train': {
          'ema_decay': 0.999, 'optim_g': dict(adam), 'optim_d': dict(adam),
          'scheduler': {'type': 'MultiStepLR', 'milestones': [400000], 'gamma': 0.5},
          'total_iter': 400000, 'warmup_iter': -1,
          'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
          'perceptual_opt': {'type': 'PerceptualLoss', 'layer_weights': {
              'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1, 'conv5_4': 1},
              'vgg_type': 'vgg19', 'use_input_norm': True, 'perceptual_weight': 1.0,
              'style_weight': 0, 'range_norm': False, 'criterion': 'l1'},
          'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0,
                      'fake_label_val': 0.0, 'loss_weight': 0.1},
          'net_d_iters': 1, 'net_d_init_iters': 0},
  }


def _reference_dataset(crop_pad: int, n: int, root: str):
  """Real-ESRGAN's dataset over `n` PNG crops of the demo photos: it draws each example's
  kernels (its `__getitem__`, as its data loader workers run it)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    from realesrgan.data.realesrgan_dataset import RealESRGANDataset  # pylint: disable=g-import-not-at-top
  except ImportError:
    from basicsr.data.realesrgan_dataset import RealESRGANDataset  # pylint: disable=g-import-not-at-top
  names = []
  for i, img in enumerate(demo_images(n, crop_pad)):
    names.append(f'{i}.png')
    Image.fromarray((img * 255).round().astype(np.uint8)).save(os.path.join(root, names[-1]))
  with open(os.path.join(root, 'meta.txt'), 'w') as f:
    f.write('\n'.join(names) + '\n')
  kernel = {'blur_kernel_size': 21, 'kernel_list': ['iso', 'aniso', 'generalized_iso',
            'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
            'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob': 0.1,
            'blur_sigma': [0.2, 3], 'betag_range': [0.5, 4], 'betap_range': [1, 2]}
  opt = {'dataroot_gt': root, 'meta_info': os.path.join(root, 'meta.txt'),
         'io_backend': {'type': 'disk'}, 'use_hflip': True, 'use_rot': False,
         'crop_pad_size': crop_pad, **kernel,
         **{k + '2': v for k, v in kernel.items()},
         'final_sinc_prob': 0.8, 'gt_size': crop_pad}
  return RealESRGANDataset(opt)


def _collate(examples: list) -> dict:
  """The batch a data loader's workers hand over (contiguous stacks)."""
  import torch  # pylint: disable=g-import-not-at-top
  return {k: torch.stack([e[k] for e in examples]).contiguous()
          for k in ('gt', 'kernel1', 'kernel2', 'sinc_kernel')}


def _torch_stage2(device, mode: str, autocast: bool, sizes: Sizes, steps: int,
                  timed: Callable) -> dict:
  """`feed_data` + `optimize_parameters` of Real-ESRGAN's model (degradation, queue, G, D, EMA);
  the examples' kernels are drawn beforehand, as its data loader workers do."""
  import logging  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  logging.getLogger('basicsr').setLevel(logging.ERROR)
  root = tempfile.mkdtemp()
  n = sizes.stage2_batch
  model = _realesrgan_model_class()(_reference_options(
      n, sizes.stage2_crop_pad, sizes.stage2_gt, sizes.networks, device, root))
  nets = [model.net_g, model.net_d, model.cri_perceptual.vgg]
  for net in nets:
    net.to(memory_format=torch.channels_last)
    if mode == 'compile':
      net.compile()  # in place: the EMA update pairs parameters by name
  dataset = _reference_dataset(sizes.stage2_crop_pad, n, root)
  batch = _collate([dataset[i] for i in range(n)])
  count = [0]

  def step():
    count[0] += 1
    model.feed_data(batch)  # the degradation stays float32, as ours
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
      model.optimize_parameters(count[0])
  return timed(step)


def _torch_pairs(device, sizes: Sizes, steps: int, sync: Callable) -> dict:
  """Pairs per second: the dataset's kernel draws for a batch plus `feed_data`'s degradation
  (and its queue), Real-ESRGAN's own code, over `pair_batches` batches."""
  import random  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp()
  n = sizes.pairs_batch
  model_class = _realesrgan_model_class()
  opt = _reference_options(n, sizes.pairs_crop_pad, sizes.pairs_gt, 'toy', device, root)
  model = model_class.__new__(model_class)  # the degradation needs no networks
  model.opt, model.device, model.is_train = opt, device, True
  from basicsr.utils import DiffJPEG, USMSharp  # pylint: disable=g-import-not-at-top
  model.jpeger, model.usm_sharpener = DiffJPEG(differentiable=False).to(device), USMSharp().to(
      device)
  model.queue_size = opt['queue_size']
  dataset = _reference_dataset(sizes.pairs_crop_pad, n, root)
  torch.manual_seed(0)
  np.random.seed(0)
  random.seed(0)

  def pairs():
    model.feed_data(_collate([dataset[i] for i in range(n)]))
    sync()

  pairs()
  t0 = time.perf_counter()
  for _ in range(pair_batches(steps)):
    pairs()
  step_s = (time.perf_counter() - t0) / pair_batches(steps)
  return {'reference': {'compile_s': 0.0, 'step_s': step_s, 'rate': n / step_s,
                        'unit': 'pairs/s'}}


def _torch_tile(device, build: Callable, mode: str, autocast: bool, sizes: Sizes,
                steps: int) -> dict:
  """`RealESRGANer.enhance` of a uint8 BGR image in tiles of `tile` + `tile_pad` on each side."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from realesrgan.utils import RealESRGANer  # pylint: disable=g-import-not-at-top
  net = build('rrdb').eval()
  path = os.path.join(tempfile.mkdtemp(), 'net.pth')
  torch.save({'params_ema': net.state_dict()}, path)
  upsampler = RealESRGANer(scale=SCALE, model_path=path, model=net, tile=sizes.tile,
                           tile_pad=sizes.tile_pad, pre_pad=0, half=False, device=device)
  if mode == 'compile':
    upsampler.model.compile()
  img = (demo_images(1, sizes.tile_hw)[0][:, :, ::-1] * 255).astype(np.uint8)

  def enhance():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
      upsampler.enhance(img, outscale=SCALE)
  first, step_s = median_repeats(enhance, steps)
  return {'compile_s': max(first - step_s, 0.0), 'step_s': step_s,
          'rate': (sizes.tile_hw * SCALE) ** 2 / 1e6 / step_s, 'unit': 'MP/s'}


# -------------------------------------------------------------------------------- the driver


def run_worker(args: argparse.Namespace, framework: str, item: str, dtype: str,
               mode: str) -> dict:
  """One worker subprocess: its result, or {'error': its last lines}."""
  cmd = [args.torch_python if framework == 'torch' else sys.executable, os.path.abspath(__file__),
         '--worker', framework, '--item', item, '--dtype', dtype, '--mode', mode,
         '--profile', args.profile, '--steps', str(args.steps)]
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [HERE] + [p for p in (args.basicsr_src, args.realesrgan_src) if p] +
      ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  t0 = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout,
                        check=False)
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      result = json.loads(line[len('RESULT '):])
      result['wall_s'] = time.time() - t0
      return result
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  error = ' | '.join(tail) or f'exit {proc.returncode}'
  print(f'{framework} {mode} {item} {dtype} failed: {error}', file=sys.stderr, flush=True)
  return {'error': error}


VERSIONS = '''
from importlib import metadata
found = []
for name in ('torch', 'basicsr', 'realesrgan'):
  try:
    found.append(f'{name} {metadata.version(name)}')
  except metadata.PackageNotFoundError:
    pass
print(', '.join(found))
'''


def torch_available(python: str) -> str | None:
  """None when `python` imports torch and BasicSR, else why not."""
  probe = ('import sys, torchvision.transforms.functional as f; '
           'sys.modules.setdefault("torchvision.transforms.functional_tensor", f); '
           'import torch, basicsr.archs.rrdbnet_arch')
  proc = subprocess.run([python, '-c', probe], capture_output=True, text=True, check=False)
  return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def device_description() -> dict:
  """The JAX device and the software versions (in this process: JAX only)."""
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return {'platform': dev.platform, 'kind': dev.device_kind, 'count': jax.device_count(),
          'jax': jax.__version__}


def peak_flops(kind: str, dtype: str, override: float | None) -> float | None:
  if override:
    return override * 1e12
  for name, peaks in PEAK_TFLOPS.items():
    if name in kind:
      return peaks[dtype] * 1e12
  return None


def _fmt(seconds: float | None, digits: int = 3) -> str:
  return '–' if seconds is None else f'{seconds:.{digits}f}'


def table(rows: list[dict], kind: str, peak_override: float | None) -> str:
  """The Markdown table of every row: ours, PyTorch eager and compiled, ratios, FLOP/s."""
  head = ('| item | dtype | condsr_jax | compile s | PyTorch eager | PyTorch compile | '
          'compile s | vs eager | vs compile | TFLOP/s | % peak |')
  lines = [head, '|' + '---|' * 11]
  for r in rows:
    ours, eager, comp = r['jax'], r.get('eager', {}), r.get('compile', {})
    unit = ours.get('unit')

    def show(x):
      if 'error' in x:
        return 'error'
      if not x:
        return '–'
      return f'{x["rate"]:.2f} {unit}' if unit else f'{x["step_s"]:.3f} s'

    def ratio(other):
      if 'step_s' not in ours or 'step_s' not in other:
        return '–'
      return f'{other["step_s"] / ours["step_s"]:.2f}x'

    flops, peak = ours.get('flops'), peak_flops(kind, r['dtype'], peak_override)
    tflops = flops / ours['step_s'] / 1e12 if flops and 'step_s' in ours else None
    lines.append(
        f'| {r["name"]} | {r["dtype"]} | {show(ours)} | {_fmt(ours.get("compile_s"), 1)} | '
        f'{show(eager)} | {show(comp)} | {_fmt(comp.get("compile_s"), 1)} | {ratio(eager)} | '
        f'{ratio(comp)} | {_fmt(tflops, 3 if tflops and tflops < 1 else 1)} | '
        f'{_fmt(100 * tflops * 1e12 / peak if tflops and peak else None, 1)} |')
  return '\n'.join(lines)


def item_name(item: str, sizes: Sizes, mode: str = '') -> str:
  kind, _, net = item.partition(':')
  if kind == 'forward':
    return f'{NET_NAMES[net]} forward, 1x{sizes.forward_hw}²'
  if kind == 'train':
    return (f'{NET_NAMES[net]} L1+Adam step, {sizes.train_batch}x{sizes.train_hw}²'
            f'->{sizes.train_hw * SCALE}²')
  if kind == 'stage2':
    return (f'Real-ESRGAN stage-2 step, {sizes.stage2_batch}x{sizes.stage2_crop_pad}²'
            f'->{sizes.stage2_gt}²')
  if kind == 'pairs':
    return (f'Real-ESRGAN pairs ({mode}), {sizes.pairs_batch}x{sizes.pairs_crop_pad}²'
            f'->{sizes.pairs_gt}²/{sizes.pairs_gt // SCALE}²')
  return (f'RRDBNet tiled upscale, {sizes.tile_hw}² in {sizes.tile}² tiles '
          f'(+{sizes.tile_pad} px pads)')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', dest='profile', action='store_const', const='quick',
                      help='reduced sizes for a CPU (minutes)')
  parser.add_argument('--toy', dest='profile', action='store_const', const='toy',
                      help='tiny networks and images (seconds; CI)')
  parser.add_argument('--profile', default='full', choices=sorted(PROFILES))
  parser.add_argument('--steps', type=int, default=5, help='steady-state repeats per figure')
  parser.add_argument('--items', default=','.join(ITEMS), help=f'of {",".join(ITEMS)}')
  parser.add_argument('--dtypes', default=None,
                      help='float32,bfloat16 (default: both on an accelerator, float32 on CPU)')
  parser.add_argument('--torch-modes', default=None,
                      help='eager,compile (default: both on an accelerator, eager on CPU, where '
                      'torch.compile of these networks takes many minutes)')
  parser.add_argument('--torch-python', default=sys.executable,
                      help='the interpreter with torch and BasicSR (default: this one)')
  parser.add_argument('--basicsr-src', help='a BasicSR source folder, when not installed')
  parser.add_argument('--realesrgan-src', help='a Real-ESRGAN source folder, when not installed')
  parser.add_argument('--peak-tflops', type=float, help='the device peak, when not known')
  parser.add_argument('--timeout', type=float, default=1800, help='seconds per worker')
  parser.add_argument('--json', help='also write every figure here')
  parser.add_argument('--worker', choices=['jax', 'torch'], help=argparse.SUPPRESS)
  parser.add_argument('--item', help=argparse.SUPPRESS)
  parser.add_argument('--dtype', default='float32', help=argparse.SUPPRESS)
  parser.add_argument('--mode', default='eager', help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.profile = args.profile or 'full'
  sizes = PROFILES[args.profile]
  if args.worker:
    if args.worker == 'jax':
      result = jax_worker(args.item, args.dtype, sizes, args.steps)
    else:
      result = torch_worker(args.item, args.dtype, args.mode, sizes, args.steps)
    print('RESULT ' + json.dumps(result))
    return

  device = device_description()
  accelerator = device['platform'] != 'cpu'
  dtypes = (args.dtypes or ('float32,bfloat16' if accelerator else 'float32')).split(',')
  modes = (args.torch_modes or ('eager,compile' if accelerator else 'eager')).split(',')
  missing = torch_available(args.torch_python)
  versions = f'jax {device["jax"]}'
  if missing:
    print(f'PyTorch side skipped ({missing}): pip install "condsr_jax[bench]"', flush=True)
  else:
    versions += ', ' + subprocess.run(
        [args.torch_python, '-c', VERSIONS], capture_output=True, text=True,
        check=False).stdout.strip().splitlines()[-1]
  print(f'device: {device["platform"]} {device["kind"]} x{device["count"]}; {versions}; '
        f'profile {args.profile}, median of {args.steps}', flush=True)
  rows = []
  for item in args.items.split(','):
    for dtype in (['float32'] if item in FLOAT32_ONLY else dtypes):
      result = {'jax': run_worker(args, 'jax', item, dtype, 'eager')}
      for mode in ([] if missing else modes):
        if item == 'pairs' and mode == 'compile':
          continue  # data-dependent Python control flow: the reference runs eager
        result[mode] = run_worker(args, 'torch', item, dtype, mode)
      if item == 'pairs':  # one row per pipeline mode; the reference draws per batch
        for pmode in ('per_sample', 'reference'):
          ours = result['jax'].get(pmode, result['jax'])
          rows.append({'name': item_name(item, sizes, pmode), 'dtype': dtype, 'jax': ours,
                       'eager': result.get('eager', {}).get('reference', result.get('eager', {}))})
      else:
        rows.append({'name': item_name(item, sizes), 'dtype': dtype, **result})
      print(table(rows[-1:], device['kind'], args.peak_tflops).splitlines()[-1], flush=True)
  print()
  print(table(rows, device['kind'], args.peak_tflops))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'device': device, 'versions': versions, 'profile': args.profile,
                 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
