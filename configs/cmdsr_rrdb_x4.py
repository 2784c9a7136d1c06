"""CMDSR's ConditionNet grafted onto Real-ESRGAN's RRDBNet: the trunk convs are modulated
channel-wise from the support set's condition (identity at initialisation).

  python -m condsr_jax.main --config configs/cmdsr_rrdb_x4.py --workdir workdirs/cmdsr_rrdb \
      --config.data.train=datasets/DF2K_HR --config.init.generator=RealESRNet_x4plus.pth
A plain RRDBNet checkpoint in `init.generator` starts the network exactly as that RRDBNet.
Variants: ':smoke' (seconds), ':demo' (CPU minutes).
"""

import ml_collections

from condsr_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.sibling_recipe(__file__, 'cmdsr_srresnet_x4').get_config(arg)
  c.model.arch = 'CMDSRRRDBNet'
  sizes = {'smoke': (8, 1, 4, 2, 8), 'demo': (32, 2, 16, 8, 32)}
  nf, nb, gc, n, cf = sizes.get(arg, (64, 23, 32, 20, 64))
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': nf, 'num_block': nb, 'num_grow_ch': gc,
                                              'support_size': n, 'cond_feat': cf})
  c.train.ema_decay = 0.999
  return c
