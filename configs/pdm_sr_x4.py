"""PDM-SR x4, joint training as the official psnr/2020Track1: a DegModel (kernel nf 64, nb 8,
11 x 11; noise branch nf 64, nb 8, reading the blurred LR and 3 code channels) learnt from
unpaired real LR with an LR PatchGAN (LSGAN), and EDSR-baseline on its synthesised pairs.

  python -m condsr_jax.main --config configs/pdm_sr_x4.py --workdir workdirs/pdm_sr_x4 \
      --config.data.train=datasets/DIV2K_train_HR \
      --config.data.real_lr=datasets/NTIRE2020_T1/train_source --config.eval.val=...

SR on a frozen degradation model: `--config.pdm.train_degradation=False
--config.init.degradation=W/degradation.msgpack`. ':percep' is the official perceptual configs
(percep/*.yml): RRDB (nf 64, nb 23, gc 32), L1 0.01, VGG19 conv5_4 (pre-ReLU, L1) 0.05 and a
PatchGAN on HR with weight 0.005; it needs `--config.loss.vgg_weights=vgg19-dcbb9e9d.pth`.
Sizes: ':smoke' (seconds; with 'percep' random VGG features), ':demo' (CPU minutes; its "real
LR" domain is the demo validation folder), joined with the variant by a comma
(':smoke,percep', ':percep,demo').
"""

import ml_collections

from condsr_jax import config as config_lib

SIZES = ('smoke', 'demo')


def apply_variant(c: ml_collections.ConfigDict, variant: str, size: str) -> None:
  """The official perceptual configs as config values, their networks shrunk to `size`."""
  if variant != 'percep':
    raise ValueError(f'unknown variant {variant!r}')
  c.model.arch = 'RRDBNet'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32})
  # The reference lists L1 1.0 or 0.01 and GAN 0.05 or 0.005: ESRGAN's 0.01 : 0.005 pairing.
  c.loss.pixel_weight = 0.01
  c.loss.perceptual_weight = 0.05
  c.loss.perceptual_layers = ml_collections.ConfigDict({'conv5_4': 1.0})  # pre-ReLU features
  c.pdm.sr_gan_weight = 0.005
  if size == 'smoke':
    c.model.kwargs.update(num_feat=8, num_block=1, num_grow_ch=4)
    c.hr_discriminator.kwargs.update(nf=8, nb=2)
    c.loss.allow_random_vgg = True
    c.loss.vgg_widths = [8, 16, 32, 32, 32]
  elif size == 'demo':
    c.model.kwargs.update(num_feat=32, num_block=2, num_grow_ch=16)
    c.hr_discriminator.kwargs.update(nf=32)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [p for p in (arg or '').split(',') if p]
  sizes = [p for p in parts if p in SIZES]
  if len(sizes) > 1:
    raise ValueError(f'more than one size in {arg!r}')
  size = sizes[0] if sizes else ''
  c = config_lib.default_config('pdm_sr')
  c.scale = 4
  c.data.batch_size = 32
  c.pdm.hr_crop = 128  # LR 32
  c.train.num_steps = 200_000
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = c.eval.every = 5_000
  if size == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=8, num_block=1)
    c.degradation_model.kwargs.update(kernel_nf=8, kernel_nb=1, ksize=7, noise_nf=8, noise_nb=1)
    c.discriminator.kwargs.update(nf=8, nb=2)
    c.pdm.hr_crop = 32
  elif size == 'demo':
    config_lib.shrink_to_demo(c, num_steps=400, every=200)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=32, num_block=4)
    c.degradation_model.kwargs.update(kernel_nf=32, kernel_nb=2, noise_nf=32, noise_nb=2)
    c.discriminator.kwargs.update(nf=32)
    c.pdm.hr_crop = 64
  for variant in parts:
    if variant not in SIZES:
      apply_variant(c, variant, size)
  return c
