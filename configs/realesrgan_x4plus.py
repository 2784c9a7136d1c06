"""Real-ESRGAN x4plus: stage 2. Starts from a stage-1 generator and adds the VGG19 perceptual
loss and a U-Net discriminator with spectral norm (BasicSR `train_realesrgan_x4plus.yml`).

  python -m condsr_jax.main --config configs/realesrgan_x4plus.py --workdir workdirs/esrgan \
      --config.data.train=... --config.init.generator=workdirs/esrnet \
      --config.loss.vgg_weights=vgg19-dcbb9e9d.pth
`init.generator` takes a stage-1 workdir (its EMA weights), an exported model file or a
converted PyTorch checkpoint such as RealESRNet_x4plus.pth; `init.discriminator` optionally
RealESRGAN_x4plus_netD.pth. The perceptual loss needs torchvision's VGG19 weights file.
Variants: ':smoke' (seconds; random VGG features), ':demo' (CPU minutes; starts from the stage-1
demo, `configs/realesrnet_x4plus.py:demo` trained into workdirs/esrnet_demo, and needs the VGG19
weights file).
"""

import ml_collections

from condsr_jax import config as config_lib


def recipe(scale: int, arg: str | None) -> ml_collections.ConfigDict:
  c = config_lib.sibling_recipe(__file__, 'realesrnet_x4plus').recipe(scale, arg, 'esrgan')
  c.optim.generator.lr = c.optim.discriminator.lr = 1e-4
  c.optim.generator.milestones = c.optim.discriminator.milestones = [400_000]
  c.loss.pixel_weight = 1.0
  c.loss.pixel_target = c.loss.perceptual_target = 'usm'
  c.loss.gan_target = 'gt'
  c.loss.perceptual_weight = 1.0
  c.loss.gan_type = 'vanilla'
  c.loss.gan_weight = 0.1
  if not arg:
    c.train.num_steps = 400_000
  if arg == 'smoke':
    c.discriminator.kwargs = ml_collections.ConfigDict({'num_feat': 4, 'skip_connection': True})
    c.loss.perceptual_layers = ml_collections.ConfigDict({'conv1_2': 0.1, 'conv2_2': 0.1})
    c.loss.allow_random_vgg = True
    c.loss.vgg_widths = [8, 16, 32, 32, 32]
  elif arg == 'demo':
    c.discriminator.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'skip_connection': True})
    c.init.generator = 'workdirs/esrnet_demo'  # configs/realesrnet_x4plus.py:demo
    c.optim.generator.lr = c.optim.discriminator.lr = 1e-4
    c.train.num_steps = 500
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return recipe(4, arg)
