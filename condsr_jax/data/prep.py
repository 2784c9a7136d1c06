"""`condsr-jax prep`: dataset preparation with Real-ESRGAN's defaults.

multiscale  Lanczos copies of each HR image at 0.75, 0.5 and 1/3 (`{stem}T0..T2.png`) and with
            the shortest side 400 (`{stem}T3.png`), as `generate_multiscale_DF2K.py`.
subimages   480x480 crops with step 240 (`{stem}_s001{ext}`, ...), as BasicSR's
            `extract_subimages.py`, in parallel processes.
meta-info   one path per line relative to a root, several folders merged, optionally checking that
            every image decodes, as `generate_meta_info.py`.
tfds        packs folders into a local TFDS dataset (`[tfds]` extra).

Input folders are read recursively and sub-folders are mirrored in the output. 16-bit images stay
16-bit (PIL alone would reduce them to 8 bits). Unreadable inputs are reported by path and the
rest is still processed (exit status 1).
"""

import argparse
import concurrent.futures
import fractions
import functools
import multiprocessing
import os
import pathlib
import re
import sys
from typing import Callable, Sequence

import numpy as np
from PIL import Image
import tqdm

from condsr_jax import images

MULTISCALE_SCALES = (0.75, 0.5, 1 / 3)
_SCALE_SUFFIX = re.compile(r'x[2348]$')


def multiscale_sizes(width: int, height: int, scales: Sequence[float] = MULTISCALE_SCALES,
                     shortest_edge: int = 400) -> list[tuple[int, int]]:
  """(width, height) of each copy: `int(w * s), int(h * s)`, then the shortest-edge one (if > 0).

  A side that would round to 0 (where the reference script fails) is kept at 1.
  """
  sizes = [(max(1, int(width * s)), max(1, int(height * s))) for s in scales]
  if shortest_edge > 0:
    if width < height:
      sizes.append((shortest_edge, int(shortest_edge * (height / width))))
    else:
      sizes.append((int(shortest_edge * (width / height)), shortest_edge))
  return sizes


def resize_lanczos(img: np.ndarray, width: int, height: int) -> np.ndarray:
  """PIL Lanczos resize of HWC uint8 (natively, as the reference) or uint16 (per channel, float)."""
  if img.dtype == np.uint8:
    pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    out = np.asarray(pil.resize((width, height), resample=Image.LANCZOS))
    return out[:, :, None] if out.ndim == 2 else out
  planes = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize(
      (width, height), resample=Image.LANCZOS)) for c in range(img.shape[2])]
  return np.clip(np.round(np.stack(planes, axis=2)), 0, 65535).astype(np.uint16)


def multiscale_one(path: str, out_prefix: str, scales: Sequence[float],
                   shortest_edge: int) -> list[str]:
  """Writes `{out_prefix}T{i}.png` for every size of `multiscale_sizes`; returns the paths."""
  img = images.read_image(path)
  outputs = []
  for idx, (w, h) in enumerate(multiscale_sizes(img.shape[1], img.shape[0], scales,
                                                shortest_edge)):
    outputs.append(f'{out_prefix}T{idx}.png')
    images.write_image(outputs[-1], resize_lanczos(img, w, h))
  return outputs


def subimage_starts(length: int, crop_size: int, step: int, thresh_size: int) -> list[int]:
  """Crop offsets along one axis: every `step`, plus a border-aligned one if the rest > thresh."""
  if length < crop_size:
    return []
  starts = list(range(0, length - crop_size + 1, step))
  if length - (starts[-1] + crop_size) > thresh_size:
    starts.append(length - crop_size)
  return starts


def subimages_one(path: str, out_dir: str, crop_size: int, step: int, thresh_size: int,
                  compression_level: int) -> int:
  """Writes the sub-images of one image as `{stem}_s{idx:03d}{ext}` (a trailing x2/x3/x4/x8 of the
  stem is dropped, DIV2K LR naming); returns how many (0 for an image smaller than the crop)."""
  stem, ext = os.path.splitext(os.path.basename(path))
  stem = _SCALE_SUFFIX.sub('', stem)
  img = images.read_image(path)
  tops = subimage_starts(img.shape[0], crop_size, step, thresh_size)
  lefts = subimage_starts(img.shape[1], crop_size, step, thresh_size)
  index = 0
  for top in tops:
    for left in lefts:
      index += 1
      images.write_image(os.path.join(out_dir, f'{stem}_s{index:03d}{ext}'),
                         img[top:top + crop_size, left:left + crop_size], compression_level)
  return index


