"""DASR x2: `configs/dasr_x4.py` (same sizes and variants) at scale 2, isotropic sigma up to
2.0, the official x2 setting (its `main.sh` example's 4.0 is a slip)."""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.sibling_recipe(__file__, 'dasr_x4').recipe(2, arg)
