"""Training configuration: the loop's defaults, merged with a method's sections, and validation.

A config is an `ml_collections.ConfigDict`. `default_config(method)` is what every recipe in
`configs/` starts from: the sections the loop reads (`data`, `train`, `eval`, `distributed`, the
run's `seed` and `scale`) plus the method's own (`condsr_jax.methods`: its networks, losses,
degradation, `optim.NAME` and `init.NAME`). `validate` runs before anything else and names the
field that is wrong, so a typo fails in the first second, not hours into a run.
"""

import importlib.util
import os
import types
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config field with a value that cannot work; the message names the field."""


PRECISIONS = ('float32', 'bfloat16')  # compute dtypes of `train.precision` and network sections


def check(ok: bool, field: str, message: str, value: Any) -> None:
  """Raises ConfigError('config.FIELD = VALUE: MESSAGE') unless `ok`."""
  if not ok:
    raise ConfigError(f'config.{field} = {value!r}: {message}')


def loop_config() -> ml_collections.ConfigDict:
  """The fields the shared training loop reads, with their defaults."""
  c = ml_collections.ConfigDict()
  c.method = ''
  c.seed = 0
  c.scale = 4
  # Multi-host: jax.distributed.initialize(); empty/negative fields are auto-detected (TPU pods,
  # Slurm, Kubernetes). On plain machines give all three (process_id differs per process).
  c.distributed = ml_collections.ConfigDict({'enabled': False, 'coordinator_address': '',
                                             'num_processes': 0, 'process_id': -1})

  c.data = ml_collections.ConfigDict()
  # An image folder, a meta-info .txt (with root), an aligned folder or tfds:NAME[:SPLIT].
  c.data.train = ''
  c.data.root = ''
  c.data.batch_size = 12
  c.data.channels = 3
  c.data.hflip = True
  c.data.vflip = False
  c.data.rot90 = False
  c.data.num_workers = 0
  c.data.keep_decoded = False  # decode each image once, keep it in memory (small data sets)
  c.data.on_bad_image = 'skip'  # or 'stop'
  c.data.validate_files = False  # read every file's header before training starts

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.ema_decay = 0.999  # of the method's `ema_params`; 0: the EMA is the live weights
  c.train.max_consecutive_nonfinite = 20
  # The compute dtype of every network a method builds (each network section's `dtype`, when
  # set, overrides it for that network): 'bfloat16' is mixed precision. Parameters, optimiser
  # states, the EMA, losses and metrics stay float32 either way.
  c.train.precision = 'float32'  # float32 | bfloat16

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 1000  # steps; 0: only at the end
  c.eval.val = ''  # paired folder (gt/ + lq/) or an HR folder degraded with `eval.grid`
  c.eval.grid = 'bicubic'  # fixed degradations of an HR-only folder (condsr_jax.evaluate.GRIDS)
  c.eval.draw_size = 0  # 'draws' grid: HR centre-crop side (0: the training canvas)
  c.eval.crop_border = -1  # -1: the scale
  c.eval.y_channel = False
  c.eval.max_images = 0  # 0: all
  c.eval.grid_images = 4  # LR|bicubic|SR|HR panels written to TensorBoard
  # Perceptual metrics, each from its comma-separated weight files (condsr_jax.perceptual):
  # the torchvision trunk and the package's learned part; '' leaves the metric out.
  c.eval.perceptual = ml_collections.ConfigDict({'lpips_alex': '', 'lpips_vgg': '', 'dists': ''})
  c.eval.niqe = False  # NIQE of the outputs (no reference)
  return c


def default_config(method: str) -> ml_collections.ConfigDict:
  """The loop's defaults with `method`'s sections merged over them."""
  from condsr_jax import methods  # pylint: disable=g-import-not-at-top
  c = loop_config()
  c.method = method
  _merge(c, methods.get(method).default_config())
  return c


def _merge(into: ml_collections.ConfigDict, update: ml_collections.ConfigDict) -> None:
  """Recursively sets `update`'s fields in `into`, adding sections and fields it lacks."""
  section = ml_collections.ConfigDict
  for key, value in update.items():
    if isinstance(value, section) and isinstance(into.get(key), section):
      _merge(into[key], value)
    else:
      into[key] = value


