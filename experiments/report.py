"""What the experiments share: single-threaded workers, the run arguments, a resumable pool of
(variant, seed) runs, the unpaired demo-photo domains, mean ± std over seeds, and replacing their
section of a Markdown results file."""

import argparse
import concurrent.futures
import multiprocessing
import os
import pickle
import re
import shutil
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np


def single_thread() -> None:
  """XLA on one core for this process (each worker of a pool: the experiments' networks are too
  small to use two), and absl flags parsed (grain reads them)."""
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
  os.environ['CONDSR_JAX_KEEP_XLA_FLAGS'] = '1'
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()


def add_run_arguments(parser: argparse.ArgumentParser, name: str, variants: Sequence[str],
                      out: str) -> None:
  """--seeds, --variants, --workers, --out, the kept runs (--runs, --report-only, --resume) and
  --panels."""
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--variants', nargs='+', default=list(variants))
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--out', default=out)
  parser.add_argument('--runs', default=os.path.join(tempfile.gettempdir(), f'{name}.pkl'),
                      help='every finished run is kept here; --report-only rewrites the report')
  parser.add_argument('--report-only', action='store_true')
  parser.add_argument('--resume', action='store_true',
                      help='keep the runs in --runs and run only the missing ones')
  add_panels_argument(parser, name)


def add_panels_argument(parser: argparse.ArgumentParser, name: str) -> None:
  """--panels: only the lowest seed and its picture of crops."""
  parser.add_argument('--panels', action='store_true',
                      help='run only the lowest seed given and write only its picture of '
                      f'crops ({name}_panels.png beside --out), not the results section')


def run_all(args: argparse.Namespace, run: Callable[..., dict], jobs: Sequence[tuple[str, int]],
            *extra: Any) -> tuple[list[dict], float]:
  """(finished runs, start time): `run(variant, seed, *extra)` for each job in a pool of
  `args.workers` spawned processes, each result kept in `args.runs` as it finishes; with
  --resume or --report-only the kept runs count, and the time they took."""
  t0, done = time.time(), []
  if args.report_only or args.resume and os.path.exists(args.runs):
    with open(args.runs, 'rb') as f:
      done, elapsed = pickle.load(f)
    t0 -= elapsed
  if args.report_only:
    return done, t0
  finished = {(r['variant'], r['seed']) for r in done}
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
    futures = [pool.submit(run, v, s, *extra) for v, s in jobs if (v, s) not in finished]
    for future in concurrent.futures.as_completed(futures):
      done.append(future.result())
      with open(args.runs, 'wb') as f:
        pickle.dump((done, time.time() - t0), f)
  return done, t0


def read_rgb(path: str) -> np.ndarray:
  """An image as RGB float."""
  from condsr_jax import images  # pylint: disable=g-import-not-at-top
  return images.to_float(images.to_rgb(images.read_image(path)))


def tiles(img: np.ndarray, size: int) -> list[np.ndarray]:
  """The non-overlapping size x size tiles of an image, row by row."""
  return [img[i:i + size, j:j + size] for i in range(0, img.shape[0] - size + 1, size)
          for j in range(0, img.shape[1] - size + 1, size)]


def unpaired_demo_domains(root: str, demo: str, real_tile: int
                          ) -> tuple[str, str, list[np.ndarray]]:
  """(clean-HR folder, empty real-LR folder, HR tiles for it) from the demo training photos:
  the left half of each photo is written to `root`/clean_hr, its right half cut into
  `real_tile` tiles for the caller to degrade into `root`/real_lr, so the domains share their
  kind of content and no pixel. `root` is written afresh (nothing stale, no links followed)."""
  from condsr_jax import images  # pylint: disable=g-import-not-at-top
  shutil.rmtree(root, ignore_errors=True)
  clean, real = os.path.join(root, 'clean_hr'), os.path.join(root, 'real_lr')
  for folder in (clean, real):
    os.makedirs(folder)
  right = []
  for path in images.list_images(os.path.join(demo, 'train')):
    img = read_rgb(path)
    half = img.shape[1] // 2
    name = os.path.splitext(os.path.basename(path))[0]
    images.write_image(os.path.join(clean, f'{name}.png'), images.from_float(img[:, :half]))
    right += tiles(img[:, half:], real_tile)
  return clean, real, right


def by_variant(done: Sequence[dict], variants: Sequence[str]) -> dict[str, list[dict]]:
  """The runs of each variant that has any, in `variants` order, sorted by seed."""
  return {v: sorted([r for r in done if r['variant'] == v], key=lambda r: r['seed'])
          for v in variants if any(r['variant'] == v for r in done)}


def mean_std(values: Sequence[float], digits: int = 2) -> str:
  """'mean ± std' over seeds ('value' for one seed)."""
  if len(values) == 1:
    return f'{values[0]:.{digits}f}'
  return f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}'


def write_section(path: str, section: str, text: str) -> None:
  """Replaces the section headed `section` (up to the next '## ') in `path`, or appends it."""
  old = open(path).read() if os.path.exists(path) else '# Results\n\n'
  pattern = re.escape(section) + r'.*?(?=\n## |\Z)'
  new = re.sub(pattern, lambda _: text.rstrip('\n'), old, flags=re.S) if section in old else (
      old.rstrip('\n') + '\n\n' + text)
  with open(path, 'w') as f:
    f.write(new)


