"""Training configuration: the defaults every recipe in `configs/` starts from, and validation.

A config is an `ml_collections.ConfigDict`; `validate` runs before anything else and names the
field that is wrong, so a typo fails in the first second, not hours into a run.
"""

import importlib.util
import os
import types

import ml_collections

METHODS = ('sr', 'esrgan', 'cmdsr')
GAN_TYPES = ('vanilla', 'lsgan', 'hinge', 'wgan_softplus')


def default_config() -> ml_collections.ConfigDict:
  """Every field a run reads, with the value a recipe gets unless it sets its own."""
  c = ml_collections.ConfigDict()
  c.method = 'sr'
  c.seed = 0
  c.scale = 4
  # Multi-host: jax.distributed.initialize(); empty/negative fields are auto-detected (TPU pods,
  # Slurm, Kubernetes). On plain machines give all three (process_id differs per process).
  c.distributed = ml_collections.ConfigDict({'enabled': False, 'coordinator_address': '',
                                             'num_processes': 0, 'process_id': -1})

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'RRDBNet'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32})
  c.model.dtype = 'float32'  # compute dtype; parameters stay float32

  c.discriminator = ml_collections.ConfigDict()  # GAN methods
  c.discriminator.arch = 'UNetDiscriminatorSN'
  c.discriminator.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'skip_connection': True})

  c.init = ml_collections.ConfigDict()
  c.init.generator = ''  # model file, workdir or PyTorch checkpoint to start the generator from
  c.init.discriminator = ''

  c.data = ml_collections.ConfigDict()
  c.data.train = ''  # image folder, meta-info .txt (with root), or tfds:NAME[:SPLIT]
  c.data.root = ''
  c.data.batch_size = 12
  c.data.crop_size = 400  # GT crop (or pad) taken from each training image
  c.data.channels = 3
  c.data.hflip = True
  c.data.vflip = False
  c.data.rot90 = False
  c.data.num_workers = 0
  c.data.on_bad_image = 'skip'  # or 'stop'
  c.data.validate_files = False  # read every file's header before training starts

  c.degradation = ml_collections.ConfigDict()
  c.degradation.kind = 'bicubic'  # bicubic | realesrgan | classic
  c.degradation.gt_size = 256  # training GT patch after degradation (LQ: gt_size // scale)
  c.degradation.pool_size = 0  # Real-ESRGAN training-pair pool (0: none)

  c.optim = ml_collections.ConfigDict({'lr': 2e-4, 'b1': 0.9, 'b2': 0.99, 'milestones': [],
                                       'gamma': 0.5})
  c.optim_d = ml_collections.ConfigDict({'lr': 1e-4, 'b1': 0.9, 'b2': 0.99, 'milestones': [],
                                         'gamma': 0.5})

  c.optim_cond = ml_collections.ConfigDict({'lr': 1e-4, 'b1': 0.9, 'b2': 0.999,
                                            'milestones': [], 'gamma': 0.5})

  c.cmdsr = ml_collections.ConfigDict()  # method 'cmdsr'
  c.cmdsr.condition = 'support'  # support | oracle | none (blind BaseNet)
  c.cmdsr.schedule = 'alternating'  # alternating (the reference) | joint
  c.cmdsr.cond_every = 10  # SR steps between ConditionNet steps
  c.cmdsr.con_weight = 1.0
  c.cmdsr.sr_in_cond_weight = 0.1
  c.cmdsr.elementwise_distance = True  # the reference's distance over a size-1 axis

  c.loss = ml_collections.ConfigDict()
  c.loss.pixel_weight = 1.0
  c.loss.pixel_criterion = 'l1'  # l1 | l2
  c.loss.pixel_target = 'gt'  # gt | usm (Real-ESRGAN sharpens its L1/perceptual targets)
  c.loss.perceptual_target = 'gt'  # gt | usm
  c.loss.gan_target = 'gt'  # what the discriminator sees as real: gt | usm
  c.loss.perceptual_weight = 0.0
  c.loss.perceptual_layers = ml_collections.ConfigDict(
      {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0})
  c.loss.vgg_weights = ''  # torchvision vgg19 .pth (vgg19-dcbb9e9d.pth)
  c.loss.allow_random_vgg = False  # tests only: perceptual loss on random features
  c.loss.gan_type = 'vanilla'
  c.loss.gan_weight = 0.1
  c.loss.edge_sobel_weight = 0.0
  c.loss.edge_canny_weight = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.ema_decay = 0.999
  c.train.max_consecutive_nonfinite = 20

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 1000  # steps; 0: only at the end
  c.eval.val = ''  # paired folder (gt/ + lq/) or an HR folder degraded with `eval.grid`
  c.eval.grid = 'realesrgan'  # fixed degradation grid for HR-only validation folders
  c.eval.crop_border = -1  # -1: the scale
  c.eval.y_channel = False
  c.eval.max_images = 0  # 0: all
  c.eval.grid_images = 4  # LR|SR|HR panels written to TensorBoard
  return c


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