def image_decodes(path: str) -> bool:
  """True; raises ImageReadError if `path` does not decode."""
  images.read_image(path)
  return True


def meta_info_lines(inputs: Sequence[str], roots: Sequence[str]) -> list[tuple[str, str]]:
  """(path, line) for every image under each input, the line relative to its root (posix)."""
  out = []
  for folder, root in zip(inputs, roots, strict=True):
    for path in images.list_images(folder):
      out.append((path, pathlib.Path(os.path.relpath(path, root)).as_posix()))
  return out


def _guarded(fn: Callable, *args):
  """fn(*args), or the message of the ImageReadError it raised (so one bad file stops nothing)."""
  try:
    return fn(*args)
  except images.ImageReadError as e:
    return str(e)


def _parallel(fn: Callable, tasks: Sequence[tuple], n_thread: int, desc: str) -> list:
  """`_guarded(fn, *task)` for every task, in `n_thread` spawned processes (or in this one)."""
  progress = functools.partial(tqdm.tqdm, total=len(tasks), unit='img', desc=desc, disable=None)
  if n_thread <= 1:
    return list(progress(_guarded(fn, *t) for t in tasks))
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(n_thread, mp_context=ctx) as pool:
    return list(progress(pool.map(_guarded, [fn] * len(tasks), *zip(*tasks), chunksize=4)))


def _report_failures(results: list) -> int:
  """Prints the unreadable inputs (string results); 1 if there were any, else 0."""
  failures = [r for r in results if isinstance(r, str)]
  for message in failures:
    print(f'{message}; skipped', file=sys.stderr)
  return int(bool(failures))


def _mirrored(path: str, in_root: str, out_root: str) -> str:
  out_dir = os.path.join(out_root, os.path.relpath(os.path.dirname(path), in_root))
  os.makedirs(out_dir, exist_ok=True)
  return out_dir


def _inputs(folder: str) -> list[str]:
  paths = images.list_images(folder)
  if not paths:
    raise ValueError(f'{folder}: no image files found')
  return paths


def run_multiscale(args: argparse.Namespace) -> int:
  tasks = []
  for path in _inputs(args.input):
    stem = os.path.splitext(os.path.basename(path))[0]
    prefix = os.path.join(_mirrored(path, args.input, args.output), stem)
    tasks.append((path, prefix, tuple(args.scales), args.shortest_edge))
  written = _parallel(multiscale_one, tasks, args.n_thread, 'multiscale')
  done = [w for w in written if not isinstance(w, str)]
  print(f'{sum(map(len, done))} images from {len(done)} written to {args.output}')
  return _report_failures(written)


def run_subimages(args: argparse.Namespace) -> int:
  if os.path.isdir(args.output) and os.listdir(args.output):
    print(f'{args.output} exists and is not empty; choose a new output folder', file=sys.stderr)
    return 1
  tasks = [(p, _mirrored(p, args.input, args.output), args.crop_size, args.step,
            args.thresh_size, args.compression_level) for p in _inputs(args.input)]
  counts = _parallel(subimages_one, tasks, args.n_thread, 'subimages')
  for (path, *_), n in zip(tasks, counts):
    if n == 0:
      print(f'{path}: smaller than the {args.crop_size} crop, no sub-images', file=sys.stderr)
  done = [n for n in counts if not isinstance(n, str)]
  print(f'{sum(done)} sub-images from {sum(map(bool, done))} images written to {args.output}')
  return _report_failures(counts)


