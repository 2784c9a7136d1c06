"""Real-ESRGAN x2plus: `realesrgan_x4plus` at scale 2.

  python -m condsr_jax.main --config configs/realesrgan_x2plus.py --workdir workdirs/esrgan_x2 \
      --config.data.train=... --config.init.generator=workdirs/esrnet_x2 \
      --config.loss.vgg_weights=vgg19-dcbb9e9d.pth
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.sibling_recipe(__file__, 'realesrgan_x4plus').recipe(2, arg)
