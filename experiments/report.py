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
  """--seeds, --variants, --workers, --out and the kept runs (--runs, --report-only, --resume)."""
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--variants', nargs='+', default=list(variants))
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--out', default=out)
  parser.add_argument('--runs', default=os.path.join(tempfile.gettempdir(), f'{name}.pkl'),
                      help='every finished run is kept here; --report-only rewrites the report')
  parser.add_argument('--report-only', action='store_true')
  parser.add_argument('--resume', action='store_true',
                      help='keep the runs in --runs and run only the missing ones')


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
