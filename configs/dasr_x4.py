"""DASR (contrastive degradation representation + DA network), x4, as the official code.

  python -m condsr_jax.main --config configs/dasr_x4.py --workdir workdirs/dasr_x4 \
      --config.data.train=datasets/DF2K_HR --config.eval.val=datasets/Set14_HR
`get_config('aniso')` is the general setting (anisotropic blur, noise up to 25); the isotropic
one is the default. Seed 004's variants: `:centroid`, `:multicrop`, `:cross_image`,
`:momentum995`, `:byol`, `:local_fusion`, `:large_encoder`, `:no_contrast`, `:blind`, joined
with commas after a size (`:smoke,byol`, `:demo,multicrop`). Sizes: ':smoke' (seconds),
':demo' (CPU minutes).
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import tasks

EPOCH = 1000  # the reference's epoch: `test_every` batches


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """One of seed 004's improvements (or an ablation) as config values."""
  size = max(s for s, _ in c.degradation.tasks.crops)
  if variant == 'centroid':  # 5 positives averaged into one centroid key
    c.degradation.tasks.crops = ((size, 6),)
    c.dasr.key_views = (1, 2, 3, 4, 5)
  elif variant == 'multicrop':  # 2 global (4/3 size) + 4 local crops; keys from the globals
    big = min(size * 4 // 3, c.degradation.crop_pad // c.scale)
    c.degradation.tasks.crops = ((big, 2), (size, 4))
    c.degradation.gt_size = big * c.scale
    c.dasr.query_views, c.dasr.key_views = (0, 1, 2, 3, 4, 5), (0, 1)
  elif variant == 'cross_image':  # the positive is another image with the same degradation
    c.degradation.tasks.different_images = True
  elif variant == 'momentum995':
    c.dasr.momentum = 0.995
  elif variant == 'byol':
    c.dasr.objective = 'byol'
  elif variant == 'local_fusion':
    c.model.kwargs.local_fusion = True
  elif variant == 'large_encoder':
    c.model.kwargs.enc_widths = tuple(2 * w for w in c.model.kwargs.enc_widths)
  elif variant == 'no_contrast':  # the paper's "Model 1"
    c.dasr.objective = 'none'
  elif variant == 'blind':
    c.dasr.condition = 'none'
  elif variant == 'oracle':
    c.dasr.condition = 'oracle'
  elif variant not in ('', 'aniso'):
    raise ValueError(f'unknown variant {variant!r}')


def recipe(scale: int, arg: str | None) -> ml_collections.ConfigDict:
  """The official recipe at `scale` (isotropic sigma up to 2 | 3 | 4 for x2 | x3 | x4)."""
  parts = (arg or '').split(',')
  c = config_lib.default_config('dasr')
  c.scale = scale
  c.degradation = tasks.default_config('classic', scale, 'dasr')
  if 'aniso' in parts:
    c.degradation.blur, c.degradation.noise_range = 'aniso', (0.0, 25.0)
  c.data.batch_size = 32  # HR images, each with 2 patches
  c.data.vflip = c.data.rot90 = True
  c.train.num_steps = 600 * EPOCH
  c.train.ema_decay = 0.0  # the reference keeps no EMA
  c.train.checkpoint_every = c.eval.every = 5 * EPOCH
  c.eval.grid = 'blur_noise'
  if parts[0] == 'smoke':
    config_lib.shrink_to_smoke(c)
    c.model.kwargs.update(num_feat=8, num_group=1, num_block=1, reduction=4, rep_dim=8,
                          enc_widths=(8, 8, 16, 16, 16, 16), mlp_dim=16)
    c.degradation.tasks.crops = ((8, 2),)
    c.degradation.gt_size, c.degradation.crop_pad = 8 * scale, 12 * scale
    c.degradation.kernel_size = 7
    c.dasr.encoder_steps, c.dasr.queue_size, c.dasr.predictor_hidden = 2, 16, 16
  elif parts[0] == 'demo':
    c.model.kwargs.update(num_feat=32, num_group=2, num_block=2, rep_dim=32,
                          enc_widths=(32, 32, 64, 64, 128, 128), mlp_dim=128)
    c.degradation.tasks.crops = ((24, 2),)
    c.degradation.gt_size, c.degradation.crop_pad = 24 * scale, 48 * scale
    config_lib.shrink_to_demo(c, num_steps=3000, every=500)
    c.dasr.encoder_steps, c.dasr.queue_size = 500, 1024
    c.optim.encoder.milestones = (300,)
    c.optim.sr.lr, c.optim.sr.milestones = 5e-4, (1500, 2250)
  elif parts[0] not in ('', 'aniso'):
    apply_variant(c, parts[0])
  for variant in parts[1:]:
    apply_variant(c, variant)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipe(4, arg)
