"""PDM-SR x4, joint training as the official psnr/2020Track1: a DegModel (kernel nf 64, nb 8,
11 x 11; noise branch nf 64, nb 8, reading the blurred LR and 3 code channels) learnt from
unpaired real LR with an LR PatchGAN (LSGAN), and EDSR-baseline on its synthesised pairs.

  python -m condsr_jax.main --config configs/pdm_sr_x4.py --workdir workdirs/pdm_sr_x4 \
      --config.data.train=datasets/DIV2K_train_HR \
      --config.data.real_lr=datasets/NTIRE2020_T1/train_source --config.eval.val=...

SR on a frozen degradation model: `--config.pdm.train_degradation=False
--config.init.degradation=W/degradation.msgpack`. Sizes: ':smoke' (seconds), ':demo' (CPU
minutes; its "real LR" domain is the demo validation folder).
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('pdm_sr')
  c.scale = 4
  c.data.batch_size = 32
  c.pdm.hr_crop = 128  # LR 32
  c.train.num_steps = 200_000
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = c.eval.every = 5_000
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=8, num_block=1)
    c.degradation_model.kwargs.update(kernel_nf=8, kernel_nb=1, ksize=7, noise_nf=8, noise_nb=1)
    c.discriminator.kwargs.update(nf=8, nb=2)
    c.pdm.hr_crop = 32
  elif arg == 'demo':
    config_lib.shrink_to_demo(c, num_steps=400, every=200)
    c.data.real_lr = config_lib.DEMO_VAL
    c.model.kwargs.update(num_feat=32, num_block=4)
    c.degradation_model.kwargs.update(kernel_nf=32, kernel_nb=2, noise_nf=32, noise_nb=2)
    c.discriminator.kwargs.update(nf=32)
    c.pdm.hr_crop = 64
  elif arg:
    raise ValueError(f'unknown variant {arg!r}')
  return c
