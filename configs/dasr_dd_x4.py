"""DASR-Wei stage 3 x4: domain-distance aware training of RRDBNet (nf 64, 23 blocks, gc 32) on the
DSN's generated pairs, as `train_DASR_auto_reproduce_aim2019.json`: batch 6 generated pairs + 6
real LR, HR crop 128; L1 weighted by the domain-distance maps 1, Haar LL L1 1, LPIPS-alex 1, GAN
0.005 on the wavelet detail bands of SR(real LR) against unpaired HR (NLayer PatchGAN, nf 64);
Adam 1e-4 (beta2 0.999) for both, halved at 35k, 80k, 100k, 150k; 350k steps, no EMA.

  condsr-jax adapt --hr datasets/DIV2K_train_HR --real-lr datasets/AIM2019/train_source \
      --workdir workdirs/dasr_wei --lpips-weights alexnet-owt-7be5be79.pth,alex.pth

runs stages 1-3 (`condsr_jax.adapt`); stage 3 alone, on a generated folder (gt/, lq/, dist/):

  python -m condsr_jax.main --config configs/dasr_dd_x4.py --workdir workdirs/dasr_dd_x4 \
      --config.data.train=workdirs/dasr_wei/generated \
      --config.data.real_lr=datasets/AIM2019/train_source \
      --config.dasr_dd.lpips_weights=alexnet-owt-7be5be79.pth,alex.pth

':smoke' (seconds; random VGG19 features for the perceptual term) and ':demo' (CPU minutes, no
perceptual term) run standalone on bicubic pairs of the demo images (no maps), with the demo
validation folder as the "real LR" domain; `use_generated` turns any of them to a generated set.
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import pipelines
from condsr_jax.methods import common


def use_generated(c: ml_collections.ConfigDict, folder: str) -> None:
  """Trains on the generated pairs and maps in `folder` (gt/, lq/, dist/), crops kept."""
  c.data.train = folder
  c.degradation = common.paired_config(c.degradation.gt_size)
  c.dasr_dd.domain_distance = True


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('dasr_dd')
  c.scale = 4
  c.data.batch_size = 6
  c.degradation.gt_size = 128
  c.train.num_steps = 350_000
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = c.eval.every = 2_500
  if arg in ('smoke', 'demo'):
    gt_size = 32 if arg == 'smoke' else 64
    c.degradation = pipelines.default_config('bicubic', c.scale)
    c.degradation.gt_size = c.degradation.crop_pad = gt_size
    c.dasr_dd.domain_distance = False
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=8, num_block=1, num_grow_ch=4)
    c.discriminator.kwargs.update(num_feat=8)
    c.dasr_dd.perceptual = 'vgg19'
    c.dasr_dd.vgg.allow_random_vgg = True
    c.dasr_dd.vgg.vgg_widths = [8, 16, 32, 32, 32]
    c.dasr_dd.vgg.perceptual_layers = ml_collections.ConfigDict({'conv2_2': 0.1, 'conv3_4': 1.0})
  elif arg == 'demo':
    config_lib.shrink_to_demo(c, num_steps=400, every=200)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=32, num_block=2, num_grow_ch=16)
    c.discriminator.kwargs.update(num_feat=32)
    c.dasr_dd.perceptual_weight = 0.0  # no weight files needed
  elif arg:
    raise ValueError(f'unknown variant {arg!r}')
  return c
