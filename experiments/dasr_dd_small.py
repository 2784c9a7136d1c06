"""DASR-Wei at small scale on a CPU: do DSN-generated pairs, domain-distance weighting and the
high-frequency GAN on real LR train a better SR network for an unknown "real LR" domain than
bicubic pairs?

  python experiments/dasr_dd_small.py [--dsn-steps 1000] [--sr-steps 1000] [--seeds 0 1 2]

x2, from the shipped demo photos, kept apart as in experiments/pdm_small.py:
  clean HR (target domain)  the left half of each training photo
  real LR (source domain)   the right halves cut into 128x128 tiles, each degraded by the FSSR
                            corruptions (MATLAB bicubic, Gaussian noise sigma 8 on 0..255, JPEG
                            quality 30, one draw per tile) and kept only as LR (unpaired)
  test (real LR with GT)    the validation photos (chelsea, coffee) in 96x96 tiles, same
                            corruptions, own draws
Stage 1 trains two DSNs per seed on clean HR vs real LR (no perceptual term: no LPIPS weights
here): 'hf' with the frequency-separated discriminator on the Haar detail bands (DASR-Wei's),
'full' with a discriminator on the whole image (the official --no_highpass). Stage 2 writes the
'hf' DSN's LR of the clean HR and its domain-distance maps (`condsr_jax.adapt.generate_pairs`).
Stage 3 trains the same SR network (EDSR 32 x 4, `dasr_dd` losses: L1 + Haar-LL L1, the same
steps, batch and crops) on:
  bicubic      MATLAB bicubic pairs (synthesised on the fly)
  dsn          the DSN's pairs, plain L1
  dsn_ddm      + the pixel L1 weighted by the domain-distance maps
  dsn_ddm_gan  + the GAN (weight 0.005) on the Haar detail bands of SR(real LR) vs clean HR
  oracle       the true corruptions (synthesised on the fly, fresh noise every step)
Reported: PSNR and SSIM (RGB, border 2) on the test tiles; for each DSN, on the clean test HR
tiles, the colour shift |mean Low(fake) - mean Low(bicubic)| (Gaussian 5x5 low-pass), the mean
|fake - bicubic| and the high-frequency std of the generated LR (std of LR - Low(LR)) next to
the real corrupted LR's; the distribution of the domain-distance maps.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'condsr_jax_experiments_xla'))
# pylint: disable=g-import-not-at-top
import numpy as np

import report as report_lib  # experiments/report.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, 'data', 'demo')
SECTION = '## DASR-Wei at small scale (experiments/dasr_dd_small.py)'
SCALE, GT_SIZE, DSN_CROP = 2, 48, 48
TEST = ('val/chelsea.png', 'val/coffee.png')
REAL_TILE, TEST_TILE = 128, 96
NOISE, QUALITY = 8.0, 30
DSN_FILTERS = {'hf': 'wavelet_cat', 'full': 'none'}
VARIANTS = ('bicubic', 'dsn', 'dsn_ddm', 'dsn_ddm_gan', 'oracle')
GENERATED = ('dsn', 'dsn_ddm', 'dsn_ddm_gan')
DSN_LR, SR_LR, GAN_WEIGHT = 5e-4, 5e-4, 0.005
PANEL_TILES = (5, 24)  # test tiles in the picture of crops: chelsea's eye and fur, coffee's table
PANEL_TEXT = "test tiles 5 (chelsea's eye and fur) and 24 (coffee's table and spoon)"


def corruption():
  """The FSSR corruptions as a `degrade.classic` config: no blur (sigma 0.2 HR px, a delta to
  within 4e-6), MATLAB bicubic x2, Gaussian noise sigma 8 on 0..255, JPEG quality 30."""
  from condsr_jax.degrade import classic
  c = classic.default_config(SCALE, 'dasr')
  c.kernel_size, c.sigma_range = 3, (0.2, 0.2)
  c.noise_range, c.noise_integer = (NOISE, NOISE), False
  c.jpeg_prob, c.jpeg_range = 1.0, (QUALITY, QUALITY)
  c.gt_size = c.crop_pad = GT_SIZE
  return c


def corrupt_tiles(hr_tiles: list[np.ndarray], seed: int) -> list[np.ndarray]:
  """Each tile's LR under its own draw of the corruptions."""
  import jax
  import jax.numpy as jnp
  from condsr_jax.degrade import classic
  deg = classic.ClassicDegradation(corruption(), SCALE)
  sampler, apply = deg.param_sampler(crop=False), jax.jit(deg.apply)
  rng = np.random.default_rng(seed)
  out = []
  for i, hr in enumerate(hr_tiles):
    record = deg.record({k: np.asarray(v)[None] for k, v in sampler(rng).items()}, crop=False)
    out.append(np.asarray(apply(jnp.asarray(hr)[None, None], record,
                                jax.random.key(seed * 100_003 + i)))[0, 0])
  return out


