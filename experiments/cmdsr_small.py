"""CMDSR at small scale on a CPU: does a support-set condition beat a blind BaseNet of equal size?

  python experiments/cmdsr_small.py [--steps 400] [--seeds 0 1 2] [--out docs/results.md]

Trains, at equal steps and with the same modulated SRResNet BaseNet (x2, 32 features, 4 blocks):
  blind           the BaseNet with a constant condition (modulations reduce to learned scales)
  cmdsr           ConditionNet on a support set of n patches + task contrastive loss (CMDSR)
  cmdsr_no_con    the same without the contrastive loss (ConditionNet trained by the SR term)
  oracle          the condition from an MLP of the true (sigma, noise): the upper bound
on CMDSR's classic degradation (isotropic Gaussian blur sigma in [0.2, 2.0], Gaussian noise level
0..25, bicubic x2), then measures PSNR on the held-out demo images over a sigma x noise grid
(the exported generator conditions itself from crops of the test LR, `condition_from_lr`, as
`condsr-jax upscale` does and as CMDSR's test protocol), plus a support-size sweep of
CMDSR (n = 1, 2, 4, 8) and the held-out condition distances d_in / d_cross. Writes a Markdown
section to --out (replacing an earlier one).
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'condsr_jax_experiments_xla'))
# pylint: disable=g-import-not-at-top
from absl import flags
flags.FLAGS.mark_as_parsed()  # grain reads absl flags

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib, images, inference, metrics, methods, models
from condsr_jax import evaluate as evaluate_lib, train, xla_flags
from condsr_jax.degrade import classic, records, sampling, tasks
import report as report_lib  # experiments/report.py

_ms = report_lib.mean_std

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE, PATCH, CROP_PAD, EVAL_HR = 2, 16, 96, 128
SIGMAS = (0.4, 0.8, 1.2, 1.6, 2.0)
NOISES = (0.0, 10.0, 20.0)
VARIANTS = {
    'blind': {'cmdsr.condition': 'none'},
    'cmdsr': {},
    'cmdsr_no_con': {'cmdsr.con_weight': 0.0},
    'oracle': {'cmdsr.condition': 'oracle'},
}
SECTION = '## CMDSR at small scale (experiments/cmdsr_small.py)'
# The picture of crops: (validation photo, SIGMAS index, NOISES index, top, left) of each tile,
# a PANEL_HR square of the EVAL_HR crop (HR pixels).
PANEL_CASES, PANEL_HR = ((0, 4, 0, 0, 0), (1, 2, 1, 32, 32)), 96
PANEL_TEXT = ("two held-out tasks (96x96 HR squares): chelsea's eye and fur at σ 2.0, noise 0 and "
              "coffee's cup rim and spoon at σ 1.2, noise 10")


def make_config(seed: int, steps: int, n: int, overrides: dict) -> ml_collections.ConfigDict:
  c = config_lib.default_config('cmdsr')
  c.scale, c.seed = SCALE, seed
  c.model.arch = 'CMDSRNet'
  c.model.kwargs = ml_collections.ConfigDict(
      {'num_feat': 32, 'num_block': 4, 'support_size': n, 'cond_feat': 32})
  c.degradation = tasks.default_config('classic', SCALE, 'cmdsr')
  c.degradation.sigma_range, c.degradation.noise_range = (0.2, 2.0), (0.0, 25.0)
  c.degradation.tasks.crops = ((PATCH, 2 * n),)
  c.degradation.gt_size, c.degradation.crop_pad = PATCH * SCALE, CROP_PAD
  c.data.train = os.path.join(REPO, 'data', 'demo', 'train')
  c.data.batch_size = 4  # tasks
  for optim in (c.optim.sr, c.optim.condition):
    optim.lr, optim.b2 = 1e-3, 0.999
  c.cmdsr.cond_every = 2  # a ConditionNet step every batch: few steps at this scale
  c.train.num_steps = steps
  c.train.log_every = max(steps // 4, 1)
  c.train.checkpoint_every = steps
  c.train.ema_decay = 0.0
  c.eval.val = ''
  for key, value in overrides.items():
    section, field = key.split('.')
    c[section][field] = value
  return c


def eval_tasks(method) -> list[dict]:
  """Held-out tasks: centre crops of the validation images x the sigma x noise grid."""
  deg = method.degradation.base
  out = []
  for path in images.list_images(os.path.join(REPO, 'data', 'demo', 'val')):
    hr = evaluate_lib.centre_crop(images.to_float(images.to_rgb(images.read_image(path))),
                                  EVAL_HR)
    for i, sigma in enumerate(SIGMAS):
      for j, level in enumerate(NOISES):
        params = records.prefixed('blur', sampling.kernel_params('iso', 15, sigma))
        params.update({'noise/sigma': np.float32(level), 'jpeg/apply': np.bool_(False),
                       'jpeg/quality': np.float32(95)})
        batch = {k: np.asarray(v)[None] for k, v in params.items()}
        record = deg.record(batch, crop=False)
        key = jax.random.key(100 * i + j)
        lq = np.asarray(deg.apply(jnp.asarray(hr)[None, None], record, key))[0, 0]
        out.append({'hr': hr, 'lq': lq, 'sigma': sigma, 'noise': level,
                    'record': {k: v for k, v in record.items() if not k.startswith('kernel')}})
  return out


def panel_crop(img: np.ndarray, case: tuple, scale: int = 1) -> np.ndarray:
  """The PANEL_CASES `case`'s square of an image at 1 / `scale` of the HR size."""
  top, left, size = case[3] // scale, case[4] // scale, PANEL_HR // scale
  return img[top:top + size, left:left + size]


