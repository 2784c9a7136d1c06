"""PDM-SR at small scale on a CPU: does a learned degradation distribution train a better SR
network for an unknown "real LR" domain than bicubic pairs or one learned kernel?

  python experiments/pdm_small.py [--deg-steps 1200] [--sr-steps 1000] [--seeds 0 1 2]

x2, from the shipped demo photos, kept apart:
  clean HR (target domain)  the left half of each training photo: the HR side of every pair
  real LR (source domain)   the right half of each training photo cut into 128x128 tiles, each
                            tile degraded by its own draw of the hidden degradation and kept only
                            as LR (unpaired: no pixel of it is in the clean set)
  test (real LR with GT)    the validation photos (chelsea, coffee) in 96x96 tiles, each its
                            own draw
Halves of the same photos give the two domains the same content, as real unpaired sets share
their kind of scenes (NTIRE 2020 Track 1 takes both from one collection). With whole photos in
each domain the LR discriminator told them apart by content and the learned kernel degenerated
(docs/results.md).
The hidden degradation (never shown to a model): anisotropic Gaussian blur, std-devs
U[0.8, 1.6] HR pixels at an angle U[0, pi) on 11x11 taps; s-fold subsampling; Gaussian noise
sigma U[0, 10] on 0..255; 8-bit rounding (`degrade.classic` with these settings).

The SR network (EDSR, 32 features, 4 blocks, L1, the same steps, batch and crops for all) trains
on pairs from the clean HR synthesised by:
  bicubic  MATLAB bicubic downsampling
  kernel   one learned deterministic kernel (a DegModel with kernel_nc 0 and no noise branch)
  pdm      PDM-SR's probabilistic DegModel (a kernel code per image, a noise code per pixel)
  kernel_centred, pdm_centred   the same with `pdm.kernel_centre_weight` (not in the reference):
           the kernels' centre of mass held at the centre tap
  oracle   the hidden degradation sampler itself
The learned variants first learn their DegModel from the real LR alone (`pdm_sr` with
train_sr False: LSGAN against an LR PatchGAN, noise regulariser 100), then the SR network trains
on it as `degradation.kind = 'learned'`, as any recipe can.

Reported: PSNR (RGB, border 2) on the test tiles, mean and by noise level; the width and the
offset (shift) of the sampled kernels and the std of the generated noise against the hidden
distribution's (a histogram figure next to --out).
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
SECTION = '## PDM-SR at small scale (experiments/pdm_small.py)'
SCALE, GT_SIZE, KSIZE = 2, 48, 11
TEST = ('val/chelsea.png', 'val/coffee.png')
REAL_TILE, TEST_TILE = 128, 96
ANISO_RANGE, NOISE_RANGE = (0.8, 1.6), (0.0, 10.0)
VARIANTS = ('bicubic', 'kernel', 'pdm', 'kernel_centred', 'pdm_centred', 'oracle')
LEARNED = ('kernel', 'pdm', 'kernel_centred', 'pdm_centred')
DEG_LR = {'kernel': 1e-2, 'pdm': 1e-3}  # Adam learning rates of the degradation models
CENTRE_WEIGHT = 1.0  # pdm.kernel_centre_weight of the *_centred variants
STAT_DRAWS = 8  # codes drawn per test tile for the learned degradation's statistics
PANEL_TILES = (5, 24)  # test tiles in the picture of crops: chelsea's eye and fur, coffee's table
PANEL_TEXT = "test tiles 5 (chelsea's eye and fur) and 24 (coffee's table and spoon)"


def hidden_degradation():
  """The hidden degradation as a `degrade.classic` config (x2, one draw per image)."""
  from condsr_jax.degrade import classic
  c = classic.default_config(SCALE, 'dasr')
  c.blur, c.kernel_size = 'aniso', KSIZE
  c.aniso_range, c.rotation_range = ANISO_RANGE, (0.0, np.pi)
  c.downsample = 'sfold'
  c.noise_range, c.noise_integer = NOISE_RANGE, False
  c.rounding, c.jpeg_prob = 'round', 0.0
  c.gt_size = c.crop_pad = GT_SIZE
  return c


def degrade_tiles(hr_tiles: list[np.ndarray], seed: int) -> list[tuple[np.ndarray, dict]]:
  """(LR, record) of each tile under its own draw of the hidden degradation."""
  import jax
  import jax.numpy as jnp
  from condsr_jax.degrade import classic
  deg = classic.ClassicDegradation(hidden_degradation(), SCALE)
  sampler = deg.param_sampler(crop=False)
  apply = jax.jit(deg.apply)
  rng = np.random.default_rng(seed)
  out = []
  for i, hr in enumerate(hr_tiles):
    params = {k: np.asarray(v)[None] for k, v in sampler(rng).items()}
    record = deg.record(params, crop=False)
    lq = apply(jnp.asarray(hr)[None, None], record, jax.random.key(seed * 100_003 + i))
    out.append((np.asarray(lq)[0, 0], {k: float(np.asarray(v)[0]) for k, v in params.items()
                                       if k.startswith(('blur/', 'noise/'))}))
  return out


def prepare(root: str) -> dict:
  """Writes the clean-HR folder (left halves) and the real-LR folder (PNG tiles of the right
  halves, degraded) under `root`; returns their paths and the test pairs."""
  from condsr_jax import images
  clean, real, tiles = report_lib.unpaired_demo_domains(root, DEMO, REAL_TILE)
  for i, (lq, _) in enumerate(degrade_tiles(tiles, seed=1)):
    images.write_image(os.path.join(real, f'{i:03d}.png'), images.from_float(lq))
  hr_test = [t for name in TEST
             for t in report_lib.tiles(report_lib.read_rgb(os.path.join(DEMO, name)), TEST_TILE)]
  test = [(lq, hr, record) for hr, (lq, record) in zip(hr_test, degrade_tiles(hr_test, seed=2))]
  return {'clean': clean, 'real': real, 'test': test, 'real_count': len(tiles)}


def degradation_config(variant: str, seed: int, steps: int, data: dict):
  """`pdm_sr` learning only the DegModel of `variant` from the real LR."""
  from condsr_jax import config as config_lib
  c = config_lib.default_config('pdm_sr')
  c.scale, c.seed = SCALE, seed
  c.data.train, c.data.real_lr = data['clean'], data['real']
  c.data.batch_size, c.data.keep_decoded = 16, True
  c.pdm.hr_crop = GT_SIZE
  c.pdm.train_sr = False
  c.degradation_model.kwargs.update(kernel_nf=32, kernel_nb=2, ksize=KSIZE, noise_nf=32,
                                    noise_nb=2, noise_spatial=True)
  model, _, centred = variant.partition('_')
  if model == 'kernel':
    c.degradation_model.kwargs.update(kernel_nc=0, noise=False)
  if centred:
    c.pdm.kernel_centre_weight = CENTRE_WEIGHT
  c.discriminator.kwargs.update(nf=16, nb=2)
  c.model.kwargs.update(num_feat=8, num_block=1)  # built, not trained
  # The single kernel's logits are parameters: at 1e-3 they barely left the near-uniform start
  # in 600 steps (width 3.1 -> 3.2), at 1e-2 they settle; the probabilistic model learns at
  # 1e-3 and at 5e-4-5e-3 behaved alike.
  for optim, lr in ((c.optim.degradation, DEG_LR[model]), (c.optim.discriminator, 1e-3)):
    optim.lr, optim.milestones = lr, (steps // 2, steps * 3 // 4)
  c.train.num_steps = steps
  c.train.log_every = max(steps // 5, 1)
  c.train.checkpoint_every = steps
  c.eval.val = ''
  return c


def sr_config(variant: str, seed: int, steps: int, data: dict, model_file: str = ''):
  """EDSR with L1 on pairs from the clean HR, degraded by `variant`'s source."""
  import ml_collections
  from condsr_jax import config as config_lib
  from condsr_jax.degrade import pipelines
  c = config_lib.default_config('sr')
  c.scale, c.seed = SCALE, seed
  c.model.arch = 'EDSR'
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 32, 'num_block': 4})
  if variant == 'oracle':
    c.degradation = hidden_degradation()
  else:
    c.degradation = pipelines.default_config('bicubic' if variant == 'bicubic' else 'learned',
                                             SCALE)
    c.degradation.gt_size = c.degradation.crop_pad = GT_SIZE
    if variant in LEARNED:
      c.degradation.model = model_file
  c.data.train = data['clean']
  c.data.batch_size, c.data.keep_decoded = 16, True
  c.data.rot90 = c.data.vflip = True
  c.optim.generator.lr, c.optim.generator.milestones = 5e-4, (steps // 2, steps * 3 // 4)
  c.train.num_steps = steps
  c.train.log_every = max(steps // 5, 1)
  c.train.checkpoint_every = steps
  c.train.ema_decay = 0.99  # the exported weights average the last ~100 steps: less seed noise
  c.eval.val = ''
  return c


def kernel_stats(kernel: np.ndarray) -> dict:
  """Width sqrt((sigma_x^2 + sigma_y^2) / 2) and offset (centre of mass from the centre tap,
  a shift between LR and HR) of each kernel [B, k, k], HR pixels; the mean kernel."""
  from condsr_jax.degrade import kernels
  from condsr_jax.methods import pdm
  k = np.asarray(kernel, np.float32)
  return {'kernel_width': np.asarray(pdm.kernel_width(k)),
          'kernel_offset': np.hypot(*(np.asarray(o) for o in kernels.offsets(k))),
          'mean_kernel': k.mean(0)}


def degradation_stats(model_file: str, test: list) -> dict:
  """Kernel widths and noise stds the learned model draws on the clean test tiles."""
  import jax
  import jax.numpy as jnp
  from condsr_jax.degrade import learned
  c = learned.default_config(SCALE)
  c.model, c.gt_size = model_file, TEST_TILE
  c.crop_pad = TEST_TILE
  deg = learned.LearnedDegradation(c, SCALE)
  hr = jnp.asarray(np.stack([t[1] for t in test]))

  @jax.jit
  def draw(key):
    _, record = deg.synthesize(hr, deg.device_draws({'gt': hr}, key))
    return record['kernel'], record['noise/sigma']

  kernel, noise = (np.concatenate(x) for x in zip(*(draw(jax.random.key(i))
                                                     for i in range(STAT_DRAWS))))
  return {**kernel_stats(kernel), 'noise_sigma': noise}


def hidden_stats(draws: int, seed: int = 3) -> dict:
  """The same statistics of the hidden distribution (its noise sigma is the drawn level)."""
  from condsr_jax.degrade import classic
  deg = classic.ClassicDegradation(hidden_degradation(), SCALE)
  sampler, rng = deg.param_sampler(crop=False), np.random.default_rng(seed)
  params = [sampler(rng) for _ in range(draws)]
  batch = {k: np.stack([p[k] for p in params]) for k in params[0]}
  record = deg.record(batch, crop=False)
  return {**kernel_stats(record['kernel']), 'noise_sigma': np.asarray(batch['noise/sigma'])}


def evaluate(model_file: str, test: list) -> dict:
  """PSNR (RGB, border = scale) of each test tile, and the SR of the PANEL_TILES (uint8)."""
  from condsr_jax import inference, metrics, models
  spec, variables, _ = models.load_model_file(model_file)
  upscaler = inference.Upscaler(spec, variables)
  sr = [np.clip(upscaler.upscale_float(lq), 0, 1) for lq, _, _ in test]
  return {'psnr': [metrics.psnr(s * 255, hr * 255, SCALE) for s, (_, hr, _) in zip(sr, test)],
          'panels': [report_lib.to_uint8(sr[i]) for i in PANEL_TILES]}


def run(variant: str, seed: int, args, data: dict) -> dict:
  """Learns `variant`'s degradation (if it learns one), trains SR on it, evaluates (a worker)."""
  report_lib.single_thread()
  from condsr_jax import train
  out = {'variant': variant, 'seed': seed}
  t0 = time.time()
  with tempfile.TemporaryDirectory() as workdir:
    model_file = ''
    if variant in LEARNED:
      deg_dir = os.path.join(workdir, 'degradation')
      train.train_and_evaluate(degradation_config(variant, seed, args.deg_steps, data), deg_dir)
      model_file = os.path.join(deg_dir, 'degradation.msgpack')
      out['deg_seconds'] = time.time() - t0
      out['stats'] = degradation_stats(model_file, data['test'])
    sr_dir = os.path.join(workdir, 'sr')
    t1 = time.time()
    train.train_and_evaluate(sr_config(variant, seed, args.sr_steps, data, model_file), sr_dir)
    out['sr_seconds'] = time.time() - t1
    out.update(evaluate(os.path.join(sr_dir, 'model.msgpack'), data['test']))
  out['seconds'] = time.time() - t0
  print(f'{variant:8s} seed {seed}: PSNR {np.mean(out["psnr"]):.3f} dB '
        f'({out["seconds"]:.0f} s)', flush=True)
  return out


def figure(results: dict, hidden: dict, path: str) -> None:
  """Histograms of the sampled kernel widths and noise stds, hidden vs learned (all seeds), and
  the mean sampled kernel of each source (seed 0)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  learned = [v for v in LEARNED if v in results]
  fig = plt.figure(figsize=(12, 6.6), layout='constrained')
  top, bottom = fig.subfigures(2, 1, height_ratios=(1.2, 1))
  for ax, (key, label) in zip(top.subplots(1, 2), (
      ('kernel_width', 'kernel width sqrt((σx²+σy²)/2), HR px'),
      ('noise_sigma', 'noise std, 0..255'))):
    values = {'hidden (truth)': hidden[key]}
    values.update({f'{v} (learned, {len(results[v])} seeds)':
                   np.concatenate([r['stats'][key] for r in results[v]]) for v in learned})
    lo = min(x.min() for x in values.values())
    hi = max(x.max() for x in values.values())
    bins = np.linspace(lo, hi + 1e-3 * (hi - lo + 1), 40)
    for name, x in values.items():
      ax.hist(x, bins, density=True, alpha=0.5, label=name)
    ax.set_xlabel(label)
    ax.legend(fontsize=8)
  shown = [('hidden', hidden['mean_kernel'])] + [
      (f'{v} seed {results[v][0]["seed"]}', results[v][0]['stats']['mean_kernel'])
      for v in learned]
  for ax, (title, kernel) in zip(np.ravel(bottom.subplots(1, len(shown))), shown):
    ax.imshow(kernel, cmap='magma')
    ax.set_title(f'{title}\nmean kernel', fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(results: dict, hidden: dict, bicubic_up: list, data: dict, args, elapsed: float,
           plot: str, panels: list[str]) -> str:
  ms = report_lib.mean_std
  noise = np.array([t[2]['noise/sigma'] for t in data['test']])
  groups = (('all', np.ones_like(noise, bool)), ('noise < 5', noise < 5), ('noise ≥ 5', noise >= 5))
  per = {v: {g: [float(np.mean(np.array(r['psnr'])[m])) for r in runs] for g, m in groups}
         for v, runs in results.items()}
  lines = [SECTION, '',
           f'Command: `python experiments/pdm_small.py --deg-steps {args.deg_steps} --sr-steps '
           f'{args.sr_steps} --seeds {" ".join(map(str, args.seeds))} --workers {args.workers}` '
           f'({elapsed / 60:.1f} min on this machine, 2-core CPU, {args.workers} single-threaded '
           'workers).', '',
           f'x{SCALE}. Clean HR: the left halves of the 7 demo training photos. Real LR: '
           f'{data["real_count"]} tiles of {REAL_TILE}² HR from their right halves, each under '
           'its own draw of the '
           f'hidden degradation (anisotropic Gaussian std-devs U{list(ANISO_RANGE)} at an angle '
           f'U[0, π) on {KSIZE}x{KSIZE} taps, s-fold subsampling, Gaussian noise σ '
           f'U{list(NOISE_RANGE)} on 0..255, 8-bit rounding), kept as LR only. Test: '
           f'{len(data["test"])} tiles of {TEST_TILE}² from '
           f'{", ".join(os.path.basename(n) for n in TEST)}, each its own draw, with GT. '
           f'SR: EDSR 32 features x 4 blocks, L1, batch 16 of {GT_SIZE}² GT crops, Adam 5e-4 '
           f'halved at 1/2 and 3/4, {args.sr_steps} steps, EMA 0.99 exported, for every variant. '
           f'kernel / pdm: a DegModel ({KSIZE}x{KSIZE} softmax kernel; pdm: kernel code 3, '
           'noise branch 32 x 2 blocks reading the blurred LR and a 3-channel noise code per '
           f'pixel) and a PatchGAN (nf 16, 2 blocks) trained {args.deg_steps} steps first (Adam '
           f'{DEG_LR["kernel"]:g} for the kernel, {DEG_LR["pdm"]:g} for pdm, 1e-3 for the D, '
           'batch 16 HR crops vs 16 real-LR crops, LSGAN, noise regulariser 100; *_centred: '
           f'kernel centring weight {CENTRE_WEIGHT:g}), then frozen. '
           'PSNR RGB, border 2, dB; mean ± std over seeds '
           f'{", ".join(map(str, args.seeds))}.', '']
  if 'bicubic' in per and 'oracle' in per:
    a, d = per['bicubic']['all'], per['oracle']['all']
    gap, std = np.mean(d) - np.mean(a), max(np.std(a), np.std(d))
    verdict = 'separates' if gap > 2 * std else 'does NOT separate'
    lines += [f'**Set-up check**: oracle − bicubic = {gap:+.3f} dB, largest seed std {std:.3f} '
              f'dB: the set-up {verdict} the true degradation from bicubic pairs (criterion: '
              'gap > 2 std).', '']
  lines += ['| SR trained on | ' + ' | '.join(f'PSNR {g}' for g, _ in groups) +
            ' | Δ vs bicubic | degradation s | SR s |', '|---|' + '---|' * (len(groups) + 3)]
  up = np.array(bicubic_up)
  lines.append('| (bicubic upsampling of the test LR) | ' +
               ' | '.join(f'{np.mean(up[m]):.2f}' for _, m in groups) + ' | – | – | – |')
  for v, runs in results.items():
    delta = (ms([x - b for x, b in zip(per[v]['all'], per['bicubic']['all'])])
             if 'bicubic' in per else '–')
    deg_s = ms([r['deg_seconds'] for r in runs], 0) if 'deg_seconds' in runs[0] else '–'
    lines.append(f'| {v} | ' + ' | '.join(ms(per[v][g]) for g, _ in groups) +
                 f' | {delta} | {deg_s} | {ms([r["sr_seconds"] for r in runs], 0)} |')
  lines += ['', 'The sampled degradations against the hidden ones (learned: 8 codes on each clean '
            'test tile; kernel width sqrt((σx²+σy²)/2) in HR pixels from the kernel\'s second '
            'moments, the same measure for the hidden kernels; offset: distance of the kernel\'s '
            'centre of mass from its centre tap, a shift between LR and HR; noise: RMS of the '
            'generated noise map on 0..255 vs the hidden σ):', '',
            '| source | kernel width mean ± std | kernel offset mean | noise std mean ± std |',
            '|---|---|---|---|']
  sources = [('hidden (truth)', hidden)] + [(f'{v} seed {r["seed"]}', r['stats'])
                                            for v in LEARNED for r in results.get(v, [])]
  for name, s in sources:
    lines.append(f'| {name} | {ms([np.mean(s["kernel_width"])], 3)} ± '
                 f'{np.std(s["kernel_width"]):.3f} | {np.mean(s["kernel_offset"]):.3f} | '
                 f'{np.mean(s["noise_sigma"]):.2f} ± {np.std(s["noise_sigma"]):.2f} |')
  lines += ['', f'![Kernel width and noise std: hidden vs learned]({os.path.basename(plot)})', '']
  lines += panels
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--deg-steps', type=int, default=1200)
  parser.add_argument('--sr-steps', type=int, default=1000)
  report_lib.add_run_arguments(parser, 'pdm_small', VARIANTS,
                               os.path.join(REPO, 'docs', 'results.md'))
  args = parser.parse_args()
  if args.panels:
    args.seeds = [min(args.seeds)]
  report_lib.single_thread()
  data = prepare(os.path.join(tempfile.gettempdir(), 'pdm_small_data'))
  # The learned variants take longest: first, so the pool ends together.
  order = sorted(args.variants, key=lambda v: v not in LEARNED)
  jobs = [(v, s) for v in order for s in args.seeds]
  done, t0 = report_lib.run_all(args, run, jobs, args, data)
  results = report_lib.by_variant(done, VARIANTS)
  from condsr_jax import evaluate as evaluate_lib, metrics
  bicubic_up = [metrics.psnr(np.clip(evaluate_lib.bicubic_upsample(lq, SCALE), 0, 1) * 255,
                             hr * 255, SCALE) for lq, hr, _ in data['test']]
  panels = report_lib.panels_path(args, 'pdm_small')
  scores = report_lib.write_panels(
      panels, results, min(args.seeds), [data['test'][i][0] for i in PANEL_TILES],
      [data['test'][i][1] for i in PANEL_TILES], SCALE,
      f'pdm_small, seed {min(args.seeds)}, {args.sr_steps} SR steps; SR (x): trained on x pairs',
      label=lambda v: f'SR ({v})')
  if args.panels:
    print('\n'.join(report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores,
                                            report_lib.rerun_command())))
    return
  hidden = hidden_stats(len(data['test']) * STAT_DRAWS)
  plot = os.path.join(os.path.dirname(args.out), 'pdm_degradations.png')
  if any(v in results for v in LEARNED):
    figure(results, hidden, plot)
  text = report(results, hidden, bicubic_up, data, args, time.time() - t0, plot,
                report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores)
                if scores else [])
  print(text)
  report_lib.write_section(args.out, SECTION, text)


if __name__ == '__main__':
  main()
