"""EDSR on the classic bicubic (MATLAB) LR, L1 loss (BasicSR's EDSR-M recipe).

  python -m condsr_jax.main --config configs/edsr_bicubic_x4.py --workdir workdirs/edsr_x4 \
      --config.data.train=datasets/DF2K_HR_sub --config.eval.val=datasets/Set5
Variants: ':smoke' (seconds, tests), ':demo' (minutes on a CPU, shipped demo images).
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('sr')
  c.scale = 4
  c.model.arch = 'EDSR'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_block': 16})
  c.degradation.gt_size = c.degradation.crop_pad = 192
  c.data.batch_size = 16
  c.data.rot90 = True
  c.data.vflip = True
  c.optim.generator.lr = 1e-4
  c.optim.generator.milestones = [200_000]
  c.train.num_steps = 300_000
  c.train.log_every = 100
  c.train.checkpoint_every = 5000
  c.eval.every = 5000
  c.eval.grid = 'bicubic'
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c, max_val_images=1)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 8, 'num_block': 1})
    c.degradation.gt_size = c.degradation.crop_pad = 32
  elif arg == 'demo':
    config_lib.shrink_to_demo(c, num_steps=1500, every=500)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'num_block': 4})
    c.degradation.gt_size = c.degradation.crop_pad = 96
    c.optim.generator.lr = 5e-4
  elif arg:
    raise ValueError(f'unknown variant {arg!r}: use smoke or demo')
  return c
