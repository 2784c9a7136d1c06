"""Trains a recipe: python -m condsr_jax.main --config configs/NAME.py[:variant] --workdir DIR.

Re-running with the same workdir resumes. Config fields are overridden with --config.a.b=value.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from condsr_jax import config as config_lib
from condsr_jax import train
from condsr_jax import xla_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'recipe: configs/NAME.py[:variant]',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of checkpoints, logs and exports')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  xla_flags.tune_xla_cpu()
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_lib.ConfigError, train.TrainingStopped) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.TrainingInterrupted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(e.exit_code)
  for report in summary.reports:
    print(report)
  print(f'model file: {os.path.join(_WORKDIR.value, "model.msgpack")}')


if __name__ == '__main__':
  app.run(main)
