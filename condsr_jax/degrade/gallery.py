"""`condsr-jax degrade`: a grid of synthesized LR variants of one image, each tile captioned with
the degradation parameters that made it (a quick look at what a training run will see).

  condsr-jax degrade IMAGE -o grid.png [--config realesrgan|classic] [-n 16] [--scale 4]
  condsr-jax degrade IMAGE -o grid.png --config learned --model degradation.msgpack
"""

import argparse
import math
import sys
from typing import Any, Callable

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from condsr_jax import images
from condsr_jax.degrade import pipelines, realesrgan
from condsr_jax.degrade.kernels import KERNEL_TYPES

CONFIGS = ('realesrgan', 'classic', 'learned')
_KERNEL_NAMES = {'iso': 'iso', 'aniso': 'aniso', 'generalized_iso': 'gen-iso',
                 'generalized_aniso': 'gen-aniso', 'plateau_iso': 'plat-iso',
                 'plateau_aniso': 'plat-aniso', 'sinc': 'sinc', 'pulse': 'none'}
_MIN_SIDE = 80  # Real-ESRGAN's 0.15 downscale must leave more than a 21x21 kernel's half
_TILE = 256  # tiles are nearest-upsampled to at most this many pixels (at least 1x)
_TEXT_LINE = 12


def _kernel(r: dict[str, Any], prefix: str) -> str:
  name = _KERNEL_NAMES[KERNEL_TYPES[int(r[f'{prefix}/kernel_type'])]]
  size = int(r[f'{prefix}/size'])
  if name == 'none':
    return 'none'
  if name == 'sinc':
    return f'sinc{size} wc={float(r[f"{prefix}/omega_c"]):.2f}'
  text = f'{name}{size} s={float(r[f"{prefix}/sigma_x"]):.2f}'
  if name.endswith('aniso'):
    text += f'/{float(r[f"{prefix}/sigma_y"]):.2f} t={float(r[f"{prefix}/theta"]):.2f}'
  if name.startswith(('gen', 'plat')):
    text += f' b={float(r[f"{prefix}/beta"]):.2f}'
  return text


def _noise(r: dict[str, Any], prefix: str) -> str:
  gray = ' gray' if bool(r[f'{prefix}/gray']) else ''
  if bool(r[f'{prefix}/gaussian']):
    return f'gauss {float(r[f"{prefix}/sigma"]):.1f}{gray}'
  return f'poisson {float(r[f"{prefix}/poisson_scale"]):.2f}{gray}'


def _resize(r: dict[str, Any], prefix: str) -> str:
  choice = realesrgan.RESIZE_CHOICES[int(r[f'{prefix}/choice'])]
  mode = realesrgan.MODES[int(r[f'{prefix}/mode'])]
  return f'{choice} {float(r[f"{prefix}/scale"]):.2f} {mode} ->{int(r[f"{prefix}/size"])}'


def describe_realesrgan(r: dict[str, Any]) -> list[str]:
  """Caption lines of one Real-ESRGAN record (numpy scalars of one example)."""
  blur2 = _kernel(r, 'kernel2') if bool(r['blur2/apply']) else 'off'
  order = 'resize+sinc, jpeg' if bool(r['final/sinc_first']) else 'jpeg, resize+sinc'
  return [f'1 blur {_kernel(r, "kernel1")}',
          f'1 {_resize(r, "resize1")}',
          f'1 {_noise(r, "noise1")}  q={float(r["jpeg1/quality"]):.0f}',
          f'2 blur {blur2}',
          f'2 {_resize(r, "resize2")}',
          f'2 {_noise(r, "noise2")}  q={float(r["jpeg2/quality"]):.0f}',
          f'final {order} {realesrgan.MODES[int(r["final/mode"])]}',
          f'final sinc {_kernel(r, "sinc")}']


def describe_classic(r: dict[str, Any], downsample: str) -> list[str]:
  """Caption lines of one classic record."""
  jpeg = f'q={float(r["jpeg/quality"]):.0f}' if bool(r['jpeg/apply']) else 'off'
  return [f'blur {_kernel(r, "blur")}', f'down {downsample}',
          f'noise {float(r["noise/sigma"]):.1f}', f'jpeg {jpeg}']


def describe_learned(r: dict[str, Any]) -> list[str]:
  """Caption lines of one learned-degradation record: its kernel's widths and noise RMS."""
  return [f'kernel s={float(r["kernel/sigma_x"]):.2f}/{float(r["kernel/sigma_y"]):.2f}',
          f'noise {float(r["noise/sigma"]):.1f}']


