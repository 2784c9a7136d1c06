"""Validation: PSNR/SSIM (BasicSR's numbers) of a model against bicubic upsampling, and image grids.

Validation pairs come from a paired folder (`gt/` + `lq/`) or from HR images degraded with a
fixed grid of degradations (blur sigma x noise x JPEG), so numbers are comparable across runs and
methods. LR inputs are reflect-padded to a multiple of 16 before the network so that a handful
of shapes cover any validation set (fewer compilations), and the output is cropped back.
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import degrade, images, metrics
from condsr_jax.data import pipeline, sources

BEST_FILE = 'best.json'
_PAD_MULTIPLE = 16

# Fixed degradation grids: (blur sigma, Gaussian noise sigma on 0..255, JPEG quality or 0).
GRIDS = {
    'bicubic': ((0.0, 0.0, 0),),
    'realesrgan': tuple((s, n, q) for s in (1.0, 2.0) for n in (0.0, 10.0) for q in (0, 60)),
    'classic': tuple((s, n, 0) for s in (0.6, 1.2, 1.8, 2.4) for n in (0.0, 15.0)),
}
# 'realesrgan_draws': `REALESRGAN_DRAWS` seeded draws of the run's own second-order degradation,
# applied to centre crops of the HR images.
REALESRGAN_DRAWS = 8
GRID_NAMES = (*GRIDS, 'realesrgan_draws')


def degrade_fixed(hr: np.ndarray, scale: int, sigma: float, noise: float, quality: int,
                  seed: int) -> np.ndarray:
  """One deterministic LR of an HR image (HWC float): Gaussian blur (21x21), MATLAB bicubic
  1/scale, Gaussian noise with a fixed key, JPEG, 8-bit rounding."""
  x = jnp.asarray(hr)[None]
  if sigma > 0:
    x = degrade.filter2d(x, degrade.bivariate_gaussian_kernel(21, sigma, sigma))
  x = jnp.clip(degrade.imresize_matlab(x, 1.0 / scale), 0.0, 1.0)
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


def realesrgan_draw_pairs(hr_images: list[tuple[str, np.ndarray]],
                          degradation: ml_collections.ConfigDict, scale: int,
                          draws: int = REALESRGAN_DRAWS, seed: int = 0) -> list[ValPair]:
  """Centre crops (crop_pad) of HR images x `draws` fixed second-order degradations drawn with
  `seed` from `degradation` (the training distribution), applied without USM sharpening."""
  from condsr_jax.degrade import realesrgan  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(degradation.to_dict())
  config.usm_weight = 0.0  # validation LR comes from the plain HR image
  deg = realesrgan.RealESRGANDegradation(config, scale)
  sampler = deg.param_sampler(crop=False)
  rng = np.random.default_rng(seed)
  records = [sampler(rng) for _ in range(draws)]
  run = jax.jit(lambda batch, key: deg.degrade(batch, key, crop=False)['lq'])
  pairs = []
  for i, (name, hr) in enumerate(hr_images):
    gt = centre_crop(hr, config.crop_pad)
    for j, record in enumerate(records):
      batch = {'gt': gt[None], **{k: np.asarray(v)[None] for k, v in record.items()}}
      lq = np.asarray(run(batch, jax.random.key(seed + 1000 * i + j)))[0]
      pairs.append(ValPair(f'{name}@draw{j}', lq, gt))
  return pairs


def load_pairs(val: str, scale: int, grid: str = 'realesrgan', channels: int = 3,
               max_images: int = 0, degradation: ml_collections.ConfigDict | None = None
               ) -> list[ValPair]:
  """Paired folder (has `gt/` and `lq/`) or HR folder x degradation grid -> validation pairs.

  `grid='realesrgan_draws'` needs the run's `degradation` config (kind 'realesrgan').
  """
  if os.path.isdir(os.path.join(val, 'gt')) and os.path.isdir(os.path.join(val, 'lq')):
    source = sources.PairedFolderSource(os.path.join(val, 'gt'), os.path.join(val, 'lq'), scale,
                                        channels=channels, on_bad_image='stop')
    ds = pipeline.make_eval_dataset(source)
    pairs = [ValPair(str(r['key']), r['lq'], r['gt']) for r in ds]
    return pairs[:max_images] if max_images else pairs
  if grid not in GRID_NAMES:
    raise ValueError(f'unknown degradation grid {grid!r}; known: {sorted(GRID_NAMES)}')
  source = sources.FolderSource(val, channels=channels, on_bad_image='stop')
  ds = pipeline.make_eval_dataset(source, multiple_of=scale)
  if grid == 'realesrgan_draws':
    if degradation is None or degradation.kind != 'realesrgan':
      raise ValueError("eval.grid 'realesrgan_draws' needs degradation.kind 'realesrgan'")
    pairs = realesrgan_draw_pairs([(str(r['key']), r['gt']) for r in ds], degradation, scale)
    return pairs[:max_images] if max_images else pairs
  pairs = []
  for i, r in enumerate(ds):
    for j, (sigma, noise, quality) in enumerate(GRIDS[grid]):
      name = f'{r["key"]}@blur{sigma:g}_noise{noise:g}_jpeg{quality}'
      lq = degrade_fixed(r['gt'], scale, sigma, noise, quality, seed=1000 * i + j)
      pairs.append(ValPair(name, lq.astype(np.float32), r['gt']))
  return pairs[:max_images] if max_images else pairs


def bicubic_upsample(lq: np.ndarray, scale: int) -> np.ndarray:
  """The baseline: PyTorch-style bicubic upsampling (A = -0.75) by `scale`."""
  return np.asarray(degrade.interpolate(jnp.asarray(lq)[None], scale_factor=scale,
                                        mode='bicubic'))[0]


def _panel(lq: np.ndarray, sr: np.ndarray, gt: np.ndarray, scale: int) -> np.ndarray:
  up = np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1)
  return images.from_float(np.concatenate([up, np.clip(sr, 0, 1), gt], axis=1))


class Evaluator:
  """Runs `super_resolve(params, lq)` over fixed validation pairs and reports BasicSR metrics."""

  def __init__(self, pairs: list[ValPair], scale: int, crop_border: int, y_channel: bool,
               grid_images: int = 4):
    self.pairs, self.scale = pairs, scale
    self.crop_border, self.y_channel, self.grid_images = crop_border, y_channel, grid_images
    self._fns: dict[int, Callable] = {}
    self.bicubic = self.score([bicubic_upsample(p.lq, scale) for p in pairs])

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Evaluator':
    e = config.eval
    pairs = load_pairs(e.val, config.scale, e.grid, config.data.channels, e.max_images,
                       config.degradation)
    crop = config.scale if e.crop_border < 0 else e.crop_border
    return cls(pairs, config.scale, crop, e.y_channel, e.grid_images)

  def score(self, outputs: list[np.ndarray]) -> dict[str, Any]:
    """Mean PSNR/SSIM (BasicSR validation convention) of `outputs` against the pairs' GT."""
    psnrs, ssims = [], []
    for out, pair in zip(outputs, self.pairs):
      m = metrics.validation_metrics(out[None], pair.gt[None], self.crop_border, self.y_channel)
      psnrs.append(float(m['psnr'][0]))
      ssims.append(float(m['ssim'][0]))
    return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'per_image': psnrs}

  def super_resolve_all(self, super_resolve: Callable, params: Any) -> list[np.ndarray]:
    fn = self._fns.setdefault(id(super_resolve), jax.jit(super_resolve))
    outs = []
    for pair in self.pairs:
      h, w = pair.lq.shape[:2]
      lq = np.pad(pair.lq, ((0, -h % _PAD_MULTIPLE), (0, -w % _PAD_MULTIPLE), (0, 0)),
                  mode='reflect')
      sr = np.asarray(fn(params, jnp.asarray(lq)[None]))[0]
      outs.append(sr[: h * self.scale, : w * self.scale])
    return outs

  def run(self, method: Any, state: Any, writer: Any, step: int) -> dict[str, float]:
    """Scores the method's inference weights; writes scalars and LR|SR|HR panels."""
    params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)),
                          method.inference_params(state))
    outs = self.super_resolve_all(method.super_resolve, params)
    score = self.score(outs)
    summary = {'psnr': score['psnr'], 'ssim': score['ssim'],
               'psnr_bicubic': self.bicubic['psnr'], 'ssim_bicubic': self.bicubic['ssim']}
    writer.write_scalars(step, {f'eval/{k}': v for k, v in summary.items()})
    panels = {f'eval/{p.name}': _panel(p.lq, o, p.gt, self.scale)
              for p, o in list(zip(self.pairs, outs))[: self.grid_images]}
    if panels:
      writer.write_images(step, panels)
    return summary


