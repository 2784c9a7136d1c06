"""Real-ESRNet x2plus: `realesrnet_x4plus` at scale 2 (RRDBNet pixel-unshuffles its input by 2).

  python -m condsr_jax.main --config configs/realesrnet_x2plus.py --workdir workdirs/esrnet_x2 \
      --config.data.train=... [--config.init.generator=RealESRGAN_x2plus.pth]
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.sibling_recipe(__file__, 'realesrnet_x4plus').recipe(2, arg)