def run_meta_info(args: argparse.Namespace) -> int:
  roots = args.root or [os.path.dirname(os.path.abspath(f)) for f in args.input]
  if len(roots) == 1:
    roots = roots * len(args.input)
  if len(roots) != len(args.input):
    print(f'give one --root, or one per --input ({len(args.input)})', file=sys.stderr)
    return 2
  entries = meta_info_lines(args.input, roots)
  if args.check:
    results = _parallel(image_decodes, [(p,) for p, _ in entries], args.n_thread, 'check')
    for message in (r for r in results if isinstance(r, str)):
      print(f'{message}; left out', file=sys.stderr)
    entries = [e for e, r in zip(entries, results) if r is True]
  os.makedirs(os.path.dirname(os.path.abspath(args.meta_info)), exist_ok=True)
  with open(args.meta_info, 'w', encoding='utf-8', newline='\n') as f:
    f.writelines(f'{line}\n' for _, line in entries)
  print(f'{len(entries)} paths written to {args.meta_info}')
  return 0


def run_tfds(args: argparse.Namespace) -> int:
  from condsr_jax.data import tfds_pack  # pylint: disable=g-import-not-at-top
  if not all('=' in s for s in args.split):
    print(f'--split takes SPLIT=FOLDER items, got {args.split}', file=sys.stderr)
    return 2
  folders = dict(s.split('=', 1) for s in args.split)
  name = tfds_pack.pack_image_folders(folders, args.data_dir, name=args.name,
                                      on_bad_image=args.on_bad_image)
  print(f"packed as {name!r} in {args.data_dir}: read it with "
        f"TfdsSource({name!r}, split=..., data_dir={args.data_dir!r})")
  return 0


def _scale(text: str) -> float:
  return float(fractions.Fraction(text))


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest='prep_command', required=True)
  p = sub.add_parser('multiscale', help='Lanczos multi-scale copies of HR images (DF2K recipe)')
  p.add_argument('--input', required=True, help='folder of HR images')
  p.add_argument('--output', required=True, help='output folder')
  p.add_argument('--scales', nargs='+', type=_scale, default=list(MULTISCALE_SCALES),
                 help='scales, fractions allowed (default 0.75 0.5 1/3)')
  p.add_argument('--shortest-edge', type=int, default=400,
                 help='also a copy with this shortest side (0: none)')
  p.add_argument('--n-thread', type=int, default=os.cpu_count(), help='worker processes')
  p.set_defaults(run=run_multiscale)

  p = sub.add_parser('subimages', help='crop images to overlapping sub-images')
  p.add_argument('--input', required=True, help='folder of images')
  p.add_argument('--output', required=True, help='new output folder')
  p.add_argument('--crop-size', type=int, default=480, help='sub-image side (default 480)')
  p.add_argument('--step', type=int, default=240, help='sliding-window step (default 240)')
  p.add_argument('--thresh-size', type=int, default=0,
                 help='add a border-aligned crop when the remainder exceeds this')
  p.add_argument('--compression-level', type=int, default=3, help='PNG compression 0-9')
  p.add_argument('--n-thread', type=int, default=os.cpu_count(), help='worker processes')
  p.set_defaults(run=run_subimages)

  p = sub.add_parser('meta-info', help='list image paths relative to a root, one per line')
  p.add_argument('--input', nargs='+', required=True, help='image folders, merged in order')
  p.add_argument('--root', nargs='+', help='root the paths are relative to: one, or one per '
                 'input (default: the parent of each input)')
  p.add_argument('--meta-info', required=True, help='output text file')
  p.add_argument('--check', action='store_true', help='decode every image; leave out bad ones')
  p.add_argument('--n-thread', type=int, default=os.cpu_count(),
                 help='worker processes for --check')
  p.set_defaults(run=run_meta_info)

  p = sub.add_parser('tfds', help='pack folders into a local TFDS ArrayRecord dataset')
  p.add_argument('--split', nargs='+', required=True, metavar='SPLIT=FOLDER',
                 help='e.g. train=datasets/DF2K_HR validation=datasets/val')
  p.add_argument('--data-dir', required=True, help='TFDS data_dir to write to')
  p.add_argument('--name', required=True, help='dataset name (the builder config)')
  p.add_argument('--on-bad-image', choices=('skip', 'stop'), default='stop')
  p.set_defaults(run=run_tfds)


def cli_main(args: argparse.Namespace) -> int:
  return args.run(args)
