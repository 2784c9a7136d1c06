"""DASR and CMDSR at small scale on a CPU: do learned degradation representations help, and how
good are they?

  python experiments/dasr_small.py [--sr-steps 1000] [--seeds 0 1 2] [--workers 2]

Every run is x2 on the demo training photos, with one classic degradation per task (isotropic
Gaussian blur sigma in [0.2, 3.0], MATLAB bicubic, Gaussian noise 0..20, rounding), the same
number of SR steps and the same batch. DASR runs (`configs/dasr_x4.py` variants at this size):
  blind         the DA network with one learned representation for every image
  oracle        the representation from an MLP of the true (sigma, noise): the upper bound
  dasr          MoCo encoder (stage 1: encoder only, then SR + InfoNCE)
  no_contrast   the same encoder trained by the SR loss alone (the paper's "Model 1")
  centroid, multicrop, cross_image, momentum995, byol, local_fusion, large_encoder: seed 004
and CMDSR with its modulated SRResNet of about the same size: cmdsr_blind, cmdsr, cmdsr_oracle.
Contrastive variants train their encoder alone for a quarter of the SR steps first, on top.

Measured on held-out photos (the demo validation images): PSNR (RGB, border 2) on a grid of
sigma x noise; a linear probe (ridge) of sigma and of noise from each model's representation,
fitted on the training photos and scored (R^2) on the held-out ones; a PCA plot of the
representations coloured by sigma. Writes a section of --out and the plot next to it.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'condsr_jax_experiments_xla'))
# pylint: disable=g-import-not-at-top
import numpy as np

import report as report_lib  # experiments/report.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = '## DASR and CMDSR at small scale (experiments/dasr_small.py)'
SCALE, PATCH, CROP_PAD, EVAL_HR, PROBE_HR = 2, 16, 64, 192, 96
SIGMA_RANGE, NOISE_RANGE = (0.2, 3.0), (0.0, 20.0)
SIGMAS, NOISES = (0.4, 1.2, 2.0, 2.8), (0.0, 10.0, 20.0)
PROBE_SIGMAS, PROBE_NOISES = tuple(np.linspace(0.2, 3.0, 8)), (0.0, 10.0, 20.0)
PROBE_CROPS = 3  # the centre and two corners of every photo
DASR_VARIANTS = ('blind', 'oracle', 'dasr', 'no_contrast', 'centroid', 'multicrop',
                 'cross_image', 'momentum995', 'byol', 'local_fusion', 'large_encoder')
CMDSR_VARIANTS = ('cmdsr_blind', 'cmdsr', 'cmdsr_oracle')
# The picture of crops: (validation photo, SIGMAS index, NOISES index, top, left) of each tile,
# a PANEL_HR square of the EVAL_HR crop (HR pixels).
PANEL_CASES, PANEL_HR = ((0, 3, 0, 32, 16), (1, 1, 1, 96, 96)), 96
PANEL_TEXT = ("two test cases (96x96 HR squares): chelsea's eye and fur at σ 2.8, noise 0 and "
              "coffee's saucer and spoon at σ 1.2, noise 10")


def _degradation(config) -> None:
  from condsr_jax.degrade import tasks
  g = tasks.default_config('classic', SCALE, 'dasr')
  g.sigma_range, g.noise_range = SIGMA_RANGE, NOISE_RANGE
  g.crop_pad = CROP_PAD
  config.degradation = g


def make_config(variant: str, seed: int, sr_steps: int):
  import ml_collections
  from condsr_jax import config as config_lib
  from condsr_jax.nn import layers
  if variant.startswith('cmdsr'):
    c = config_lib.default_config('cmdsr')
    # The reference BaseNet learns the image level on 0..255 from its biases: after 1000 SR
    # steps it stayed 4-5 dB below bicubic at lr 5e-4 and 1e-3. With the mean shift option and
    # its equalised-LR convs stepped at 3e-2 (their stored weights are N(0, 1)) it trains; the
    # ConditionNet and oracle MLP, initialised as usual, collapse the SR net above ~1e-3.
    c.model.kwargs = ml_collections.ConfigDict(
        {'num_feat': 16, 'num_block': 4, 'support_size': 2, 'cond_feat': 16,
         'rgb_mean': layers.DIV2K_MEAN})
    _degradation(c)
    c.degradation.tasks = ml_collections.ConfigDict(
        {'crops': ((PATCH, 4),), 'patches_per_image': 4, 'different_images': False})
    c.degradation.gt_size = PATCH * SCALE
    for optim, lr in ((c.optim.sr, 3e-2), (c.optim.condition, 1e-3)):
      optim.lr, optim.milestones = lr, (sr_steps // 2, sr_steps * 3 // 4)
    c.cmdsr.cond_every = 2
    c.cmdsr.condition = {'cmdsr_blind': 'none', 'cmdsr_oracle': 'oracle'}.get(variant, 'support')
    c.train.num_steps = sr_steps // 2  # CMDSR takes one SR step per half of each batch
  else:
    recipe = config_lib.sibling_recipe(os.path.join(REPO, 'configs', 'dasr_x4.py'), 'dasr_x4')
    c = config_lib.default_config('dasr')
    c.model.kwargs.update(num_feat=16, num_group=2, num_block=2, reduction=4, rep_dim=16,
                          enc_widths=(16, 16, 32, 32, 64, 64), mlp_dim=64)
    _degradation(c)
    c.degradation.tasks.crops = ((PATCH, 2),)
    c.degradation.gt_size = PATCH * SCALE
    c.dasr.queue_size = 512
    stage1 = sr_steps // 4
    c.dasr.encoder_steps = stage1
    c.optim.encoder.milestones = (stage1 * 3 // 5,)
    c.optim.sr.lr, c.optim.sr.milestones = 5e-4, (sr_steps // 2, sr_steps * 3 // 4)
    recipe.apply_variant(c, '' if variant == 'dasr' else variant)
    contrastive = c.dasr.condition == 'encoder' and c.dasr.objective != 'none'
    c.train.num_steps = sr_steps + (stage1 if contrastive else 0)
  c.scale, c.seed = SCALE, seed
  c.data.train = os.path.join(REPO, 'data', 'demo', 'train')
  c.data.keep_decoded = True
  # 8 SR samples per SR step: DASR's 8 tasks x its query patch; CMDSR's 4 tasks x one half
  c.data.batch_size = 4 if variant.startswith('cmdsr') else 8
  c.train.log_every = max(c.train.num_steps // 4, 1)
  c.train.checkpoint_every = c.train.num_steps
  c.train.ema_decay = 0.99  # the exported weights average the last ~100 steps: less seed noise
  c.eval.val = ''
  return c


def _crop(path: str, size: int, index: int = 0) -> np.ndarray:
  """A size x size crop of an image: the centre (index 0) or one of the four quadrants."""
  from condsr_jax import images
  img = images.to_float(images.to_rgb(images.read_image(path)))
  h, w = img.shape[:2]
  tops = (h // 2 - size // 2, 0, 0, h - size, h - size)
  lefts = (w // 2 - size // 2, 0, w - size, 0, w - size)
  return img[tops[index]:tops[index] + size, lefts[index]:lefts[index] + size]


_DEGRADED: dict = {}  # every variant degrades alike: each worker degrades each case once


def degrade(method, hr: np.ndarray, sigma: float, level: float, seed: int, name: str = ''):
  """(LR, the degradation record) of one HR crop under a fixed sigma and noise level; `name`
  (the crop's) keeps the result for the next model."""
  if name and (name, sigma, level, seed) in _DEGRADED:
    return _DEGRADED[name, sigma, level, seed]
  import jax
  import jax.numpy as jnp
  from condsr_jax.degrade import records, sampling
  deg = method.degradation.base
  params = records.prefixed('blur', sampling.kernel_params('iso', deg.config.kernel_size, sigma))
  params.update({'noise/sigma': np.float32(level), 'jpeg/apply': np.bool_(False),
                 'jpeg/quality': np.float32(95)})
  record = deg.record({k: np.asarray(v)[None] for k, v in params.items()}, crop=False)
  if 'apply' not in _DEGRADED:
    _DEGRADED['apply'] = jax.jit(deg.apply)
  lq = _DEGRADED['apply'](jnp.asarray(hr)[None, None], record, jax.random.key(seed))
  out = np.asarray(lq)[0, 0], {k: v for k, v in record.items() if not k.startswith('kernel')}
  if name:
    _DEGRADED[name, sigma, level, seed] = out
  return out


def panel_crop(img: np.ndarray, case: tuple, scale: int = 1) -> np.ndarray:
  """The PANEL_CASES `case`'s square of an image at 1 / `scale` of the HR size."""
  top, left, size = case[3] // scale, case[4] // scale, PANEL_HR // scale
  return img[top:top + size, left:left + size]


def panel_inputs(method) -> tuple[list, list]:
  """(LR, HR) squares of the PANEL_CASES, as `evaluate` degrades them."""
  from condsr_jax import images
  val = images.list_images(os.path.join(REPO, 'data', 'demo', 'val'))
  lr, hr = [], []
  for case in PANEL_CASES:
    p, i, j = case[:3]
    full = _crop(val[p], EVAL_HR)
    lq, _ = degrade(method, full, SIGMAS[i], NOISES[j], 1000 * p + 10 * i + j)
    lr.append(panel_crop(lq, case, SCALE))
    hr.append(panel_crop(full, case))
  return lr, hr


def evaluate(method, products: dict) -> dict:
  """PSNR per grid cell on the held-out photos, representations for the probes, and the SR
  squares of the PANEL_CASES (uint8)."""
  import jax
  import jax.numpy as jnp
  from condsr_jax import images, inference, metrics
  from condsr_jax.degrade import classic
  spec, variables = products['generator']
  upscaler = inference.Upscaler(spec, variables)
  net = upscaler.module
  val = images.list_images(os.path.join(REPO, 'data', 'demo', 'val'))
  cells, panels = {}, {}
  for p, path in enumerate(val):
    hr = _crop(path, EVAL_HR)
    for i, sigma in enumerate(SIGMAS):
      for j, level in enumerate(NOISES):
        lq, record = degrade(method, hr, sigma, level, 1000 * p + 10 * i + j, path)
        if 'oracle' in products:
          o_spec, o_vars = products['oracle']
          cond = o_spec.build().apply(o_vars, classic.oracle_features(record))
          sr = np.asarray(net.apply(variables, jnp.asarray(lq)[None], cond, method='upscale'))[0]
        else:
          sr = upscaler.upscale_float(lq)
        cells.setdefault((sigma, level), []).append(
            metrics.psnr(np.clip(sr, 0, 1) * 255, hr * 255, SCALE))
        for case in PANEL_CASES:
          if case[:3] == (p, i, j):
            panels[case] = report_lib.to_uint8(panel_crop(np.asarray(sr), case))
  out = {'cells': {k: float(np.mean(v)) for k, v in cells.items()},
         'panels': [panels[case] for case in PANEL_CASES]}
  blind = spec.kwargs.get('blind', False)
  if not blind:  # the representation the network computes from an LR image
    condition = jax.jit(lambda lq: net.apply(variables, lq[None], method='condition_from_lr')[0])
    probe = {'train': [], 'val': []}
    train_images = images.list_images(os.path.join(REPO, 'data', 'demo', 'train'))
    for split, paths in (('train', train_images), ('val', val)):
      for p, path in enumerate(paths):
        for crop in range(PROBE_CROPS):
          hr = _crop(path, PROBE_HR, crop)
          for i, sigma in enumerate(PROBE_SIGMAS):
            for j, level in enumerate(PROBE_NOISES):
              lq, _ = degrade(method, hr, sigma, level, 100 * crop + 10 * i + j,
                              f'{path}#{crop}')
              probe[split].append((float(sigma), float(level), np.asarray(condition(lq))))
    out['probe'] = probe
  return out


def run(variant: str, seed: int, sr_steps: int) -> dict:
  """Trains one variant with one seed and evaluates its exports (in a worker process)."""
  report_lib.single_thread()
  from condsr_jax import methods, models, train
  config = make_config(variant, seed, sr_steps)
  t0 = time.time()
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    con_acc = np.nan
    if config.method == 'dasr' and config.dasr.objective == 'infonce' and (
        config.dasr.condition == 'encoder'):
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        logged = [json.loads(line) for line in f]
      con_acc = [m['train/con_acc'] for m in logged if 'train/con_acc' in m][-1]
    products = {}
    for name, file in (('generator', 'model.msgpack'), ('oracle', 'oracle.msgpack')):
      if os.path.exists(os.path.join(workdir, file)):
        products[name] = models.load_model_file(os.path.join(workdir, file))[:2]
  train_seconds = time.time() - t0
  result = evaluate(methods.build(config), products)
  result.update(variant=variant, seed=seed, seconds=time.time() - t0, train_seconds=train_seconds,
                steps=config.train.num_steps,
                con_acc=float(con_acc),
                params=int(sum(np.size(x) for x in _leaves(products['generator'][1]['params']))))
  mean = np.mean(list(result['cells'].values()))
  print(f'{variant:14s} seed {seed}: mean PSNR {mean:.3f} dB ({result["seconds"]:.0f} s)',
        flush=True)
  return result


def _leaves(tree) -> list:
  import jax
  return jax.tree.leaves(tree)


def r2_scores(probe: dict) -> tuple[float, float]:
  """R^2 on held-out photos of ridge regressions of sigma and noise on the representation."""
  def arrays(split):
    rows = probe[split]
    return np.stack([r[2] for r in rows]), np.array([[r[0], r[1]] for r in rows])
  x_tr, y_tr = arrays('train')
  x_te, y_te = arrays('val')
  mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
  a_tr = np.c_[(x_tr - mu) / sd, np.ones(len(x_tr))]
  a_te = np.c_[(x_te - mu) / sd, np.ones(len(x_te))]
  reg = 1e-2 * len(x_tr) * np.eye(a_tr.shape[1])
  reg[-1, -1] = 0
  w = np.linalg.solve(a_tr.T @ a_tr + reg, a_tr.T @ y_tr)
  pred = a_te @ w
  r2 = 1 - ((pred - y_te) ** 2).sum(0) / ((y_te - y_te.mean(0)) ** 2).sum(0)
  return float(r2[0]), float(r2[1])


def pca_plot(results: dict, path: str) -> None:
  """2-D PCA of each representation (seed 0, every photo), coloured by sigma."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  shown = [(v, runs[0]) for v, runs in results.items() if 'probe' in runs[0]]
  cols = 4
  rows = -(-len(shown) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
  for ax, (variant, r) in zip(axes.flat, shown):
    pts = r['probe']['train'] + r['probe']['val']
    x = np.stack([p[2] for p in pts])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:2].T
    sigma, noise = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    for level, marker in zip(PROBE_NOISES, ('o', '^', 's')):
      m = noise == level
      sc = ax.scatter(z[m, 0], z[m, 1], c=sigma[m], cmap='viridis', s=6, marker=marker,
                      vmin=SIGMA_RANGE[0], vmax=SIGMA_RANGE[1], label=f'noise {level:g}')
    ax.set_title(variant, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in list(axes.flat)[len(shown):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=6, loc='best')
  fig.colorbar(sc, ax=axes, label='blur sigma', shrink=0.6)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(results: dict, bicubic: dict, args, elapsed: float, plot: str,
           panels: list[str]) -> str:
  ms = report_lib.mean_std
  cells = [(s, n) for s in SIGMAS for n in NOISES]
  means = {v: [float(np.mean([r['cells'][c] for c in cells])) for r in runs]
           for v, runs in results.items()}
  lines = [SECTION, '',
           f'Command: `python experiments/dasr_small.py --sr-steps {args.sr_steps} --seeds '
           f'{" ".join(map(str, args.seeds))} --workers {args.workers}` ({elapsed / 60:.1f} min '
           f'on this machine, 2-core CPU, {args.workers} single-threaded workers).', '',
           f'x{SCALE}; every run {args.sr_steps} SR steps of 8 tasks (HR images, each with its own '
           f'degradation: isotropic blur sigma {SIGMA_RANGE[0]}-{SIGMA_RANGE[1]} on a 21x21 '
           f'kernel, MATLAB bicubic, Gaussian noise {NOISE_RANGE[0]:g}-{NOISE_RANGE[1]:g} on '
           f'0..255); DASR patches {PATCH}x{PATCH} LR, 2 per task (6 for centroid / multicrop); '
           'contrastive variants train their encoder alone for a further quarter of the SR '
           'steps first. DA network: 16 features, 2 groups x 2 blocks; encoder 16-64 wide '
           '(large_encoder: twice); CMDSR: modulated SRResNet, 16 features, 4 blocks, 4 tasks '
           f'per batch, support n = 2 of {PATCH}x{PATCH} (8 SR samples per SR step, as DASR), '
           'with the DIV2K mean shift option. Adam, SR lr 5e-4 (CMDSR: 3e-2 for its '
           'equalised-LR BaseNet, 1e-3 for its ConditionNet / oracle MLP) halved at 1/2 and 3/4 '
           'of the SR steps, EMA 0.99 exported. '
           f'Held-out: centre {EVAL_HR}x{EVAL_HR} crops of the demo validation photos, '
           'conditioned from the whole test LR (`condsr-jax upscale`\'s path); PSNR RGB, border '
           f'{SCALE}, dB; mean ± std over seeds {", ".join(map(str, args.seeds))}.', '']
  for blind, oracle in (('blind', 'oracle'), ('cmdsr_blind', 'cmdsr_oracle')):
    if blind in means and oracle in means:
      gap = np.mean(means[oracle]) - np.mean(means[blind])
      std = max(np.std(means[oracle]), np.std(means[blind]))
      verdict = 'separates' if gap > 2 * std else 'does NOT separate'
      lines += [f'**Set-up check**: {oracle} − {blind} = {gap:+.3f} dB, largest seed std '
                f'{std:.3f} dB: the set-up {verdict} an informed network from a blind one '
                '(criterion: gap > 2 std).', '']
  header = '| variant | params | mean | ' + ' | '.join(f'σ{s:g}/n{n:g}' for s, n in cells)
  lines += [header + ' |', '|' + '---|' * (3 + len(cells))]
  lines.append('| bicubic | – | ' + f'{np.mean(list(bicubic.values())):.2f} | ' +
               ' | '.join(f'{bicubic[c]:.2f}' for c in cells) + ' |')
  for variant, runs in results.items():
    lines.append(f'| {variant} | {runs[0]["params"] / 1e3:.0f}k | {ms(means[variant])} | ' +
                 ' | '.join(f'{np.mean([r["cells"][c] for r in runs]):.2f}' for c in cells) + ' |')
  lines += ['', 'Representation quality on the held-out photos (linear probe R², mean ± std '
            'over seeds) and training cost:', '',
            '| variant | R² sigma | R² noise | Δ vs blind (dB) | final InfoNCE top-1 | steps | '
            'seconds |', '|---|---|---|---|---|---|---|']
  for variant, runs in results.items():
    base = 'cmdsr_blind' if variant.startswith('cmdsr') else 'blind'
    delta = ms([m - b for m, b in zip(means[variant], means[base])]) if base in means else '–'
    r2 = [r2_scores(r['probe']) for r in runs if 'probe' in r]
    r2s = (ms([x[0] for x in r2]), ms([x[1] for x in r2])) if r2 else ('–', '–')
    acc = [r['con_acc'] for r in runs if np.isfinite(r['con_acc'])]
    lines.append(f'| {variant} | {r2s[0]} | {r2s[1]} | {delta} | '
                 f'{ms(acc) if acc else "–"} | {runs[0]["steps"]} | '
                 f'{ms([r["train_seconds"] for r in runs], 0)} |')
  lines += ['', f'![PCA of the representations, coloured by blur sigma]({os.path.basename(plot)})',
            '']
  lines += panels
  return '\n'.join(lines) + '\n'


def bicubic_cells(method) -> dict:
  from condsr_jax import evaluate as evaluate_lib, images, metrics
  cells = {}
  for p, path in enumerate(images.list_images(os.path.join(REPO, 'data', 'demo', 'val'))):
    hr = _crop(path, EVAL_HR)
    for i, sigma in enumerate(SIGMAS):
      for j, level in enumerate(NOISES):
        lq, _ = degrade(method, hr, sigma, level, 1000 * p + 10 * i + j)
        up = evaluate_lib.bicubic_upsample(lq, SCALE)
        cells.setdefault((sigma, level), []).append(
            metrics.psnr(np.clip(up, 0, 1) * 255, hr * 255, SCALE))
  return {k: float(np.mean(v)) for k, v in cells.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sr-steps', type=int, default=1000)
  report_lib.add_run_arguments(parser, 'dasr_small', DASR_VARIANTS + CMDSR_VARIANTS,
                               os.path.join(REPO, 'docs', 'results.md'))
  args = parser.parse_args()
  if args.panels:
    args.seeds = [min(args.seeds)]
  jobs = [(v, s) for s in args.seeds for v in args.variants]
  done, t0 = report_lib.run_all(args, run, jobs, args.sr_steps)
  results = report_lib.by_variant(done, args.variants)
  report_lib.single_thread()
  from condsr_jax import methods
  method = methods.build(make_config('blind', 0, args.sr_steps))
  bicubic = bicubic_cells(method)
  panels = report_lib.panels_path(args, 'dasr_small')
  scores = report_lib.write_panels(
      panels, results, min(args.seeds), *panel_inputs(method), SCALE,
      f'dasr_small, seed {min(args.seeds)}, {args.sr_steps} SR steps',
      psnr=lambda r: float(np.mean(list(r['cells'].values()))))
  if args.panels:
    print('\n'.join(report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores,
                                            report_lib.rerun_command())))
    return
  plot = os.path.join(os.path.dirname(args.out), 'dasr_representations.png')
  if any('probe' in runs[0] for runs in results.values()):
    pca_plot(results, plot)
  text = report(results, bicubic, args, time.time() - t0, plot,
                report_lib.panel_lines(panels, PANEL_TEXT, min(args.seeds), scores)
                if scores else [])
  print(text)
  report_lib.write_section(args.out, SECTION, text)


if __name__ == '__main__':
  main()
