"""Validation of SR products: PSNR/SSIM on RGB and Y (BasicSR's numbers), optionally LPIPS, DISTS
and NIQE, against bicubic and Lanczos upsampling, and LR | bicubic | SR | HR panels.

Validation pairs come from a paired folder (`gt/` + `lq/`) or from HR images degraded with fixed
degradations (`GRIDS`), so numbers are comparable across runs and methods. Training validation
and `condsr-jax evaluate` run the same `SRValidation` on the same exported model through the same
`Upscaler`, so a run's validation PSNR and the command's agree.
"""

import argparse
import collections
import dataclasses
import json
import os
import sys
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from PIL import Image

from condsr_jax import degrade, images, inference, metrics, perceptual
from condsr_jax.degrade import pipelines
from condsr_jax.data import pipeline, sources
from condsr_jax.methods import api

# Fixed grids: (blur sigma, Gaussian noise sigma on 0..255, JPEG quality or 0, downscaler) per
# degradation ('matlab': MATLAB's bicubic; else one of `PIL_DOWNSCALERS`).
FIXED_GRIDS = {
    'bicubic': ((0.0, 0.0, 0, 'matlab'),),
    'blur_noise': tuple((s, n, 0, 'matlab') for s in (0.6, 1.2, 1.8, 2.4) for n in (0.0, 15.0)),
    'blur_noise_jpeg': tuple((s, n, q, 'matlab') for s in (1.0, 2.0) for n in (0.0, 10.0)
                             for q in (0, 60)),
    # What phone and web photos typically carry: slight blur, light noise, good-quality JPEG.
    'mild': tuple((s, n, q, 'matlab') for s in (0.5, 1.0) for n in (0.0, 3.0) for q in (0, 90)),
    # Photos shrunk by other software than MATLAB's bicubic (box / area, PIL's antialiased
    # bilinear and Lanczos), as saved or as JPEG 85.
    'resamplers': tuple((0.0, 0.0, q, d) for d in ('area', 'bilinear', 'lanczos') for q in (0, 85)),
}
# 'draws': DRAWS fixed draws of the run's own training degradation on centre crops of the images.
DRAWS = 8
GRIDS = (*FIXED_GRIDS, 'draws')


def pil_resize(img: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
  """HWC float resized by PIL per channel in float (`resample`: a PIL.Image filter)."""
  planes = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], np.float32), mode='F')
                       .resize((width, height), resample)) for c in range(img.shape[2])]
  return np.stack(planes, axis=-1)


# The fixed grids' downscalers besides MATLAB's bicubic: PIL's antialiased filters.
PIL_DOWNSCALERS = {'area': Image.BOX, 'bilinear': Image.BILINEAR, 'lanczos': Image.LANCZOS}


def downscale(x: jax.Array, scale: int, downscaler: str) -> jax.Array:
  """[1, H, W, C] -> [1, H/scale, W/scale, C] by MATLAB's bicubic or a `PIL_DOWNSCALERS` one."""
  if downscaler == 'matlab':
    return degrade.imresize_matlab(x, 1.0 / scale)
  h, w = x.shape[1] // scale, x.shape[2] // scale
  return jnp.asarray(pil_resize(np.asarray(x[0]), w, h, PIL_DOWNSCALERS[downscaler]))[None]


def degrade_fixed(hr: np.ndarray, scale: int, sigma: float, noise: float, quality: int,
                  seed: int, downscaler: str = 'matlab') -> np.ndarray:
  """One deterministic LR of an HR image (HWC float): Gaussian blur (21x21), `downscale` by
  1/scale, Gaussian noise with a fixed key, JPEG, 8-bit rounding."""
  x = jnp.asarray(hr)[None]
  if sigma > 0:
    x = degrade.filter2d(x, degrade.bivariate_gaussian_kernel(21, sigma, sigma))
  x = jnp.clip(downscale(x, scale, downscaler), 0.0, 1.0)
  if noise > 0:
    x = degrade.add_gaussian_noise(x, noise, key=jax.random.key(seed))
  if quality:
    x = degrade.diff_jpeg(x, float(quality))
  return np.asarray(jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0)[0]