def _degradation(name: str, side: int, scale: int, model: str = ''
                 ) -> tuple[pipelines.Degradation, Callable[[dict], list[str]]]:
  config = pipelines.default_config(name, scale)
  config.crop_pad = config.gt_size = side
  if name == 'realesrgan':
    return pipelines.make(config, scale), describe_realesrgan
  if name == 'learned':
    config.model = model
    return pipelines.make(config, scale), describe_learned
  return pipelines.make(config, scale), lambda r: describe_classic(r, config.downsample)


def synthesize(img: np.ndarray, name: str, n: int, scale: int, seed: int, model: str = ''
               ) -> tuple[np.ndarray, list[list[str]]]:
  """n LR variants [n, h, w, 3] of the centre square of `img` (HWC float) and their captions;
  `model` is the DegModel file of the 'learned' kind. Captions read the host draws and the
  per-sample values of the output record (a learned degradation draws on the device)."""
  side = min(img.shape[:2]) // scale * scale
  if side < _MIN_SIDE:
    raise ValueError(f'image of {img.shape[1]}x{img.shape[0]} pixels: needs a side of at '
                     f'least {_MIN_SIDE}')
  top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
  square = img[top:top + side, left:left + side]
  degradation, describe = _degradation(name, side, scale, model)
  sampler = degradation.param_sampler()
  records = [sampler(np.random.default_rng([seed, i])) for i in range(n)]
  batch = {k: np.stack([r[k] for r in records]) for k in records[0]}
  batch['gt'] = np.broadcast_to(square, (n,) + square.shape).astype(np.float32)
  out = jax.jit(degradation)(batch, jax.random.key(seed))
  drawn = {k: np.asarray(v) for k, v in out['record'].items() if np.ndim(v) == 1}
  return np.asarray(out['lq']), [describe({**r, **{k: v[i] for k, v in drawn.items()}})
                                 for i, r in enumerate(records)]


def grid(lq: np.ndarray, captions: list[list[str]], columns: int) -> Image.Image:
  """Tiles nearest-upsampled to a common size, each with its caption in a strip below."""
  n, h, w, _ = lq.shape
  factor = max(1, _TILE // max(h, w))
  tile_w, tile_h = w * factor, h * factor
  strip = max(len(c) for c in captions) * _TEXT_LINE + 6
  rows = math.ceil(n / columns)
  pad = 4
  canvas = Image.new('RGB', (columns * (tile_w + pad) + pad, rows * (tile_h + strip + pad) + pad),
                     'white')
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  for i in range(n):
    x0 = pad + (i % columns) * (tile_w + pad)
    y0 = pad + (i // columns) * (tile_h + strip + pad)
    tile = images.from_float(np.repeat(np.repeat(lq[i], factor, axis=0), factor, axis=1))
    canvas.paste(Image.fromarray(tile), (x0, y0))
    for j, line in enumerate(captions[i]):
      draw.text((x0 + 2, y0 + tile_h + 3 + j * _TEXT_LINE), line, fill='black', font=font)
  return canvas


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('image', help='image file (its centre square is degraded)')
  parser.add_argument('-o', '--output', required=True, help='output PNG')
  parser.add_argument('--config', default='realesrgan', choices=CONFIGS,
                      help="degradation: Real-ESRGAN's second order, CMDSR's classic one, or a "
                      'learned one (--model)')
  parser.add_argument('--model', default='',
                      help="--config learned: a DegModel model file (PDM-SR's degradation.msgpack)")
  parser.add_argument('-n', type=int, default=16, help='number of variants')
  parser.add_argument('--scale', type=int, default=4, choices=(2, 3, 4))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--columns', type=int, default=0, help='tiles per row (0: about sqrt(n))')


def cli_main(args: argparse.Namespace) -> int:
  if args.n < 1:
    print('condsr-jax degrade: -n must be at least 1', file=sys.stderr)
    return 2
  if bool(args.model) != (args.config == 'learned'):
    print('condsr-jax degrade: --model goes with --config learned (a DegModel file)',
          file=sys.stderr)
    return 2
  try:
    img = images.to_float(images.to_rgb(images.read_image(args.image)))
    lq, captions = synthesize(img, args.config, args.n, args.scale, args.seed, args.model)
  except (images.ImageReadError, ValueError) as e:
    print(f'condsr-jax degrade: {e}', file=sys.stderr)
    return 2
  columns = args.columns or math.ceil(math.sqrt(args.n))
  grid(lq, captions, columns).save(args.output)
  print(f'{args.n} {args.config} degradations (x{args.scale}) of {args.image} -> {args.output}')
  return 0
