"""Real-ESRNet x4plus: stage 1 of Real-ESRGAN. RRDBNet trained with L1 against the USM-sharpened
GT on the second-order degradation pipeline (BasicSR `train_realesrnet_x4plus.yml`).

  python -m condsr_jax.main --config configs/realesrnet_x4plus.py --workdir workdirs/esrnet \
      --config.data.train=datasets/DF2K/meta_info/meta_info_DF2Kmultiscale+OST_sub.txt \
      --config.data.root=datasets/DF2K --config.eval.val=datasets/val_hr \
      [--config.init.generator=ESRGAN_SRx4_DF2KOST_official-ff704c30.pth]
Variants: ':smoke' (seconds, tests), ':demo' (the README's main job: about 10 minutes on a 2-core
CPU with the shipped demo images, validated against bicubic on held-out images).
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import pipelines


def recipe(scale: int, arg: str | None, method: str = 'sr') -> ml_collections.ConfigDict:
  """The x4 and x2 recipes differ only in the scale; stage 2 builds on this with 'esrgan'."""
  c = config_lib.default_config(method)
  c.scale = scale
  c.model.arch = 'RRDBNet'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32})
  c.degradation = pipelines.default_config('realesrgan', scale)
  c.pool.size = 180  # the reference's queue_size
  c.data.batch_size = 12
  c.loss.pixel_target = 'usm'
  c.optim.generator.lr = 2e-4
  c.optim.generator.milestones = [1_000_000]
  c.train.num_steps = 1_000_000
  c.train.checkpoint_every = 5000
  c.eval.every = 5000
  c.eval.grid = 'draws'  # fixed draws of the training degradation
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4})
    c.degradation.crop_pad, c.degradation.gt_size, c.pool.size = 64, 32, 8
    c.degradation.canvas_buckets = ()  # one first-stage canvas: a fifth of the compile time
  elif arg == 'demo':
    # Real-ESRGAN's small model (as its realesr-general-x4v3): its nearest-upsampled skip lets
    # it beat bicubic within the demo's CPU minutes, which an RRDBNet of this size does not.
    c.model.arch = 'SRVGGNetCompact'
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'num_conv': 8})
    c.degradation.crop_pad, c.degradation.gt_size, c.pool.size = 128, 96, 64
    config_lib.shrink_to_demo(c, num_steps=2000, every=1000)
    c.optim.generator.lr = 5e-4
    c.train.ema_decay = 0.99  # 0.999 averages over more steps than the demo takes
  elif arg:
    raise ValueError(f'unknown variant {arg!r}: use smoke or demo')
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipe(4, arg)