DEMO_TRAIN, DEMO_VAL = 'data/demo/train', 'data/demo/val'  # relative to the repository root


def use_demo_images(c: ml_collections.ConfigDict) -> None:
  """Trains on the shipped demo images and validates on the held-out ones."""
  c.data.train, c.eval.val = DEMO_TRAIN, DEMO_VAL


def shrink_to_smoke(c: ml_collections.ConfigDict, max_val_images: int = 2) -> None:
  """A seconds-long run of a recipe (tests, CI): 6 steps of 4, checkpoints, two evaluations.
  Recipes shrink their networks and crops themselves."""
  use_demo_images(c)
  c.data.batch_size = 4
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 6, 2, 2
  c.eval.every, c.eval.max_images = 3, max_val_images


def shrink_to_demo(c: ml_collections.ConfigDict, num_steps: int, every: int) -> None:
  """A minutes-long run of a recipe on the demo images (batch 8): `num_steps` steps, logging
  every 100, checkpointing and evaluating every `every`. Recipes shrink their networks, crops
  and learning rates themselves."""
  use_demo_images(c)
  c.data.batch_size = 8
  c.train.num_steps, c.train.log_every = num_steps, 100
  c.train.checkpoint_every = c.eval.every = every


def sibling_recipe(config_file: str, name: str) -> types.ModuleType:
  """The recipe module NAME.py in the folder of `config_file`: recipes derive from one another
  wherever the configs folder lives."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'condsr_recipe_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def validate(c: ml_collections.ConfigDict, device_count: int = 1) -> None:
  """Raises ConfigError naming the first wrong field: the loop's, then the method's."""
  from condsr_jax import evaluate, methods, perceptual  # pylint: disable=g-import-not-at-top
  from condsr_jax.methods import optimizers  # pylint: disable=g-import-not-at-top
  method = methods.get(c.method)
  check(c.scale in (1, 2, 3, 4, 8), 'scale', 'must be 1, 2, 3, 4 or 8', c.scale)
  d = c.data
  check(d.batch_size > 0 and d.batch_size % device_count == 0, 'data.batch_size',
        f'must be a positive multiple of the {device_count} devices', d.batch_size)
  check(d.channels in (1, 3), 'data.channels', 'must be 1 or 3', d.channels)
  check(d.on_bad_image in ('skip', 'stop'), 'data.on_bad_image', "'skip' or 'stop'",
        d.on_bad_image)
  check(d.num_workers >= 0, 'data.num_workers', 'must be >= 0', d.num_workers)
  t = c.train
  check(t.num_steps > 0, 'train.num_steps', 'must be positive', t.num_steps)
  for field in ('log_every', 'checkpoint_every', 'keep_checkpoints', 'max_consecutive_nonfinite'):
    check(t[field] > 0, f'train.{field}', 'must be positive', t[field])
  check(0 <= t.ema_decay < 1, 'train.ema_decay', 'must be in [0, 1)', t.ema_decay)
  check(t.precision in PRECISIONS, 'train.precision', ' or '.join(PRECISIONS), t.precision)
  e = c.eval
  check(not e.val or os.path.isdir(e.val), 'eval.val', 'no such folder', e.val)
  check(e.every >= 0, 'eval.every', 'must be >= 0 (0: only at the end)', e.every)
  check(e.grid in evaluate.GRIDS, 'eval.grid', f'one of {evaluate.GRIDS}', e.grid)
  check(e.draw_size >= 0 and e.draw_size % c.scale == 0, 'eval.draw_size',
        f'must be 0 or a positive multiple of the scale {c.scale}', e.draw_size)
  for name, files in e.perceptual.items():
    check(name in perceptual.METRICS, f'eval.perceptual.{name}',
          f'unknown metric; one of {sorted(perceptual.METRICS)}', files)
    missing = [f for f in files.split(',') if files and not os.path.isfile(f)]
    check(not missing, f'eval.perceptual.{name}',
          f'no such file {missing}; {perceptual.weights_hint(name)}', files)
  for name, spec in c.get('optim', {}).items():
    optimizers.validate(spec, f'optim.{name}')
  for name, path in c.get('init', {}).items():
    check(not path or os.path.exists(path), f'init.{name}', 'no such file or folder', path)
  method.validate(c)