def read_best(workdir: str) -> float:
  path = os.path.join(workdir, BEST_FILE)
  if not os.path.isfile(path):
    return -np.inf
  with open(path) as f:
    return float(json.load(f)['psnr'])


def write_best(workdir: str, psnr: float, step: int) -> None:
  with open(os.path.join(workdir, BEST_FILE), 'w') as f:
    json.dump({'psnr': psnr, 'step': int(step)}, f)


# ---------------------------------------------------------------------------------------------
# Command line.


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('val', help='paired folder (gt/ + lq/) or an HR folder (degraded by --grid)')
  parser.add_argument('-m', '--model', required=True,
                      help='model file, training workdir, or PyTorch .pth/.safetensors')
  parser.add_argument('--grid', default='realesrgan', choices=sorted(GRID_NAMES),
                      help='fixed degradations for an HR-only folder')
  parser.add_argument('--crop-pad', type=int, default=400,
                      help="HR centre-crop size of the 'realesrgan_draws' grid")
  parser.add_argument('--crop-border', type=int, default=-1, help='default: the model scale')
  parser.add_argument('--y-channel', action='store_true', help='measure on the Y channel')
  parser.add_argument('--max-images', type=int, default=0)


def cli_main(args: argparse.Namespace) -> int:
  from condsr_jax import inference  # pylint: disable=g-import-not-at-top
  try:
    upscaler = inference.load_model(args.model)
    degradation = None
    if args.grid == 'realesrgan_draws':
      from condsr_jax.degrade import realesrgan  # pylint: disable=g-import-not-at-top
      degradation = realesrgan.default_config(upscaler.scale)
      degradation.crop_pad = args.crop_pad
      degradation.gt_size = min(degradation.gt_size, args.crop_pad)
    pairs = load_pairs(args.val, upscaler.scale, args.grid, upscaler.in_channels,
                       args.max_images, degradation)
  except (ValueError, FileNotFoundError, images.ImageReadError) as e:
    print(f'condsr-jax evaluate: {e}', file=sys.stderr)
    return 2
  crop = upscaler.scale if args.crop_border < 0 else args.crop_border
  evaluator = Evaluator(pairs, upscaler.scale, crop, args.y_channel, grid_images=0)
  outs = [upscaler.upscale_float(p.lq) for p in pairs]
  score = evaluator.score(outs)
  for pair, sr_db, bic_db in zip(pairs, score['per_image'], evaluator.bicubic['per_image']):
    print(f'{pair.name:60s} PSNR {sr_db:7.3f} dB   bicubic {bic_db:7.3f} dB')
  print(f'{"mean":60s} PSNR {score["psnr"]:7.3f} dB   bicubic {evaluator.bicubic["psnr"]:7.3f} dB'
        f'   SSIM {score["ssim"]:.4f} (bicubic {evaluator.bicubic["ssim"]:.4f})')
  return 0
