"""A compact blind x4 model for photos: SRVGGNetCompact with a bicubic skip, L1 loss, trained on
a moderate classic degradation (Gaussian blur, MATLAB bicubic, Gaussian noise, JPEG).

  python -m condsr_jax.main --config configs/compact_x4.py --workdir workdirs/compact_x4 \
      --config.data.train=datasets/DF2K_HR_sub --config.eval.val=datasets/val_hr
Variants: ':smoke' (seconds, tests), ':demo' (the README's main job: minutes on a 2-core CPU with
the shipped demo images, validated against bicubic and Lanczos on held-out images).

Why this recipe: the bicubic skip starts the network at bicubic's output, so every update works
on what bicubic misses (a nearest skip first has to learn interpolation, and shows blocks until
it has); and the degradation range covers the mild blur, noise and compression of real photos
rather than Real-ESRGAN's heavy second-order range (the previous demo, trained on that range,
was 2.1 dB PSNR-Y below bicubic on mildly degraded held-out images; docs/results.md).
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import pipelines


def degradation(scale: int) -> ml_collections.ConfigDict:
  """Isotropic Gaussian blur (sigma 0.2-2), MATLAB bicubic, noise 0-10 / 255, JPEG 60-95 on half
  the images, rounded to 8 bits: one draw per image."""
  g = pipelines.default_config('classic', scale)
  g.reference = 'dasr'
  g.kernel_size, g.blur, g.sigma_range, g.sigma_step = 21, 'iso', (0.2, 2.0), 0.0
  g.downsample, g.rounding = 'matlab', 'round'
  g.noise_range, g.noise_integer = (0.0, 10.0), False
  g.jpeg_prob, g.jpeg_range = 0.5, (60, 95)
  g.gt_size = g.crop_pad = 256
  return g


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default_config('sr')
  c.scale = 4
  c.model.arch = 'SRVGGNetCompact'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_conv': 16, 'skip': 'bicubic'})
  c.degradation = degradation(c.scale)
  c.data.batch_size = 16
  c.data.rot90 = c.data.vflip = True
  c.optim.generator.lr = 5e-4
  c.optim.generator.milestones = [200_000, 300_000]
  c.train.num_steps = 400_000
  c.train.checkpoint_every = 5000
  c.eval.every = 5000
  c.eval.grid = 'draws'  # fixed draws of the training degradation
  c.eval.y_channel = True
  if arg == 'smoke':
    config_lib.shrink_to_smoke(c, max_val_images=1)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 8, 'num_conv': 1, 'skip': 'bicubic'})
    c.degradation.gt_size = c.degradation.crop_pad = 32
  elif arg == 'demo':
    config_lib.shrink_to_demo(c, num_steps=2000, every=1000)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'num_conv': 8, 'skip': 'bicubic'})
    c.degradation.gt_size = c.degradation.crop_pad = 96
    c.optim.generator.milestones = [1500]
    c.train.ema_decay = 0.99  # 0.999 averages over more steps than the demo takes
  elif arg:
    raise ValueError(f'unknown variant {arg!r}: use smoke or demo')
  return c