def panel_index(case: tuple) -> int:
  """The held-out task (`eval_tasks` order) of a PANEL_CASES entry."""
  return (case[0] * len(SIGMAS) + case[1]) * len(NOISES) + case[2]


def evaluate(products: dict, n: int, held_out: list[dict], seed: int) -> dict:
  """PSNR per grid cell (RGB, border = scale), held-out condition distances and the SR squares
  of the PANEL_CASES (uint8).

  The generator conditions itself from its input (`Upscaler`, as `condsr-jax upscale`); an
  'oracle' product conditions it from the task's true degradation instead. d_in / d_cross
  compare the conditions of two random support sets of n crops of each task's LR.
  """
  spec, variables = products['generator']
  upscaler = inference.Upscaler(spec, variables)
  net, rng = upscaler.module, np.random.default_rng(seed)
  psnr, conds, panels = {}, [], {}
  for k, t in enumerate(held_out):
    if 'oracle' in products:
      o_spec, o_vars = products['oracle']
      cond = o_spec.build().apply(o_vars, classic.oracle_features(t['record']))
      sr = np.asarray(net.apply(variables, jnp.asarray(t['lq'])[None], cond,
                                method='upscale'))[0]
      conds.append(np.concatenate([cond, cond]))
    else:
      sr = upscaler.upscale_float(t['lq'])
      h, w = t['lq'].shape[:2]
      tops, lefts = rng.integers(0, h - PATCH + 1, (2, n)), rng.integers(0, w - PATCH + 1, (2, n))
      sets = np.stack([np.stack([t['lq'][y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs)])
                       for ys, xs in zip(tops, lefts)])
      conds.append(np.asarray(net.apply(variables, jnp.asarray(sets),
                                        method='condition_from_support')))
    psnr.setdefault((t['sigma'], t['noise']), []).append(
        metrics.psnr(np.clip(sr, 0, 1) * 255, t['hr'] * 255, SCALE))
    for case in PANEL_CASES:
      if panel_index(case) == k:
        panels[case] = report_lib.to_uint8(panel_crop(np.asarray(sr), case))
  c = np.stack(conds)  # [tasks, 2, D]: two support sets of each held-out task
  d_in = np.mean(np.abs(c[:, 0] - c[:, 1]))
  d_cross = np.mean(np.abs(c[:, 0] - np.roll(c[:, 1], 1, axis=0)))
  return {'cells': {k: float(np.mean(v)) for k, v in psnr.items()}, 'd_in': float(d_in),
          'd_cross': float(d_cross), 'panels': [panels[case] for case in PANEL_CASES]}


def run(variant: str, seed: int, steps: int, n: int, held_out_cache: dict) -> dict:
  config = make_config(seed, steps, n, VARIANTS[variant])
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.time()
    train.train_and_evaluate(config, workdir)
    products = {}
    for name in ('generator', 'oracle'):
      path = os.path.join(workdir, 'model.msgpack' if name == 'generator' else f'{name}.msgpack')
      if os.path.exists(path):
        products[name] = models.load_model_file(path)[:2]
  if n not in held_out_cache:
    held_out_cache[n] = eval_tasks(methods.build(config))
  result = evaluate(products, n, held_out_cache[n], seed)
  result['seconds'] = time.time() - t0
  result.update(variant=variant, seed=seed)
  mean = np.mean(list(result['cells'].values()))
  print(f'{variant:13s} n={n} seed={seed}: mean PSNR {mean:.3f} dB  d_in {result["d_in"]:.4f} '
        f'd_cross {result["d_cross"]:.4f}  ({result["seconds"]:.0f} s)', flush=True)
  return result


def bicubic_cells(held_out: list[dict]) -> dict:
  cells = {}
  for t in held_out:
    up = evaluate_lib.bicubic_upsample(t['lq'], SCALE)
    cells.setdefault((t['sigma'], t['noise']), []).append(
        metrics.psnr(np.clip(up, 0, 1) * 255, t['hr'] * 255, SCALE))
  return {k: float(np.mean(v)) for k, v in cells.items()}


