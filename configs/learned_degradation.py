"""Any recipe trained on LR synthesised by a learned degradation model file (a PDM-SR DegModel):
the recipe's config with `degradation.kind = 'learned'`, its crop sizes and task layout kept.

  python -m condsr_jax.main --config configs/learned_degradation.py:realesrnet_x4plus \
      --config.degradation.model=deg_model.msgpack --workdir workdirs/esrnet_pdm
The argument is RECIPE[,VARIANT...], e.g. `:edsr_bicubic_x4,smoke` or `:dasr_x4,demo,byol`.
"""

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.degrade import pipelines


def learned(degradation: ml_collections.ConfigDict, scale: int) -> ml_collections.ConfigDict:
  """The learned kind in place of `degradation`, with its crop sizes and `tasks` section."""
  c = pipelines.default_config('learned', scale)
  c.gt_size, c.crop_pad = degradation.gt_size, degradation.crop_pad
  if 'tasks' in degradation:
    c.tasks = degradation.tasks
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if not arg:
    raise ValueError('name the recipe: configs/learned_degradation.py:RECIPE[,VARIANT...]')
  name, _, variant = arg.partition(',')
  c = config_lib.sibling_recipe(__file__, name).get_config(variant or None)
  c.degradation = learned(c.degradation, c.scale)
  return c
