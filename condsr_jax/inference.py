"""Upscaling images of any size with a trained or converted model; the `condsr-jax upscale` command.

Large images go through fixed-shape tiles (one compilation for every tile of every image) whose
outputs are blended with weights that fall to ~0 at inner tile edges, so tiles leave no seams.
Gray, RGBA (alpha upscaled by the model too) and 16-bit images keep their format. Conditional
models compute one condition per image, from the image itself or from support images, and reuse
it for every tile.
"""

import argparse
import dataclasses
import functools
import os
import sys
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from condsr_jax import images, models
from condsr_jax.degrade import resize
from condsr_jax.nn import conditional

# Luma weights OpenCV uses for BGR2GRAY: the reference turns 3-channel outputs back to gray so.
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def load_model(path: str | os.PathLike, *, dtype: str = 'float32', arch: str | None = None
               ) -> 'Upscaler':
  """An `Upscaler` from a model file, a training workdir or a PyTorch checkpoint (`arch`: skip
  its architecture detection)."""
  spec, variables = models.load_weights(path, arch=arch)
  return Upscaler(spec, variables, dtype=dtype)


def _on_device(variables: Any) -> Any:
  """The variables on the default device, however they were placed: one placement, one compile."""
  return jax.device_put(jax.device_get(variables))


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Fewest evenly spaced tile starts covering [0, length) with at least `overlap` px shared."""
  if length <= tile:
    return [0]
  n = -(-(length - overlap) // (tile - overlap))
  return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> np.ndarray:
  """1D blending weight: linear from ~0 to 1 over `ramp` px at the sides that touch other tiles."""
  w = np.ones(length, np.float32)
  if ramp > 0:
    edge = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
    if rise:
      w[:ramp] = np.minimum(w[:ramp], edge)
    if fall:
      w[-ramp:] = np.minimum(w[-ramp:], edge[::-1])
  return w


@dataclasses.dataclass
class Upscaler:
  """A model bound to its weights, ready to upscale HWC numpy images of any size.

  A conditional model (one with `condition_from_lr`, see `condsr_jax.nn.conditional`) gets its
  condition once per image, then upscales every tile of the image under it.
  """
  spec: models.ModelSpec
  variables: Any
  dtype: str = 'float32'
  tile_batch: int = 4

  def __post_init__(self):
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    self.module = self.spec.build(dtype=jnp.dtype(self.dtype))
    self.scale = self.spec.scale
    if self.scale is None:
      raise ValueError(f'{self.spec.arch} is not a super-resolution network')
    self.in_channels = self.spec.in_channels
    self.multiple = getattr(self.module, 'input_multiple', 1)
    self.conditional = hasattr(self.module, 'condition_from_lr')
    self.variables = _on_device(self.variables)
    if self.conditional:
      self._forward = jax.jit(functools.partial(self.module.apply, method='upscale'))
      self._condition_from_lr = jax.jit(
          lambda variables, lr, patch: self.module.clone(support_patch=patch).apply(
              variables, lr, method='condition_from_lr'), static_argnums=2)
      self._condition_from_support = jax.jit(
          functools.partial(self.module.apply, method='condition_from_support'))
    else:
      self._forward = jax.jit(self.module.apply)

  def set_variables(self, variables: Any) -> None:
    """Swaps in other weights of the same architecture, keeping every compiled function."""
    new = _on_device(variables)
    if _abstract(new) != _abstract(self.variables):
      raise ValueError(f'the variables do not fit this {self.spec.arch} '
                       '(other shapes, dtypes or structure)')
    self.variables = new

  def condition(self, img: np.ndarray, *, support: Sequence[np.ndarray] | None = None,
                support_patch: int | None = None) -> jax.Array:
    """A conditional model's condition `[1, D]` for `img` (HWC float in [0, 1]).

    From `support` images sharing the image's degradation when given, else from crops of the
    image itself; `support_patch` (default: the model's) is the crop size in input pixels.
    """
    patch = support_patch or self.module.support_patch
    if support is not None:
      crops = conditional.support_crops([self._condition_input(s) for s in support],
                                        self.module.support_size, patch)
      return self._condition_from_support(self.variables, jnp.asarray(crops))
    lr = jnp.asarray(self._condition_input(img)[None])
    return self._condition_from_lr(self.variables, lr, patch)

  def _condition_input(self, img: np.ndarray) -> np.ndarray:
    """An image's colour planes in the model's channel count (luma for one-channel models)."""
    x = img[:, :, :3]
    if self.in_channels == 1 and x.shape[2] == 3:
      return x @ _GRAY_WEIGHTS[:, None]
    return self._model_channels(x)

  def _run(self, x: np.ndarray, cond: jax.Array | None = None) -> np.ndarray:
    """NHWC float32 -> NHWC float32 through the network, padding to the input multiple."""
    h, w = x.shape[1:3]
    ph, pw = -h % self.multiple, -w % self.multiple
    if ph or pw:
      x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='reflect')
    args = (jnp.asarray(x),) + ((cond,) if self.conditional else ())
    y = np.asarray(self._forward(self.variables, *args))
    return y[:, : h * self.scale, : w * self.scale]

  def _run_tiled(self, x: np.ndarray, tile: int, overlap: int,
                 progress: Callable[[int], None] | None, cond: jax.Array | None) -> np.ndarray:
    """HWC -> HWC, in tile x tile crops batched `tile_batch` at a time, blended over the overlap."""
    s, c = self.scale, x.shape[2]
    h, w = x.shape[:2]
    ph, pw = max(tile - h, 0), max(tile - w, 0)  # images smaller than a tile: pad, crop later
    if ph or pw:
      x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode='reflect')
    hp, wp = x.shape[:2]
    overlap = min(overlap, tile // 2)
    boxes = [(y0, x0) for y0 in _axis_starts(hp, tile, overlap)
             for x0 in _axis_starts(wp, tile, overlap)]
    acc = np.zeros((hp * s, wp * s, c), np.float32)
    weight = np.zeros((hp * s, wp * s, 1), np.float32)
    for i in range(0, len(boxes), self.tile_batch):
      chunk = boxes[i: i + self.tile_batch]
      batch = np.stack([x[y0: y0 + tile, x0: x0 + tile] for y0, x0 in chunk])
      if len(chunk) < self.tile_batch:  # keep the batch shape fixed: one compilation
        batch = np.concatenate([batch, np.repeat(batch[-1:], self.tile_batch - len(chunk), 0)])
      out = self._run(batch, cond)
      for (y0, x0), o in zip(chunk, out):
        wy = _ramp(tile * s, overlap * s, y0 > 0, y0 + tile < hp)
        wx = _ramp(tile * s, overlap * s, x0 > 0, x0 + tile < wp)
        wt = (wy[:, None] * wx[None, :])[:, :, None]
        acc[y0 * s: (y0 + tile) * s, x0 * s: (x0 + tile) * s] += o * wt
        weight[y0 * s: (y0 + tile) * s, x0 * s: (x0 + tile) * s] += wt
      if progress:
        progress(len(chunk))
    return (acc / weight)[: h * s, : w * s]

  def num_tiles(self, h: int, w: int, tile: int, overlap: int) -> int:
    if not tile or (h <= tile and w <= tile):
      return 0
    overlap = min(overlap, tile // 2)
    return len(_axis_starts(max(h, tile), tile, overlap)) * len(_axis_starts(max(w, tile), tile,
                                                                             overlap))

  def _sr_planes(self, x: np.ndarray, tile: int, overlap: int,
                 progress: Callable[[int], None] | None, cond: jax.Array | None) -> np.ndarray:
    """Float HWC with the model's channel count -> upscaled HWC."""
    h, w = x.shape[:2]
    if tile and (h > tile or w > tile):
      return self._run_tiled(x, tile, overlap, progress, cond)
    return self._run(x[None], cond)[0]

  def _model_channels(self, x: np.ndarray) -> np.ndarray:
    return np.repeat(x, self.in_channels, 2) if x.shape[2] == 1 else x

  def upscale_float(self, img: np.ndarray, *, tile: int = 0, tile_overlap: int = 16,
                    support: Sequence[np.ndarray] | None = None, support_patch: int | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """HWC float32 in [0, 1] with 1, 3 or 4 channels -> upscaled HWC float32 (not clipped).

    Conditional models compute their condition once per image (`condition`), from `support`
    images sharing the input's degradation or, by default, from crops of the input itself.
    """
    c = img.shape[2]
    color, alpha = (img[:, :, :3], img[:, :, 3:]) if c == 4 else (img, None)
    cond = None
    if self.conditional:
      cond = self.condition(color, support=support, support_patch=support_patch)
    run = functools.partial(self._sr_planes, tile=tile, overlap=tile_overlap, progress=progress,
                            cond=cond)
    if self.in_channels == 1:  # one-channel model: every channel on its own
      out = np.concatenate([run(color[:, :, i:i + 1]) for i in range(color.shape[2])], axis=2)
    elif color.shape[2] == 1:
      out = run(self._model_channels(color))[:, :, :3] @ _GRAY_WEIGHTS[:, None]
    else:
      out = run(color)
    if alpha is not None:
      a = alpha if self.in_channels == 1 else self._model_channels(alpha)
      a = run(a)
      a = a if self.in_channels == 1 else a[:, :, :3] @ _GRAY_WEIGHTS[:, None]
      out = np.concatenate([out, a], axis=2)
    return out

  def upscale(self, img: np.ndarray, *, tile: int = 0, tile_overlap: int = 16,
              outscale: float | None = None, support: Sequence[np.ndarray] | None = None,
              support_patch: int | None = None, progress: Callable[[int], None] | None = None
              ) -> np.ndarray:
    """Upscales an HWC (or HW) image; uint8/uint16 in, the same type out (float in -> float out).

    `tile`: process in tile x tile input crops when the image is larger (0: whole image).
    `outscale`: final size = input size x outscale (Lanczos after the network, the reference
    inference script's `--outscale`).
    `support`: conditional models only, see `upscale_float`.
    """
    squeeze = img.ndim == 2
    x = img[:, :, None] if squeeze else img
    if x.dtype in (np.uint8, np.uint16):
      xf = images.to_float(x)
    else:
      xf = np.asarray(x, np.float32)
    out = self.upscale_float(xf, tile=tile, tile_overlap=tile_overlap, support=support,
                             support_patch=support_patch, progress=progress)
    if outscale is not None and outscale != self.scale:
      h, w = x.shape[:2]
      size = (max(1, int(w * outscale)), max(1, int(h * outscale)))
      out = cv2.resize(out, size, interpolation=cv2.INTER_LANCZOS4)
      out = out if out.ndim == 3 else out[:, :, None]
    if x.dtype in (np.uint8, np.uint16):
      out = images.from_float(out, x.dtype)
    else:
      out = np.clip(out, 0, 1)
    return out[:, :, 0] if squeeze else out


# ---------------------------------------------------------------------------------------------
# Command line.


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('inputs', nargs='+', help='image files or folders (searched recursively)')
  parser.add_argument('-m', '--model', required=True,
                      help='model file, orbax export, training workdir, or PyTorch '
                      '.pth/.safetensors')
  parser.add_argument('-o', '--output', default='results', help='output folder')
  parser.add_argument('--tile', type=int, default=512,
                      help='tile size in input pixels for images larger than it; 0: whole image')
  parser.add_argument('--tile-overlap', type=int, default=16,
                      help='overlap of neighbouring tiles in input pixels (blended)')
  parser.add_argument('--outscale', type=float, default=None,
                      help='final upsampling factor (default: the network scale)')
  parser.add_argument('--suffix', default='out', help="output name: NAME_SUFFIX.EXT ('' for none)")
  parser.add_argument('--ext', default='auto', choices=['auto', 'png', 'jpg'],
                      help='output format; auto keeps the input format (RGBA and 16-bit: PNG)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--arch', default=None, help='architecture of a .pth (default: detect)')
  parser.add_argument('--support', nargs='+', default=None,
                      help='conditional models: images or folders sharing the inputs\' '
                      'degradation; the condition comes from their crops (default: crops of '
                      'each input image itself)')
  parser.add_argument('--support-patch', type=int, default=None,
                      help="support crop size in input pixels (default: the model's)")
  parser.add_argument('--compare', type=int, default=0, metavar='SIZE',
                      help='also write NAME_compare.png: the central SIZE x SIZE output crop '
                      'next to the same crop of bicubic upsampling (0: off)')


def _output_path(path: str, root: str, outdir: str, suffix: str, ext: str, img: np.ndarray) -> str:
  rel = os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)
  stem, in_ext = os.path.splitext(rel)
  if ext == 'auto':
    needs_png = img.dtype == np.uint16 or (img.ndim == 3 and img.shape[2] == 4)
    out_ext = '.png' if needs_png else in_ext
  else:
    out_ext = '.' + ext
  return os.path.join(outdir, f'{stem}_{suffix}{out_ext}' if suffix else f'{stem}{out_ext}')


def comparison_crop(img: np.ndarray, out: np.ndarray, size: int) -> np.ndarray:
  """bicubic | model: the central `size` x `size` crop of the output and of the input upsampled
  to the output's size with the bicubic that validation compares against, labelled, 8-bit RGB."""
  h, w = out.shape[:2]
  bicubic = np.asarray(resize.interpolate(jnp.asarray(images.to_float(img))[None], size=(h, w),
                                          mode='bicubic'))[0]
  size = min(size, h, w)
  top, left = (h - size) // 2, (w - size) // 2
  return np.concatenate([labelled(images.from_float(images.to_rgb(im[top:top + size,
                                                                     left:left + size])), label)
                         for label, im in (('bicubic', bicubic), ('model', images.to_float(out)))],
                        axis=1)


def labelled(img: np.ndarray, label: str) -> np.ndarray:
  """An 8-bit RGB image with `label` written in its top-left corner."""
  return cv2.putText(np.ascontiguousarray(img), label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                     (255, 255, 0), 1, cv2.LINE_AA)


def cli_main(args: argparse.Namespace) -> int:
  try:
    upscaler = load_model(args.model, dtype=args.dtype, arch=args.arch)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f'condsr-jax upscale: {e}', file=sys.stderr)
    return 2
  jobs, failed = [], []
  for root in args.inputs:
    try:
      jobs += [(p, root) for p in images.list_images(root)]
    except FileNotFoundError as e:
      failed.append((root, str(e)))
  if not jobs and not failed:
    print(f'condsr-jax upscale: no images found in {args.inputs}', file=sys.stderr)
    return 2
  support = None
  if args.support:
    if not upscaler.conditional:
      print(f'condsr-jax upscale: --support given but {upscaler.spec.arch} is not conditional',
            file=sys.stderr)
      return 2
    try:
      support = [images.to_float(images.read_image(p)) for root in args.support
                 for p in images.list_images(root)]
    except (FileNotFoundError, images.ImageReadError) as e:
      print(f'condsr-jax upscale: support: {e}', file=sys.stderr)
      return 2
  written = 0
  bar = tqdm.tqdm(jobs, unit='img', disable=None)
  for path, root in bar:
    bar.set_postfix_str(os.path.basename(path))
    try:
      img = images.read_image(path)
    except images.ImageReadError as e:
      failed.append((path, e.reason))
      continue
    n = upscaler.num_tiles(*img.shape[:2], args.tile, args.tile_overlap)
    passes = 1 + (img.shape[2] == 4)
    with tqdm.tqdm(total=n * passes, unit='tile', leave=False, disable=None if n else True) as tb:
      out = upscaler.upscale(img, tile=args.tile, tile_overlap=args.tile_overlap,
                             outscale=args.outscale, support=support,
                             support_patch=args.support_patch, progress=tb.update)
    dest = _output_path(path, root, args.output, args.suffix, args.ext, img)
    images.write_image(dest, out)
    if args.compare:
      images.write_image(_output_path(path, root, args.output, 'compare', 'png', img),
                         comparison_crop(img, out, args.compare))
    written += 1
  for path, reason in failed:
    print(f'condsr-jax upscale: skipped {path}: {reason}', file=sys.stderr)
  print(f'{written} image(s) written to {args.output}'
        + (f'; {len(failed)} failed' if failed else ''))
  return 1 if failed else 0