def report(results: dict, sweep: dict, bicubic: dict, args, elapsed: float,
           panels: list[str]) -> str:
  seeds = args.seeds
  lines = [SECTION, '',
           f'Command: `python experiments/cmdsr_small.py --steps {args.steps} --seeds '
           f'{" ".join(map(str, seeds))}` ({elapsed / 60:.1f} min on this machine, '
           f'{jax.devices()[0].device_kind}).', '',
           f'x{SCALE}, modulated SRResNet BaseNet (32 features, 4 blocks) for every variant, '
           f'{args.steps} batches of 4 tasks x 2n patches ({PATCH}x{PATCH} LR), support n = 4, '
           'CMDSR\'s classic degradation (isotropic blur sigma 0.2-2.0, noise 0-25, bicubic). '
           'Held-out: centre 128x128 crops of the two demo validation images; support = crops '
           'of the test LR itself. PSNR (RGB, border 2) in dB, mean ± std over seeds '
           f'{", ".join(map(str, seeds))}.', '']
  header = '| variant | mean | ' + ' | '.join(f'σ{s:g}/n{n:g}' for s in SIGMAS for n in NOISES)
  lines += [header + ' |', '|' + '---|' * (2 + len(SIGMAS) * len(NOISES))]
  cells = [(s, n) for s in SIGMAS for n in NOISES]
  lines.append('| bicubic | ' + f'{np.mean(list(bicubic.values())):.2f} | ' +
               ' | '.join(f'{bicubic[c]:.2f}' for c in cells) + ' |')
  means = {}
  for variant, runs in results.items():
    per_seed = [np.mean(list(r['cells'].values())) for r in runs]
    means[variant] = np.mean(per_seed)
    lines.append(f'| {variant} | {_ms(per_seed)} | ' + ' | '.join(
        f'{np.mean([r["cells"][c] for r in runs]):.2f}' for c in cells) + ' |')
  lines += ['', '| variant | held-out d_in | held-out d_cross | seconds (train + evaluation) |',
            '|---|---|---|---|']
  for variant, runs in results.items():
    d_in, d_cross = _ms([r['d_in'] for r in runs], 4), _ms([r['d_cross'] for r in runs], 4)
    lines.append(f'| {variant} | {d_in} | {d_cross} | {_ms([r["seconds"] for r in runs], 0)} |')
  gap = means['oracle'] - means['blind']
  closure = (f'{(means["cmdsr"] - means["blind"]) / gap:.2f}' if gap > 0 else
             'undefined: the oracle does not beat the blind BaseNet')
  lines += ['', f'Gap closure (cmdsr − blind) / (oracle − blind): {closure} '
            f'(blind {means["blind"]:.2f}, cmdsr {means["cmdsr"]:.2f}, oracle '
            f'{means["oracle"]:.2f} dB).', '', 'Support-size sweep (CMDSR, same steps):', '',
            '| n | mean PSNR | d_in | d_cross |', '|---|---|---|---|']
  for n, runs in sweep.items():
    lines.append(f'| {n} | {_ms([np.mean(list(r["cells"].values())) for r in runs])} | '
                 f'{_ms([r["d_in"] for r in runs], 4)} | {_ms([r["d_cross"] for r in runs], 4)} |')
  lines += [''] + panels[:-1] if panels else []
  return '\n'.join(lines) + '\n'


def main():
  xla_flags.tune_xla_cpu()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--sweep', type=int, nargs='*', default=[1, 2, 4, 8])
  parser.add_argument('--sweep-seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--out', default=os.path.join(REPO, 'docs', 'results.md'))
  report_lib.add_panels_argument(parser, 'cmdsr_small')
  args = parser.parse_args()
  if args.panels:
    args.seeds = [min(args.seeds)]
  t0, cache = time.time(), {}
  results = {v: [run(v, s, args.steps, 4, cache) for s in args.seeds] for v in VARIANTS}
  panels = report_lib.panels_path(args, 'cmdsr_small')
  scores = report_lib.write_panels(
      panels, results, min(args.seeds),
      [panel_crop(cache[4][panel_index(c)]['lq'], c, SCALE) for c in PANEL_CASES],
      [panel_crop(cache[4][panel_index(c)]['hr'], c) for c in PANEL_CASES], SCALE,
      f'cmdsr_small, seed {min(args.seeds)}, {args.steps} steps, support n = 4',
      psnr=lambda r: float(np.mean(list(r['cells'].values()))))
  if args.panels:
    print('\n'.join(report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores,
                                            report_lib.rerun_command())))
    return
  done = dict(zip(args.seeds, results['cmdsr']))  # n = 4 runs of the main table
  sweep = {n: [done[s] if n == 4 and s in done else run('cmdsr', s, args.steps, n, cache)
               for s in args.sweep_seeds] for n in args.sweep}
  text = report(results, sweep, bicubic_cells(cache[4]), args, time.time() - t0,
                report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores)
                if scores else [])
  print(text)
  report_lib.write_section(args.out, SECTION, text)


if __name__ == '__main__':
  main()