def to_uint8(img: np.ndarray) -> np.ndarray:
  """A float image in [0, 1] (or one already uint8) as uint8, for keeping crops in a run."""
  if img.dtype == np.uint8:
    return img
  return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def panel_figure(path: str, lr, hr, outputs: dict, scale: int, title: str = '',
                 max_bytes: int = 280_000) -> None:
  """A PNG of crops, one row per tile: LR (nearest-upscaled) | bicubic | each of `outputs`
  (label -> SR image, or a list of one per tile) | HR, each titled with its label and, where
  there is a GT (`hr` not None), that tile's PSNR (RGB, border `scale`). `lr` / `hr`: one
  image or a list of one per tile, float in [0, 1] or uint8. A file over `max_bytes` is
  rewritten with a palette of 256 colours."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from condsr_jax import evaluate, metrics  # pylint: disable=g-import-not-at-top
  one = lambda x: [x] if isinstance(x, np.ndarray) and x.ndim == 3 else list(x)  # noqa: E731
  lrs = [to_uint8(x) for x in one(lr)]
  hrs = [None] * len(lrs) if hr is None else [to_uint8(x) for x in one(hr)]
  outs = {k: [to_uint8(x) for x in one(v)] for k, v in outputs.items()}
  rows = []
  for i, (lq, gt) in enumerate(zip(lrs, hrs)):
    bicubic = evaluate.bicubic_upsample(lq.astype(np.float32) / 255, scale)
    row = [('LR (nearest)', np.repeat(np.repeat(lq, scale, 0), scale, 1), False),
           ('bicubic upsampling', to_uint8(bicubic), True)]
    row += [(k, v[i], True) for k, v in outs.items()]
    if gt is not None:
      row.append(('HR', gt, False))
    rows.append((row, gt))
  cols = max(len(r) for r, _ in rows)
  fig, axes = plt.subplots(len(rows), cols, squeeze=False, layout='constrained',
                           figsize=(1.45 * cols, 1.62 * len(rows) + 0.3 * bool(title)))
  for ax_row, (row, gt) in zip(axes, rows):
    for ax, (label, img, scored) in zip(ax_row, row):
      if scored and gt is not None:
        label += f'\n{metrics.psnr(img.astype(np.float64), gt.astype(np.float64), scale):.2f} dB'
      ax.imshow(img, interpolation='nearest')
      ax.set_title(label, fontsize=7)
    for ax in ax_row:
      ax.set_xticks([])
      ax.set_yticks([])
    for ax in ax_row[len(row):]:
      ax.axis('off')
  if title:
    fig.suptitle(title, fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  if os.path.getsize(path) > max_bytes:  # a small file for the docs: 256 colours
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(path) as img:
      img.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def panels_path(args: argparse.Namespace, name: str) -> str:
  """Where `name`'s picture of crops goes: docs/<name>_panels.png, beside --out."""
  return os.path.join(os.path.dirname(os.path.abspath(args.out)), f'{name}_panels.png')


def write_panels(path: str, runs: dict[str, list[dict]], seed: int, lr, hr, scale: int,
                 title: str = '', psnr: Callable[[dict], float] | None = None,
                 label: Callable[[str], str] | None = None) -> dict[str, float]:
  """The picture of the crops kept under 'panels' by the runs of `seed` (`runs` from
  `by_variant`; each column titled `label(variant)`), and each variant's full-test PSNR of that
  seed (`psnr(run)`: the mean of run['psnr'] unless given), printed on one line and returned."""
  psnr = psnr or (lambda r: float(np.mean(r['psnr'])))
  label = label or (lambda v: v)
  chosen = {v: [r for r in rs if r['seed'] == seed] for v, rs in runs.items()}
  chosen = {v: rs[0] for v, rs in chosen.items() if rs and 'panels' in rs[0]}
  if not chosen:
    print(f'no run of seed {seed} kept crops: no picture')
    return {}
  panel_figure(path, lr, hr, {label(v): r['panels'] for v, r in chosen.items()}, scale, title)
  scores = {v: psnr(r) for v, r in chosen.items()}
  print(f'seed {seed} full-test PSNR: ' + ', '.join(f'{v} {p:.3f}' for v, p in scores.items())
        + f' dB; picture: {path}', flush=True)
  return scores


def panel_lines(path: str, tiles_text: str, seed: int, scores: dict[str, float],
                rerun: str = '', note: str = '') -> list[str]:
  """The Markdown lines for a results section: the picture and one sentence on it (`rerun`:
  the command of a rerun that made it, if not this table's runs; `note`: ends the sentence)."""
  which = (f'a seed-{seed} rerun (`{rerun}`)' if rerun else f'the seed-{seed} runs of this table')
  return [f'![LR, bicubic, each variant\'s SR and HR of {tiles_text}]({os.path.basename(path)})',
          '', f'Crops of {tiles_text}: LR (nearest-upscaled), bicubic upsampling, each '
          f'variant\'s SR from {which}, HR; each title gives that tile\'s PSNR. Full-test PSNR of '
          'those runs: '
          + ', '.join(f'{v} {p:.2f}' for v, p in scores.items()) + f' dB{note}.', '']


def rerun_command() -> str:
  """This process's command line, as a reader would type it."""
  import shlex  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  return 'python ' + ' '.join(shlex.quote(a) for a in
                              [os.path.relpath(sys.argv[0], os.path.dirname(
                                  os.path.dirname(os.path.abspath(__file__)))),
                               *sys.argv[1:]])