def sibling_recipe(config_file: str, name: str) -> types.ModuleType:
  """The recipe module NAME.py in the folder of `config_file`: recipes derive from one another
  wherever the configs folder lives."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'condsr_recipe_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigError(ValueError):
  """A config field with a value that cannot work; the message names the field."""


def _check(ok: bool, field: str, message: str, value) -> None:
  if not ok:
    raise ConfigError(f'config.{field} = {value!r}: {message}')


def validate(c: ml_collections.ConfigDict, device_count: int = 1) -> None:
  """Raises ConfigError naming the first wrong field."""
  _check(c.method in METHODS, 'method', f'must be one of {METHODS}', c.method)
  _check(c.scale in (1, 2, 3, 4, 8), 'scale', 'must be 1, 2, 3, 4 or 8', c.scale)
  from condsr_jax import nn as cnn  # pylint: disable=g-import-not-at-top
  _check(c.model.arch in cnn.ARCHITECTURES, 'model.arch',
         f'unknown; known: {sorted(cnn.ARCHITECTURES)}', c.model.arch)
  _check(c.model.dtype in ('float32', 'bfloat16'), 'model.dtype', 'float32 or bfloat16',
         c.model.dtype)
  for field in ('init.generator', 'init.discriminator', 'loss.vgg_weights'):
    path = c[field.split('.')[0]][field.split('.')[1]]
    _check(not path or os.path.exists(path), field, 'no such file or folder', path)
  d = c.data
  _check(bool(d.train), 'data.train', 'set the training images (a folder, a meta-info .txt, or '
         'tfds:NAME)', d.train)
  if not d.train.startswith('tfds:'):
    _check(os.path.exists(d.train), 'data.train', 'no such file or folder', d.train)
  _check(d.batch_size > 0 and d.batch_size % device_count == 0, 'data.batch_size',
         f'must be a positive multiple of the {device_count} devices', d.batch_size)
  _check(d.channels in (1, 3), 'data.channels', 'must be 1 or 3', d.channels)
  _check(d.on_bad_image in ('skip', 'stop'), 'data.on_bad_image', "'skip' or 'stop'",
         d.on_bad_image)
  g = c.degradation
  _check(g.kind in ('bicubic', 'realesrgan', 'classic'), 'degradation.kind',
         'bicubic, realesrgan or classic', g.kind)
  _check(g.gt_size > 0 and g.gt_size % c.scale == 0, 'degradation.gt_size',
         f'must be a positive multiple of the scale {c.scale}', g.gt_size)
  _check(d.crop_size >= g.gt_size, 'data.crop_size',
         f'must be at least degradation.gt_size ({g.gt_size})', d.crop_size)
  if 'crop_pad' in g:
    _check(d.crop_size == g.crop_pad, 'data.crop_size',
           f'must equal degradation.crop_pad ({g.crop_pad})', d.crop_size)
  _check(g.pool_size == 0 or g.pool_size >= d.batch_size, 'degradation.pool_size',
         f'0 or at least the batch size {d.batch_size}', g.pool_size)
  for name in ('optim', 'optim_d', 'optim_cond'):
    _check(c[name].lr > 0, f'{name}.lr', 'must be positive', c[name].lr)
    _check(0 <= c[name].b1 < 1 and 0 <= c[name].b2 < 1, f'{name}.b1/b2', 'must be in [0, 1)',
           (c[name].b1, c[name].b2))
  lo = c.loss
  _check(lo.pixel_criterion in ('l1', 'l2'), 'loss.pixel_criterion', "'l1' or 'l2'",
         lo.pixel_criterion)
  for field in ('pixel_target', 'perceptual_target', 'gan_target'):
    _check(lo[field] in ('gt', 'usm'), f'loss.{field}', "'gt' or 'usm'", lo[field])
  _check(lo.gan_type in GAN_TYPES, 'loss.gan_type', f'one of {GAN_TYPES}', lo.gan_type)
  if lo.perceptual_weight > 0:
    from condsr_jax.nn import vgg  # pylint: disable=g-import-not-at-top
    bad = [k for k in lo.perceptual_layers if k not in vgg.VGG19_LAYER_NAMES]
    _check(not bad, 'loss.perceptual_layers', f'unknown VGG19 layers {bad}', bad)
    _check(bool(lo.vgg_weights) or lo.allow_random_vgg, 'loss.vgg_weights',
           'the perceptual loss needs torchvision VGG19 weights: download vgg19-dcbb9e9d.pth '
           '(https://download.pytorch.org/models/vgg19-dcbb9e9d.pth) and set '
           '--config.loss.vgg_weights=/path/to/vgg19-dcbb9e9d.pth', lo.vgg_weights)
  t = c.train
  _check(t.num_steps > 0, 'train.num_steps', 'must be positive', t.num_steps)
  for field in ('log_every', 'checkpoint_every', 'keep_checkpoints', 'max_consecutive_nonfinite'):
    _check(t[field] > 0, f'train.{field}', 'must be positive', t[field])
  _check(0 <= t.ema_decay < 1, 'train.ema_decay', 'must be in [0, 1)', t.ema_decay)
  _check(not c.eval.val or os.path.exists(c.eval.val), 'eval.val', 'no such folder', c.eval.val)
  _check(c.eval.every >= 0, 'eval.every', 'must be >= 0', c.eval.every)
