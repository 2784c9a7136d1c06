"""DASR-Wei stage 1 x4: the DSN (De_resnet, nf 64, 8 residual blocks) learnt from unpaired real LR
against the frequency-separated discriminator (FSD, nf 64, InstanceNorm) on the Haar detail bands
(`filter='wavelet_cat'`, the official README's DSN command and the bands the SRN's discriminator
reads, so the domain-distance maps come from the same filter). Batch 8, HR crop 256 -> LR 64;
colour 1, LPIPS-alex 0.01, texture 0.005 (the code defaults); Adam 1e-4, beta1 0.5, decaying
linearly to 0 over the last 3/8 of the steps (the last 150 of 400 epochs), no EMA.

  python -m condsr_jax.main --config configs/dsn_x4.py --workdir workdirs/dsn_x4 \
      --config.data.train=datasets/DIV2K_train_HR \
      --config.data.real_lr=datasets/AIM2019/train_source \
      --config.dsn.lpips_weights=alexnet-owt-7be5be79.pth,alex.pth

`--config.dsn.perceptual_weight=0` trains without LPIPS weights (no perceptual term). Exports
`model.msgpack` (the DSN, HR -> LR) and `discriminator.msgpack`. ':smoke' (seconds; random VGG19
features for the perceptual term), ':demo' (CPU minutes, no perceptual term); both read the demo
validation folder as the "real LR" domain.
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('dsn')
  c.scale = 4
  c.data.batch_size = 8
  c.dsn.hr_crop = 256  # LR 64
  c.train.num_steps = 200_000
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = c.eval.every = 5_000
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=8, num_block=1)
    c.discriminator.kwargs.update(num_feat=8)
    c.dsn.hr_crop = 32
    c.dsn.perceptual = 'vgg19'
    c.dsn.vgg.allow_random_vgg = True
    c.dsn.vgg.vgg_widths = [8, 16, 32, 32, 32]
    # Layers an 8 x 8 LR still reaches (conv4_4 would be 1 x 1, conv5_4 empty).
    c.dsn.vgg.perceptual_layers = ml_collections.ConfigDict({'conv2_2': 0.1, 'conv3_4': 1.0})
  elif arg == 'demo':
    config_lib.shrink_to_demo(c, num_steps=400, every=200)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=32, num_block=4)
    c.discriminator.kwargs.update(num_feat=32)
    c.dsn.hr_crop = 128
    c.dsn.perceptual_weight = 0.0  # no weight files needed
    c.dsn.collapse_warmup = 200
  elif arg:
    raise ValueError(f'unknown variant {arg!r}')
  decay = c.train.num_steps * 3 // 8  # 400 epochs, the last 150 decaying
  for optim in (c.optim.generator, c.optim.discriminator):
    optim.schedule, optim.decay_steps = 'linear', decay
    optim.decay_start = c.train.num_steps - decay
  return c