@dataclasses.dataclass
class ValPair:
  name: str
  lq: np.ndarray  # HWC float32 in [0, 1]
  gt: np.ndarray


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
  """The central size x size crop of [H, W, C] (reflect-padded first if smaller)."""
  h, w = img.shape[:2]
  if h < size or w < size:
    img = np.pad(img, ((0, max(size - h, 0)), (0, max(size - w, 0)), (0, 0)), mode='reflect')
    h, w = img.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return img[top:top + size, left:left + size]


def draw_pairs(hr_images: list[tuple[str, np.ndarray]], degradation: Any, draws: int = DRAWS,
               seed: int = 0, size: int = 0) -> list[ValPair]:
  """Centre crops (`size` pixels, 0: the degradation's canvas) of HR images x `draws` fixed
  draws of the degradation."""
  if size:
    degradation = pipelines.on_canvas(degradation, size)
  gt = np.stack([centre_crop(hr, degradation.canvas) for _, hr in hr_images])
  lq = pipelines.fixed_draws(degradation, gt, draws, seed)
  return [ValPair(f'{name}@draw{j}', lq[i, j], gt[i])
          for i, (name, _) in enumerate(hr_images) for j in range(draws)]


def load_pairs(val: str, scale: int, grid: str = 'bicubic', channels: int = 3,
               max_images: int = 0, degradation: Any = None, draw_size: int = 0
               ) -> list[ValPair]:
  """Paired folder (has `gt/` and `lq/`) or HR folder x `grid` -> validation pairs.

  `grid='draws'` needs the training `degradation` (a `degrade.pipelines.make` object), drawn on
  centre crops of `draw_size` pixels (0: its training canvas).
  """
  if os.path.isdir(os.path.join(val, 'gt')) and os.path.isdir(os.path.join(val, 'lq')):
    source = sources.AlignedFolderSource(val, (('gt', 1), ('lq', scale)), channels=channels,
                                         on_bad_image='stop')
    pairs = [ValPair(str(r['key']), r['lq'], r['gt']) for r in pipeline.make_eval_dataset(source)]
    return pairs[:max_images] if max_images else pairs
  if grid not in GRIDS:
    raise ValueError(f'unknown degradation grid {grid!r}; known: {GRIDS}')
  source = sources.FolderSource(val, channels=channels, on_bad_image='stop')
  hr = [(str(r['key']), r['gt']) for r in pipeline.make_eval_dataset(source, multiple_of=scale)]
  if grid == 'draws':
    if degradation is None:
      raise ValueError("the 'draws' grid needs the training degradation")
    pairs = draw_pairs(hr, degradation, size=draw_size)
  else:
    pairs = [ValPair(f'{name}@blur{s:g}_noise{n:g}_jpeg{q}' + ('' if d == 'matlab' else f'_{d}'),
                     degrade_fixed(img, scale, s, n, q, 1000 * i + j, d).astype(np.float32), img)
             for i, (name, img) in enumerate(hr)
             for j, (s, n, q, d) in enumerate(FIXED_GRIDS[grid])]
  return pairs[:max_images] if max_images else pairs


def bicubic_upsample(lq: np.ndarray, scale: int) -> np.ndarray:
  """A baseline: PyTorch-style bicubic upsampling (A = -0.75) by `scale`."""
  return np.asarray(degrade.interpolate(jnp.asarray(lq)[None], scale_factor=scale,
                                        mode='bicubic'))[0]


def lanczos_upsample(lq: np.ndarray, scale: int) -> np.ndarray:
  """The sharper classical baseline: PIL's Lanczos (a = 3) by `scale`, per channel in float."""
  h, w = lq.shape[:2]
  return pil_resize(lq, w * scale, h * scale, Image.LANCZOS)


BASELINES = {'bicubic': bicubic_upsample, 'lanczos': lanczos_upsample}


