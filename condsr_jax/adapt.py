"""`condsr-jax adapt`: SR adapted to a user's real LR from unpaired data, DASR-Wei's three stages.

  condsr-jax adapt --hr CLEAN_HR --real-lr REAL_LR --workdir W [--degradation dsn|pdm]

1. `W/degradation`: learn the degradation from clean HR to the real LR: the DSN (`dsn_x4`), or
   PDM-SR's degradation model alone (`pdm_sr_x4` with `pdm.train_sr` False);
2. `W/generated` (DSN only): the DSN's LR of every clean HR image (`lq/`, 8-bit), the HR
   cropped to a multiple of the scale (`gt/`) and the domain-distance map of each LR (`dist/`,
   16-bit grey, LR size): the DSN discriminator's per-pixel probability of "real", spread back
   over the receptive field of each score and averaged where fields overlap, resized to the LR
   (bilinear) as the official SRN loader does. Written to `W/generated.partial`, renamed when
   complete;
3. `W/sr`: `dasr_dd_x4` on the generated pairs and maps, with the GAN on the high frequencies
   of SR(real LR); with PDM, on pairs its learned degradation synthesises on the fly (fresh
   kernels and noise each step, no maps).

`W/model.msgpack` is the SR model (`condsr-jax upscale -m W/model.msgpack`). Rerunning the
command resumes: a finished stage (its `DONE` file) is skipped, an interrupted training resumes
from its checkpoints. `--size smoke|demo` picks the recipes' variants; `--set STAGE.FIELD=VALUE`
(STAGE: degradation or sr) overrides any config field.
"""

import argparse
import ast
import os
import shutil
import sys
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib
from condsr_jax import images, models
from condsr_jax.data import sources
from condsr_jax.nn import dasr_wei

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
DEGRADATIONS = ('dsn', 'pdm')
SIZES = ('full', 'demo', 'smoke')
DONE = 'DONE'


def domain_distance(disc_spec: models.ModelSpec, disc_variables: Any, lr: jax.Array,
                    reference_field: bool = False) -> jax.Array:
  """[B, h, w, C] LR -> [B, h, w, 1] domain-distance map of an `FSDiscriminator`.

  `reference_field` back-projects through the official four 5x5 layers (receptive field 17)
  instead of the network's own three 5x5 and one 1x1 (13).
  """
  if disc_spec.arch != 'FSDiscriminator':
    raise ValueError(f'domain-distance maps come from an FSDiscriminator, not {disc_spec.arch}')
  scores = jax.nn.sigmoid(disc_spec.build().apply(disc_variables, lr))
  conv_layers = dasr_wei.FSD_REFERENCE_LAYERS if reference_field else dasr_wei.FSD_LAYERS
  ddm = dasr_wei.domain_distance_map(scores, conv_layers, scores.shape[1:3])
  return jax.image.resize(ddm, (*lr.shape[:3], 1), 'linear')


def generate_pairs(generator: str, discriminator: str, hr_folder: str, out: str, *,
                   channels: int = 3, reference_field: bool = False) -> int:
  """Stage 2: `out/gt`, `out/lq`, `out/dist` from the DSN model files `generator` (HR -> LR) and
  `discriminator`; written to `out.partial` first. Returns the number of images."""
  g_spec, g_vars, _ = models.load_model_file(generator)
  d_spec, d_vars, _ = models.load_model_file(discriminator)
  scale = int(g_spec.build().scale)
  # Op by op, not jitted: a jitted network would compile again for every image size.
  degrade = g_spec.build().apply
  paths = images.list_images(hr_folder)
  if not paths:
    raise FileNotFoundError(f'{hr_folder}: no images to generate pairs from')
  partial = out + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  for path in paths:
    hr = sources.convert_channels(images.read_image(path), channels)
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    if min(h, w) < 2 * scale:
      raise ValueError(f'{path}: {hr.shape[0]}x{hr.shape[1]} is too small for x{scale}')
    hr = hr[:h, :w]
    lr = degrade(g_vars, jnp.asarray(images.to_float(hr))[None])
    lr8 = images.from_float(np.asarray(lr[0]))  # saved, and mapped, as the SRN will read it
    ddm = domain_distance(d_spec, d_vars, jnp.asarray(images.to_float(lr8))[None],
                          reference_field)
    stem = os.path.splitext(os.path.relpath(path, hr_folder))[0]
    for name, img in (('gt', hr), ('lq', lr8),
                      ('dist', images.from_float(np.asarray(ddm[0]), np.uint16))):
      target = os.path.join(partial, name, stem + '.png')
      os.makedirs(os.path.dirname(target), exist_ok=True)
      images.write_image(target, img)
  shutil.rmtree(out, ignore_errors=True)
  os.replace(partial, out)
  return len(paths)


def load_recipe(name: str, size: str) -> ml_collections.ConfigDict:
  """`configs/NAME.py` at `size` ('full' is the recipe itself)."""
  path = os.path.join(CONFIGS, f'{name}.py')
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f'{path}: the recipe {name} is missing (adapt reads the '
                                 'configs/ folder of the repository)')
  return config_lib.sibling_recipe(path, name).get_config(None if size == 'full' else size)


