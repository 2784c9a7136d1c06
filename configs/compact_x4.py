"""A compact blind x4 model for photos: SRVGGNetCompact with a bicubic skip, L1 loss, trained on
the mild classic degradation of everyday photos (slight Gaussian blur, MATLAB bicubic, light
Gaussian noise, good-quality JPEG).

  python -m condsr_jax.main --config configs/compact_x4.py --workdir workdirs/compact_x4 \
      --config.data.train=datasets/DF2K_HR_sub --config.eval.val=datasets/val_hr
Variants: ':smoke' (seconds, tests), ':demo' (the README's main job: minutes on a 2-core CPU with
the shipped demo photos, validated against bicubic and Lanczos on held-out photos).

Why this recipe (docs/results.md has the runs behind each choice):
- the bicubic skip starts the network at bicubic's output, so every update works on what
  bicubic misses (a nearest skip first has to learn interpolation, and shows blocks until it
  has);
- the degradation range is that of phone and web photos (blur sigma 0.2-1.2, noise 0-5,
  JPEG 75-95 on half the images): a blind model trained on a wider range (blur to 2, noise to
  10, JPEG from 60) hedges towards smoothing and gained 0.16 dB less on mildly degraded
  held-out photos; Real-ESRGAN's heavy second-order range lost 2.1 dB to bicubic there;
- the demo trains on photographs only and keeps them decoded in memory: decoding the PNGs
  took a third of each step.
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import pipelines


def degradation(scale: int) -> ml_collections.ConfigDict:
  """Isotropic Gaussian blur (sigma 0.2-1.2), MATLAB bicubic, noise 0-5 / 255, JPEG 75-95 on
  half the images, rounded to 8 bits: one draw per image."""
  g = pipelines.default_config('classic', scale)
  g.reference = 'dasr'
  g.kernel_size, g.blur, g.sigma_range, g.sigma_step = 21, 'iso', (0.2, 1.2), 0.0
  g.downsample, g.rounding = 'matlab', 'round'
  g.noise_range, g.noise_integer = (0.0, 5.0), False
  g.jpeg_prob, g.jpeg_range = 0.5, (75, 95)
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
    config_lib.shrink_to_demo(c, num_steps=4000, every=2000)
    c.model.kwargs = ml_collections.ConfigDict({'num_feat': 48, 'num_conv': 8, 'skip': 'bicubic'})
    c.degradation.gt_size = c.degradation.crop_pad = 96
    c.data.keep_decoded = True  # seven photos, decoded once
    c.optim.generator.update(schedule='cosine', lr=1e-3, decay_steps=4000, min_lr=1e-5)
    c.train.ema_decay = 0.99  # 0.999 averages over more steps than the demo takes
    c.eval.draw_size = 256  # validate on 256x256 centre crops, not on 96x96 training-size ones
  elif arg:
    raise ValueError(f'unknown variant {arg!r}: use smoke or demo')
  return c