def _panel(lq: np.ndarray, bicubic: np.ndarray, out: np.ndarray, gt: np.ndarray, scale: int
           ) -> np.ndarray:
  """LR (nearest) | bicubic | SR | HR, side by side."""
  up = np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1)
  return images.from_float(np.concatenate([up, bicubic, out, gt], axis=1))


def comparison_panel(pair: ValPair, bicubic: np.ndarray, out: np.ndarray, scale: int,
                     size: int) -> np.ndarray:
  """LR | bicubic | SR | HR of the central `size` HR pixels of a pair, labelled, 8-bit RGB."""
  size = max(scale, min(size, *pair.gt.shape[:2]) // scale * scale)
  top = (pair.gt.shape[0] - size) // 2 // scale * scale
  left = (pair.gt.shape[1] - size) // 2 // scale * scale
  hr = np.s_[top:top + size, left:left + size]
  lr = np.s_[top // scale:(top + size) // scale, left // scale:(left + size) // scale]
  panel = _panel(pair.lq[lr], bicubic[hr], np.clip(out[hr], 0, 1), pair.gt[hr], scale)
  return np.concatenate([inference.labelled(images.to_rgb(p), label) for p, label in zip(
      np.split(panel, 4, axis=1), ('LR', 'bicubic', 'SR', 'HR'))], axis=1)


Scores = dict[str, list[float]]  # metric name -> one value per validation pair
_RGB = {'psnr': 'psnr_rgb', 'ssim': 'ssim_rgb'}


def _progress(items: Iterable[Any], show: bool, total: int, desc: str) -> Iterable[Any]:
  """`items` with a progress bar (counts, ETA) when `show` and stderr is a terminal."""
  return tqdm.tqdm(items, total=total, unit='img', desc=desc, leave=False,
                   disable=None if show else True)


def means(scores: Scores) -> dict[str, float]:
  return {name: float(np.mean(values)) for name, values in scores.items()}


class SRValidation:
  """An evaluator: one SR product upscales fixed pairs; BasicSR's PSNR/SSIM on RGB and Y, and
  optionally LPIPS / DISTS / NIQE, each next to the bicubic and Lanczos baselines.

  `psnr` and `ssim` are those of the run's convention (`y_channel`), the run's key metric;
  `psnr_rgb`, `psnr_y` (and SSIM alike) are both conventions.
  """

  def __init__(self, pairs: list[ValPair], scale: int, crop_border: int, y_channel: bool, *,
               product: str = 'generator', grid_images: int = 4, label: str = '',
               perceptual_metrics: Mapping[str, perceptual.Perceptual] | None = None,
               niqe: bool = False):
    self.pairs, self.scale, self.product = pairs, scale, product
    self.crop_border, self.y_channel, self.grid_images = crop_border, y_channel, grid_images
    self.label, self.perceptual, self.niqe = label, dict(perceptual_metrics or {}), niqe
    self.baseline_outputs = {name: [up(p.lq, scale) for p in pairs]
                             for name, up in BASELINES.items()}
    self.baselines = {name: self.score(outs) for name, outs in self.baseline_outputs.items()}
    self._upscaler: inference.Upscaler | None = None

  @classmethod
  def from_config(cls, eval_config: ml_collections.ConfigDict, scale: int, channels: int,
                  degradation: Any = None, product: str = 'generator') -> 'SRValidation':
    """From `config.eval` (`degradation`: the run's, for the 'draws' grid)."""
    e = eval_config
    pairs = load_pairs(e.val, scale, e.grid, channels, e.max_images, degradation,
                       e.draw_size)
    crop = scale if e.crop_border < 0 else e.crop_border
    loaded = {name: perceptual.load(name, files.split(','))
              for name, files in e.perceptual.items() if files}
    return cls(pairs, scale, crop, e.y_channel, product=product, grid_images=e.grid_images,
               label=e.val, perceptual_metrics=loaded, niqe=e.niqe)

  def score(self, outputs: list[np.ndarray], progress: bool = False) -> Scores:
    """Per-pair metrics of `outputs` against the pairs' GT, measured on 8-bit images;
    `progress`: a progress bar on a terminal."""
    scores: Scores = collections.defaultdict(list)
    for out, pair in _progress(zip(outputs, self.pairs), progress, len(self.pairs), 'metrics'):
      measured = metrics.validation_metrics(out[None], pair.gt[None], self.crop_border)
      for name, values in measured.items():
        scores[_RGB.get(name, name)].append(float(values[0]))
      out8, gt8 = images.from_float(out), images.from_float(pair.gt)
      for name, metric in self.perceptual.items():
        scores[name].append(float(metric(out8, gt8)[0]))
      if self.niqe:
        scores['niqe'].append(metrics.niqe(out8, self.crop_border))
    convention = '_y' if self.y_channel else '_rgb'
    scores['psnr'], scores['ssim'] = scores[f'psnr{convention}'], scores[f'ssim{convention}']
    return dict(scores)

  def upscale_all(self, upscaler: inference.Upscaler, progress: bool = False
                  ) -> list[np.ndarray]:
    return [upscaler.upscale_float(p.lq)
            for p in _progress(self.pairs, progress, len(self.pairs), 'upscale')]

  def _upscaler_for(self, product: api.Product) -> inference.Upscaler:
    """One Upscaler per run (compiled once per image shape); later products swap its weights."""
    if self._upscaler is None or self._upscaler.spec != product.spec:
      self._upscaler = inference.Upscaler(product.spec, product.variables)
    else:
      self._upscaler.set_variables(product.variables)
    return self._upscaler

  def __call__(self, products: Mapping[str, api.Product]) -> api.EvalResult:
    outs = self.upscale_all(self._upscaler_for(api.Product(*products[self.product])))
    ours, base = means(self.score(outs)), {k: means(v) for k, v in self.baselines.items()}
    scalars = dict(ours)
    for name, values in base.items():
      scalars.update({f'{k}_{name}': v for k, v in values.items()})
    bicubic = self.baseline_outputs['bicubic']
    panels = {p.name: _panel(p.lq, b, o, p.gt, self.scale)
              for p, b, o in list(zip(self.pairs, bicubic, outs))[: self.grid_images]}
    verdict = 'beats' if ours['psnr'] > base['bicubic']['psnr'] else 'does NOT beat'
    extra = ''.join(f'; {_LABELS[k]} {ours[k]:.4f}, bicubic {base["bicubic"][k]:.4f}'
                    for k in (*self.perceptual, *(['niqe'] if self.niqe else [])))
    report = (f'validation ({self.label}): PSNR {ours["psnr"]:.2f} dB, bicubic '
              f'{base["bicubic"]["psnr"]:.2f} dB, Lanczos {base["lanczos"]["psnr"]:.2f} dB; SSIM '
              f'{ours["ssim"]:.4f}, bicubic {base["bicubic"]["ssim"]:.4f}{extra}: the '
              f'{self.product} {verdict} bicubic')
    return api.EvalResult(scalars, panels, report)


# ---------------------------------------------------------------------------------------------
# Command line.

_LABELS = {'psnr_rgb': 'PSNR', 'ssim_rgb': 'SSIM', 'psnr_y': 'PSNR-Y', 'ssim_y': 'SSIM-Y',
           'lpips_alex': 'LPIPS-alex', 'lpips_vgg': 'LPIPS-vgg', 'dists': 'DISTS', 'niqe': 'NIQE'}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('val', help='paired folder (gt/ + lq/) or an HR folder (degraded by --grid)')
  parser.add_argument('-m', '--model', required=True,
                      help='model file, orbax export, training workdir, or PyTorch '
                      '.pth/.safetensors')
  parser.add_argument('--grid', default='bicubic', choices=GRIDS,
                      help="fixed degradations for an HR-only folder ('draws': fixed draws of "
                      '--degradation)')
  parser.add_argument('--degradation', default=None, choices=pipelines.KINDS,
                      help="the degradation the 'draws' grid samples, at its default settings "
                      '(default: the one a training workdir given as -m ran with)')
  parser.add_argument('--draw-size', type=int, default=400,
                      help="HR centre-crop side of the 'draws' grid (rounded down to the scale)")
  parser.add_argument('--crop-border', type=int, default=-1, help='default: the model scale')
  parser.add_argument('--max-images', type=int, default=0)
  for name in perceptual.METRICS:
    parser.add_argument(f'--{name.replace("_", "-")}', nargs='+', default=[], metavar='FILE',
                        help=perceptual.weights_hint(name))
  parser.add_argument('--niqe', action='store_true', help='NIQE of the outputs (no reference)')
  parser.add_argument('--panels', default=None, metavar='DIR',
                      help='write LR | bicubic | SR | HR crops of every image to DIR')
  parser.add_argument('--panel-size', type=int, default=128,
                      help='HR side of the --panels crops (centred; rounded down to the scale)')


def format_table(pairs: list[ValPair], ours: Scores, baselines: Mapping[str, Scores]) -> str:
  """Per image and mean: a row for the model and one per baseline, a column per metric."""
  columns = [k for k in _LABELS if k in ours]
  width = max([len(p.name) for p in pairs] + [4])
  lines = [f'{"image":{width}s} {"":8s}' + ''.join(f'{_LABELS[k]:>12s}' for k in columns)]
  rows = [('SR', ours), *((n, s) for n, s in baselines.items())]
  for i, pair in enumerate([*pairs, None]):
    for j, (label, scores) in enumerate(rows):
      name = (pair.name if pair else 'mean') if j == 0 else ''
      values = [scores[k][i] if pair else float(np.mean(scores[k])) for k in columns]
      lines.append(f'{name:{width}s} {label:8s}' + ''.join(f'{v:12.4f}' for v in values))
  return '\n'.join(lines)


def _draws_degradation(kind: str | None, model: str, scale: int) -> Any:
  """The 'draws' grid's degradation: `kind` at its default settings, or else the one the
  training workdir `model` ran with (its config.json)."""
  if kind is not None:
    return pipelines.make(pipelines.default_config(kind, scale), scale)
  path = os.path.join(model, 'config.json')
  if not os.path.isfile(path):
    raise ValueError(f'--grid draws needs --degradation, or a training workdir as -m (no {path})')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f)['degradation'])
  return pipelines.make(config, scale)