def prepare(root: str) -> dict:
  """The clean-HR and real-LR folders under `root` (written afresh) and the test pairs."""
  from condsr_jax import images
  clean, real, tiles = report_lib.unpaired_demo_domains(root, DEMO, REAL_TILE)
  for i, lq in enumerate(corrupt_tiles(tiles, seed=1)):
    images.write_image(os.path.join(real, f'{i:03d}.png'), images.from_float(lq))
  hr_test = [t for name in TEST
             for t in report_lib.tiles(report_lib.read_rgb(os.path.join(DEMO, name)), TEST_TILE)]
  test = [(np.round(lq * 255) / 255, hr) for hr, lq in zip(hr_test, corrupt_tiles(hr_test, 2))]
  return {'root': root, 'clean': clean, 'real': real, 'test': test, 'real_count': len(tiles)}


def dsn_config(filter_kind: str, seed: int, steps: int, data: dict):
  """The DSN (nf 16, 2 blocks) against an FSD (nf 16) with `filter_kind`, colour + texture."""
  from condsr_jax import config as config_lib
  c = config_lib.default_config('dsn')
  c.scale, c.seed = SCALE, seed
  c.data.train, c.data.real_lr = data['clean'], data['real']
  c.data.batch_size, c.data.keep_decoded = 16, True
  c.model.kwargs.update(num_feat=16, num_block=2)
  c.discriminator.kwargs.update(filter=filter_kind, num_feat=16)
  c.dsn.hr_crop = DSN_CROP
  c.dsn.perceptual_weight = 0.0
  c.dsn.collapse_warmup = steps // 2
  for optim in (c.optim.generator, c.optim.discriminator):
    optim.lr, optim.milestones = DSN_LR, (steps * 3 // 4,)
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = steps, max(steps // 5, 1), steps
  c.train.ema_decay = 0.0
  c.eval.val = ''
  return c


def sr_config(variant: str, seed: int, steps: int, data: dict):
  """EDSR 32 x 4 with the `dasr_dd` losses of `variant`."""
  import ml_collections
  from condsr_jax import config as config_lib
  from condsr_jax.degrade import pipelines
  from condsr_jax.methods import common
  c = config_lib.default_config('dasr_dd')
  c.scale, c.seed = SCALE, seed
  c.model.arch = 'EDSR'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'num_block': 4})
  c.discriminator.kwargs.update(num_feat=32)
  c.data.train, c.data.real_lr = data['clean'], data['real']
  if variant == 'oracle':
    c.degradation = corruption()
  elif variant == 'bicubic':
    c.degradation = pipelines.default_config('bicubic', SCALE)
    c.degradation.gt_size = c.degradation.crop_pad = GT_SIZE
  else:
    c.degradation = common.paired_config(GT_SIZE)
    c.data.train = generated_folder(data, seed)
  c.dasr_dd.domain_distance = variant in ('dsn_ddm', 'dsn_ddm_gan')
  c.dasr_dd.gan_weight = GAN_WEIGHT if variant == 'dsn_ddm_gan' else 0.0
  c.dasr_dd.perceptual_weight = 0.0
  c.data.batch_size, c.data.keep_decoded = 16, True
  c.data.rot90 = c.data.vflip = True
  for optim in (c.optim.generator, c.optim.discriminator):
    optim.lr, optim.milestones = SR_LR, (steps // 2, steps * 3 // 4)
  c.train.num_steps, c.train.log_every, c.train.checkpoint_every = steps, max(steps // 5, 1), steps
  c.train.ema_decay = 0.99  # as experiments/pdm_small.py
  c.eval.val = ''
  return c


def generated_folder(data: dict, seed: int) -> str:
  """Where seed `seed`'s generated set lives: beside the data, which `prepare` rewrites, so
  that --resume finds it."""
  return f'{data["root"]}_generated_seed{seed}'


def lr_statistics(model_file: str, test: list) -> dict:
  """The DSN's LR of the clean test HR against their bicubic LR: colour shift, mean |fake -
  bicubic| and high-frequency std, each averaged over the tiles (0..255)."""
  import jax
  import jax.numpy as jnp
  from condsr_jax import models
  from condsr_jax.degrade import frequency, matlab
  spec, variables, _ = models.load_model_file(model_file)
  hr = jnp.asarray(np.stack([t[1] for t in test]))
  fake = jax.jit(spec.build().apply)(variables, hr)
  return {'bicubic': np.asarray(matlab.imresize_matlab(hr, 1 / SCALE)), 'fake': np.asarray(fake),
          **_shift_and_energy(fake, matlab.imresize_matlab(hr, 1 / SCALE), frequency)}


def _shift_and_energy(lr, bic, frequency) -> dict:
  import jax.numpy as jnp
  low = lambda x: frequency.filter_low(x, 'gau', 5, padding=False)  # noqa: E731
  return {'color_shift': 255 * float(jnp.mean(jnp.abs(jnp.mean(low(lr), (1, 2))
                                                      - jnp.mean(low(bic), (1, 2))))),
          'bicubic_distance': 255 * float(jnp.mean(jnp.abs(lr - bic))),
          'hf_std': 255 * float(jnp.mean(jnp.std(lr - frequency.filter_low(lr, 'gau', 5), (1, 2))))}


def real_lr_statistics(test: list) -> dict:
  """The same statistics of the real (corrupted) test LR."""
  import jax.numpy as jnp
  from condsr_jax.degrade import frequency, matlab
  lr = jnp.asarray(np.stack([t[0] for t in test]))
  bic = matlab.imresize_matlab(jnp.asarray(np.stack([t[1] for t in test])), 1 / SCALE)
  return _shift_and_energy(lr, bic, frequency)


def map_statistics(folder: str) -> dict:
  """Mean, std over pixels and the 5th / 95th percentiles of the domain-distance maps."""
  from condsr_jax import images
  maps = np.concatenate([images.to_float(images.read_image(p)).ravel()
                         for p in images.list_images(os.path.join(folder, 'dist'))])
  return {'mean': float(maps.mean()), 'std': float(maps.std()),
          'p5': float(np.percentile(maps, 5)), 'p95': float(np.percentile(maps, 95))}


def evaluate(model_file: str, test: list) -> dict:
  """PSNR and SSIM (RGB, border = scale) of each test tile."""
  from condsr_jax import inference, metrics, models
  spec, variables, _ = models.load_model_file(model_file)
  upscaler = inference.Upscaler(spec, variables)
  sr = [np.clip(upscaler.upscale_float(lq), 0, 1) * 255 for lq, _ in test]
  return {'psnr': [metrics.psnr(s, hr * 255, SCALE) for s, (_, hr) in zip(sr, test)],
          'ssim': [metrics.ssim(s, hr * 255, SCALE) for s, (_, hr) in zip(sr, test)],
          'panels': [report_lib.to_uint8(sr[i] / 255) for i in PANEL_TILES]}


def run_dsn(kind: str, seed: int, args, data: dict) -> dict:
  """Stage 1 (and 2 for 'hf'): a DSN, its LR statistics, the generated set (a worker)."""
  report_lib.single_thread()
  from condsr_jax import adapt, train
  t0 = time.time()
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(dsn_config(DSN_FILTERS[kind], seed, args.dsn_steps, data), workdir)
    out = {'variant': kind, 'seed': seed, 'dsn_seconds': time.time() - t0,
           **lr_statistics(os.path.join(workdir, 'model.msgpack'), data['test'])}
    if kind == 'hf':
      adapt.generate_pairs(os.path.join(workdir, 'model.msgpack'),
                           os.path.join(workdir, 'discriminator.msgpack'), data['clean'],
                           generated_folder(data, seed))
      out['maps'] = map_statistics(generated_folder(data, seed))
  print(f'DSN {kind} seed {seed}: colour shift {out["color_shift"]:.2f}, |fake - bicubic| '
        f'{out["bicubic_distance"]:.2f}, HF std {out["hf_std"]:.2f} '
        f'({out["dsn_seconds"]:.0f} s)', flush=True)
  return out


def run_sr(variant: str, seed: int, args, data: dict) -> dict:
  """Stage 3 of `variant` and its test scores (a worker)."""
  report_lib.single_thread()
  from condsr_jax import train
  t0 = time.time()
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(sr_config(variant, seed, args.sr_steps, data), workdir)
    out = {'variant': variant, 'seed': seed, 'sr_seconds': time.time() - t0,
           **evaluate(os.path.join(workdir, 'model.msgpack'), data['test'])}
  print(f'{variant:12s} seed {seed}: PSNR {np.mean(out["psnr"]):.3f} dB '
        f'({out["sr_seconds"]:.0f} s)', flush=True)
  return out


def figure(dsn_runs: dict, data: dict, path: str) -> None:
  """Seed 0: a clean test HR tile's bicubic LR, the 'hf' and 'full' DSN LR, and the real LR."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  tile = 3
  panels = [('bicubic', dsn_runs['hf'][0]['bicubic'][tile])]
  panels += [(f'DSN {k} (seed {dsn_runs[k][0]["seed"]})', dsn_runs[k][0]['fake'][tile])
             for k in DSN_FILTERS if k in dsn_runs]
  panels.append(('real LR (same tile)', data['test'][tile][0]))
  fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3), layout='constrained')
  for ax, (title, img) in zip(axes, panels):
    ax.imshow(np.clip(img, 0, 1), interpolation='nearest')
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(sr: dict, dsn_runs: dict, real: dict, bicubic_up: dict, data: dict, args,
           elapsed: float, plot: str, panels: list[str]) -> str:
  ms = report_lib.mean_std
  per = {v: {m: [float(np.mean(r[m])) for r in runs] for m in ('psnr', 'ssim')}
         for v, runs in sr.items()}
  seeds = ', '.join(map(str, args.seeds))
  lines = [SECTION, '',
           f'Command: `python experiments/dasr_dd_small.py --dsn-steps {args.dsn_steps} '
           f'--sr-steps {args.sr_steps} --seeds {" ".join(map(str, args.seeds))} --workers '
           f'{args.workers}` ({elapsed / 60:.1f} min on this machine, 2-core CPU, '
           f'{args.workers} single-threaded workers).', '',
           f'x{SCALE}. Clean HR: the left halves of the 7 demo training photos. Real LR: '
           f'{data["real_count"]} tiles of {REAL_TILE}² HR from their right halves under the '
           f'FSSR corruptions (MATLAB bicubic, Gaussian noise σ {NOISE:g} on 0..255, JPEG '
           f'quality {QUALITY}), LR only. Test: {len(data["test"])} tiles of {TEST_TILE}² from '
           f'{", ".join(os.path.basename(n) for n in TEST)} under their own draws, with GT. '
           f'DSN: nf 16, 2 blocks, batch 16 of {DSN_CROP}² HR crops vs 16 real-LR crops, '
           f'colour L1 1 + texture GAN 0.005, no perceptual term (no LPIPS weights offline), '
           f'Adam {DSN_LR:g} (β1 0.5), {args.dsn_steps} steps; D nf 16 on the Haar detail bands '
           "('hf', DASR-Wei) or the whole image ('full'). SR: EDSR 32 features x 4 blocks, L1 "
           f'+ Haar-LL L1, batch 16 of {GT_SIZE}² GT crops, Adam {SR_LR:g} halved at 1/2 and '
           f'3/4, {args.sr_steps} steps, EMA 0.99 exported; dsn_ddm_gan adds the NLayer PatchGAN '
           f'(nf 32, weight {GAN_WEIGHT:g}) on the Haar detail bands of SR(real LR) vs clean HR '
           f'crops. PSNR / SSIM RGB, border 2; mean ± std over seeds {seeds}.', '']
  if 'bicubic' in per and 'oracle' in per:
    a, d = per['bicubic']['psnr'], per['oracle']['psnr']
    gap, std = np.mean(d) - np.mean(a), max(np.std(a), np.std(d))
    verdict = 'separates' if gap > 2 * std else 'does NOT separate'
    lines += [f'**Set-up check**: oracle − bicubic = {gap:+.3f} dB, largest seed std {std:.3f} '
              f'dB: the set-up {verdict} true-degradation pairs from bicubic pairs (criterion: '
              'gap > 2 std).', '']
  lines += ['| SR trained on | PSNR | SSIM | Δ PSNR vs bicubic pairs | SR s |', '|---|---|---|---|---|',
            f'| (bicubic upsampling of the test LR) | {np.mean(bicubic_up["psnr"]):.2f} | '
            f'{np.mean(bicubic_up["ssim"]):.4f} | – | – |']
  for v, runs in sr.items():
    delta = (ms([x - b for x, b in zip(per[v]['psnr'], per['bicubic']['psnr'])])
             if 'bicubic' in per else '–')
    lines.append(f'| {v} | {ms(per[v]["psnr"])} | {ms(per[v]["ssim"], 4)} | {delta} | '
                 f'{ms([r["sr_seconds"] for r in runs], 0)} |')
  lines += ['', 'The generated LR of the clean test HR against their bicubic LR (0..255; colour '
            'shift: |mean of the 5x5 Gaussian low-pass, fake − bicubic| per tile and channel; HF '
            'std: std of LR − its low-pass), and the real corrupted LR of the same tiles:', '',
            '| LR | colour shift | mean abs fake − bicubic | HF std | DSN s |', '|---|---|---|---|---|']
  for kind, runs in dsn_runs.items():
    lines.append(f'| DSN {kind} ({DSN_FILTERS[kind]} D) | '
                 f'{ms([r["color_shift"] for r in runs])} | '
                 f'{ms([r["bicubic_distance"] for r in runs])} | '
                 f'{ms([r["hf_std"] for r in runs])} | '
                 f'{ms([r["dsn_seconds"] for r in runs], 0)} |')
  lines.append(f'| real LR (true corruptions) | {real["color_shift"]:.2f} | '
               f'{real["bicubic_distance"]:.2f} | {real["hf_std"]:.2f} | – |')
  if 'hf' in dsn_runs:
    lines += ['', 'Domain-distance maps of the generated training set (the hf DSN discriminator\'s '
              'probability of "real", back-projected; per seed): ' + '; '.join(
                  f'seed {r["seed"]}: mean {r["maps"]["mean"]:.3f}, std {r["maps"]["std"]:.3f}, '
                  f'5-95% {r["maps"]["p5"]:.3f}-{r["maps"]["p95"]:.3f}' for r in dsn_runs['hf'])
              + '.']
  lines += ['', f'![Bicubic, DSN and real LR of one test tile]({os.path.basename(plot)})', '']
  lines += panels
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dsn-steps', type=int, default=1000)
  parser.add_argument('--sr-steps', type=int, default=1000)
  report_lib.add_run_arguments(parser, 'dasr_dd_small', VARIANTS,
                               os.path.join(REPO, 'docs', 'results.md'))
  args = parser.parse_args()
  if args.panels:
    args.seeds = [min(args.seeds)]
  report_lib.single_thread()
  data = prepare(os.path.join(tempfile.gettempdir(), 'dasr_dd_small_data'))
  dsn_args = argparse.Namespace(**{**vars(args), 'runs': args.runs + '.dsn'})
  dsn_done, t0 = report_lib.run_all(dsn_args, run_dsn,
                                    [(k, s) for s in args.seeds for k in DSN_FILTERS], args, data)
  dsn_elapsed = time.time() - t0
  jobs = [(v, s) for v in sorted(args.variants, key=lambda v: v != 'dsn_ddm_gan')
          for s in args.seeds]
  sr_done, t1 = report_lib.run_all(args, run_sr, jobs, args, data)
  sr, dsn_runs = report_lib.by_variant(sr_done, VARIANTS), report_lib.by_variant(dsn_done,
                                                                                 DSN_FILTERS)
  from condsr_jax import evaluate as evaluate_lib, metrics
  up = [np.clip(evaluate_lib.bicubic_upsample(lq, SCALE), 0, 1) * 255 for lq, _ in data['test']]
  bicubic_up = {'psnr': [metrics.psnr(u, hr * 255, SCALE) for u, (_, hr) in zip(up, data['test'])],
                'ssim': [metrics.ssim(u, hr * 255, SCALE) for u, (_, hr) in zip(up, data['test'])]}
  panels = report_lib.panels_path(args, 'dasr_dd_small')
  scores = report_lib.write_panels(
      panels, sr, min(args.seeds), [data['test'][i][0] for i in PANEL_TILES],
      [data['test'][i][1] for i in PANEL_TILES], SCALE,
      f'dasr_dd_small, seed {min(args.seeds)}, {args.sr_steps} SR steps; '
      'SR (x): trained on x pairs',
      label=lambda v: f'SR ({v})')
  if args.panels:
    print('\n'.join(report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores,
                                            report_lib.rerun_command())))
    return
  plot = os.path.join(os.path.dirname(args.out), 'dasr_dd_lr.png')
  if 'hf' in dsn_runs:
    figure(dsn_runs, data, plot)
  text = report(sr, dsn_runs, real_lr_statistics(data['test']), bicubic_up, data, args,
                dsn_elapsed + time.time() - t1, plot,
                report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores)
                if scores else [])
  print(text)
  report_lib.write_section(args.out, SECTION, text)


if __name__ == '__main__':
  main()
