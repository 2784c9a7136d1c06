"""CMDSR (conditional meta-network) on its SRResNet-10 BaseNet, x4, as the official code.

  python -m condsr_jax.main --config configs/cmdsr_srresnet_x4.py --workdir workdirs/cmdsr \
      --config.data.train=datasets/DIV2K_train_HR --config.eval.val=datasets/Set5_HR
Tasks: 8 per batch, each an HR image with one random blur/noise degradation shared by its 40
patches (two halves of support_size 20). Variants: ':smoke' (seconds), ':demo' (CPU minutes).
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('cmdsr')
  c.scale = 4
  c.data.batch_size = 8  # tasks per batch
  c.data.vflip = c.data.rot90 = True
  c.train.num_steps = 500_000  # batches: 1e6 SR steps, one per half
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = 5000
  c.eval.every = 5000
  c.eval.grid = 'blur_noise'
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.model.kwargs = ml_collections.ConfigDict(
        {'num_feat': 8, 'num_block': 1, 'support_size': 2, 'cond_feat': 8})
    c.degradation.tasks.crops = ((8, 4),)
    c.degradation.gt_size, c.degradation.crop_pad = 32, 48
    c.cmdsr.cond_every = 2
  elif arg == 'demo':
    c.model.kwargs = ml_collections.ConfigDict(
        {'num_feat': 32, 'num_block': 4, 'support_size': 8, 'cond_feat': 32})
    c.degradation.tasks.crops = ((16, 16),)
    c.degradation.gt_size, c.degradation.crop_pad = 64, 192
    config_lib.shrink_to_demo(c, num_steps=2000, every=500)
    c.optim.sr.lr = c.optim.condition.lr = 5e-4
  elif arg:
    raise ValueError(f'unknown variant {arg!r}: use smoke or demo')
  return c