def cli_main(args: argparse.Namespace) -> int:
  try:
    loaded = {name: perceptual.load(name, getattr(args, name))
              for name in perceptual.METRICS if getattr(args, name)}
    upscaler = inference.load_model(args.model)
    degradation = None
    if args.grid == 'draws':
      degradation = _draws_degradation(args.degradation, args.model, upscaler.scale)
    draw_size = args.draw_size // upscaler.scale * upscaler.scale
    pairs = load_pairs(args.val, upscaler.scale, args.grid, upscaler.in_channels,
                       args.max_images, degradation, draw_size)
    crop = upscaler.scale if args.crop_border < 0 else args.crop_border
    validation = SRValidation(pairs, upscaler.scale, crop, False, grid_images=0,
                              perceptual_metrics=loaded, niqe=args.niqe)
    outs = validation.upscale_all(upscaler, progress=True)
    score = validation.score(outs, progress=True)
  except (ValueError, FileNotFoundError, images.ImageReadError) as e:
    print(f'condsr-jax evaluate: {e}', file=sys.stderr)
    return 2
  print(format_table(pairs, score, validation.baselines))
  if args.panels:
    os.makedirs(args.panels, exist_ok=True)
    for pair, bicubic, out in zip(pairs, validation.baseline_outputs['bicubic'], outs):
      path = os.path.join(args.panels, f'{pair.name.replace(os.sep, "_")}.png')
      images.write_image(path, comparison_panel(pair, bicubic, out, upscaler.scale,
                                                args.panel_size))
    print(f'{len(pairs)} panels written to {args.panels}')
  return 0