def apply_overrides(c: ml_collections.ConfigDict, overrides: list[str], stage: str) -> None:
  """`STAGE.a.b=value` items of `overrides` set `c.a.b` (value a Python literal or a string)."""
  for item in overrides:
    key, sep, text = item.partition('=')
    target, _, field = key.partition('.')
    if not sep or not field or target not in ('degradation', 'sr'):
      raise config_lib.ConfigError(f'--set {item!r}: write STAGE.FIELD=VALUE with STAGE '
                                   "'degradation' or 'sr'")
    if target != stage:
      continue
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = field.split('.')
    section = c
    for name in parents:
      section = section[name]
    if leaf not in section:
      raise config_lib.ConfigError(f'--set {item!r}: the {stage} config has no field {field}')
    section[leaf] = value


def stage_configs(args: argparse.Namespace, workdir: str
                  ) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """The degradation stage's and the SR stage's configs for the command's arguments."""
  if args.degradation == 'dsn':
    deg = load_recipe('dsn_x4', args.size)
  else:
    deg = load_recipe('pdm_sr_x4', args.size)
    deg.pdm.train_sr = False
  sr = load_recipe('dasr_dd_x4', args.size)
  for c in (deg, sr):
    c.scale = args.scale
    c.data.channels = args.channels
    c.data.real_lr = args.real_lr
    c.eval.val = args.val
  deg.data.train = args.hr
  if args.lpips_weights:
    for section in ((deg.dsn,) if args.degradation == 'dsn' else ()) + (sr.dasr_dd,):
      section.perceptual, section.lpips_weights = 'lpips_alex', args.lpips_weights
  if args.degradation == 'dsn':
    config_lib.sibling_recipe(os.path.join(CONFIGS, 'dasr_dd_x4.py'), 'dasr_dd_x4').use_generated(
        sr, os.path.join(workdir, 'generated'))
  else:
    from condsr_jax.degrade import pipelines  # pylint: disable=g-import-not-at-top
    gt_size = sr.degradation.gt_size
    sr.degradation = pipelines.default_config('learned', args.scale)
    sr.degradation.gt_size = sr.degradation.crop_pad = gt_size
    sr.degradation.model = os.path.join(workdir, 'degradation', 'degradation.msgpack')
    sr.dasr_dd.domain_distance = False
    sr.data.unpaired_hr = args.hr
    sr.data.train = args.hr
  apply_overrides(deg, args.set, 'degradation')
  apply_overrides(sr, args.set, 'sr')
  return deg, sr


def _train_stage(config: ml_collections.ConfigDict, workdir: str) -> None:
  from condsr_jax import train  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(workdir, DONE)):
    logging.info('%s is done; skipped', workdir)
    return
  summary = train.train_and_evaluate(config, workdir)
  for report in summary.reports:
    print(report)
  open(os.path.join(workdir, DONE), 'w').close()


def run(args: argparse.Namespace) -> str:
  """Runs (or resumes) the chain; returns the path of the SR model file."""
  w = args.workdir
  deg, sr = stage_configs(args, w)
  config_lib.validate(deg)  # the first stage's mistakes before anything runs
  print(f'stage 1/3: the {args.degradation.upper()} degradation in {w}/degradation')
  _train_stage(deg, os.path.join(w, 'degradation'))
  if args.degradation == 'dsn':
    generated = os.path.join(w, 'generated')
    if os.path.isdir(generated):  # complete: it is renamed into place when written
      print(f'stage 2/3: {generated} is done')
    else:
      n = generate_pairs(os.path.join(w, 'degradation', models.MODEL_FILE),
                         os.path.join(w, 'degradation', 'discriminator.msgpack'), args.hr,
                         generated, channels=args.channels,
                         reference_field=args.reference_receptive_field)
      print(f'stage 2/3: {n} generated pairs and domain-distance maps in {generated}')
  else:
    print('stage 2/3: none for PDM (its pairs are synthesised during SR training)')
  print(f'stage 3/3: SR in {w}/sr')
  _train_stage(sr, os.path.join(w, 'sr'))
  model = os.path.join(w, models.MODEL_FILE)
  shutil.copyfile(os.path.join(w, 'sr', models.MODEL_FILE), model)
  return model


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--hr', required=True, help='folder of clean HR images (target domain)')
  parser.add_argument('--real-lr', required=True, help='folder of real LR images (source domain)')
  parser.add_argument('--workdir', required=True, help='where the stages write; rerun to resume')
  parser.add_argument('--degradation', choices=DEGRADATIONS, default='dsn',
                      help='DSN + domain-distance maps (DASR-Wei), or the PDM-SR model')
  parser.add_argument('--size', choices=SIZES, default='full',
                      help="the recipes' size: full, demo (CPU minutes) or smoke (seconds)")
  parser.add_argument('--scale', type=int, default=4, choices=(2, 4))
  parser.add_argument('--channels', type=int, default=3, choices=(1, 3))
  parser.add_argument('--val', default='', help='validation folder (HR, or gt/ + lq/) for SR')
  parser.add_argument('--lpips-weights', default='',
                      help='LPIPS-alex weight files (trunk,linear) for the perceptual terms')
  parser.add_argument('--reference-receptive-field', action='store_true',
                      help='maps over the official receptive field 17, not the network\'s 13')
  parser.add_argument('--set', action='append', default=[], metavar='STAGE.FIELD=VALUE',
                      help='override a config field of stage degradation or sr (repeatable)')


def cli_main(args: argparse.Namespace) -> int:
  from condsr_jax import train  # pylint: disable=g-import-not-at-top
  try:
    model = run(args)
  except (config_lib.ConfigError, train.TrainingStopped) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except train.TrainingInterrupted as e:
    print(f'stopped: {e}; rerun the same command to resume', file=sys.stderr)
    return e.exit_code
  print(f'model file: {model}')
  return 0
