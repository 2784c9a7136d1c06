"""Models out to the formats other tools read: `condsr-jax export MODEL OUT --format ...`.

- `pth` / `safetensors`: the PyTorch original's key names and layouts, the inverse of
  `condsr_jax.convert` (params/body_0/conv1/kernel HWIO -> body.0.conv1.weight OIHW), under
  `params_ema` in a `.pth` like Real-ESRGAN's releases (`params` for a discriminator), with the
  model spec beside the weights (what a state dict cannot say, e.g. SRVGGNetCompact's skip);
  written without torch. Every export is converted back and compared before it is written, so
  what leaves here comes back unchanged.
- `orbax`: an orbax checkpoint of the variables next to the model spec (`condsr_jax.models`).
- `onnx`: the forward pass with dynamic height and width, through jax2onnx (the `[onnx]` extra).
"""

import argparse
import os
import re
import sys
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from condsr_jax import convert, models, pth

FORMATS = ('pth', 'safetensors', 'orbax', 'onnx')
_SUFFIX_FORMATS = {'.pth': 'pth', '.pt': 'pth', '.safetensors': 'safetensors', '.onnx': 'onnx'}
# Where a .pth keeps the weights, as Real-ESRGAN's releases: an SR network's (EMA) weights under
# params_ema, a discriminator's under params (RealESRGAN_x4plus_netD.pth; BasicSR's param_key_d).
PTH_PARAM_KEYS = {True: 'params_ema', False: 'params'}

# Flax leaf -> torch leaf, the inverse of `convert`'s rules (kernel under spectral norm aside).
_TORCH_LEAVES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
                 ('params', 'alpha'): 'weight', ('params', 'weight'): 'weight',
                 ('params', 'bias'): 'bias', ('spectral', 'u'): 'weight_u',
                 ('spectral', 'v'): 'weight_v', ('batch_stats', 'mean'): 'running_mean',
                 ('batch_stats', 'var'): 'running_var'}


def torch_key(path: tuple[str, ...], leaf: str) -> str:
  """(('body_0', 'rdb1', 'conv1'), 'weight') -> 'body.0.rdb1.conv1.weight' ('tail_0_0' ->
  'tail.0.0'), the inverse of `convert.torch_module_path`."""
  return '.'.join([_INDEX.sub(r'.\1', m) for m in path] + [leaf])


_INDEX = re.compile(r'_(\d+)(?=(_\d+)*$)')


def _to_torch_layout(value: np.ndarray, flax_leaf: str) -> np.ndarray:
  if flax_leaf == 'kernel' and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if flax_leaf == 'kernel' and value.ndim == 2:
    return value.T  # Dense [in, out] -> Linear [out, in]
  return value


def torch_state_dict(variables: Any) -> dict[str, np.ndarray]:
  """Flax variables as the PyTorch state dict `convert` maps onto them: torch key names and
  layouts, spectral-norm kernels as `weight_orig`, BatchNorm statistics as `running_*` with a
  `num_batches_tracked` (0: flax does not count)."""
  flat = traverse_util.flatten_dict(jax.device_get(variables))
  spectral = {p[1:-1] for p in flat if p[0] == 'spectral'}
  sd: dict[str, np.ndarray] = {}
  for (col, *mods, leaf), value in flat.items():
    if col == 'params' and leaf == 'kernel' and tuple(mods) in spectral:
      name = 'weight_orig'
    else:
      name = _TORCH_LEAVES.get((col, leaf), leaf)
    sd[torch_key(tuple(mods), name)] = np.asarray(_to_torch_layout(np.asarray(value), leaf),
                                                  order='C')
    if col == 'batch_stats' and leaf == 'var':
      sd[torch_key(tuple(mods), 'num_batches_tracked')] = np.zeros((), np.int64)
  return sd


def variables_to_state_dict(spec: models.ModelSpec, variables: Any) -> dict[str, np.ndarray]:
  """The state dict of `spec`'s PyTorch original holding `variables`: `torch_state_dict` plus
  the constants the flax module computes instead of storing (the architecture's
  `torch_constants`), so that the original loads it strictly."""
  sd = torch_state_dict(variables)
  if spec.architecture.torch_constants is not None:
    sd.update(spec.architecture.torch_constants(spec.kwargs))
  return sd


def check_round_trip(spec: models.ModelSpec, variables: Any, sd: dict[str, np.ndarray]) -> None:
  """Converts `sd` back and requires exactly `variables`: an export never loses a value."""
  back = traverse_util.flatten_dict(convert.state_dict_to_variables(sd, spec))
  want = traverse_util.flatten_dict(jax.device_get(variables))
  if set(back) != set(want):
    raise AssertionError(f'export of {spec.arch} does not convert back: '
                         f'{sorted(set(back) ^ set(want))[:10]}')
  for k, v in want.items():
    if not np.array_equal(np.asarray(back[k]), np.asarray(v, back[k].dtype)):
      raise AssertionError(f'export of {spec.arch} changes {"/".join(k)}')


def compatibility_notes(spec: models.ModelSpec) -> list[str]:
  """What the PyTorch side will do differently with this model (the architecture's
  `torch_notes`); condsr_jax itself reads the spec stored with the export."""
  notes = spec.architecture.torch_notes
  return list(notes(spec.kwargs)) if notes is not None else []


def export(src: str | os.PathLike, dst: str | os.PathLike, fmt: str | None = None, *,
           arch: str | None = None, onnx_layout: str = 'nchw') -> tuple[models.ModelSpec, str]:
  """Writes the model at `src` (model file, workdir or checkpoint) to `dst` as `fmt` (default:
  from `dst`'s suffix, a directory for orbax); returns (spec, format)."""
  dst = os.fspath(dst)
  fmt = fmt or _SUFFIX_FORMATS.get(os.path.splitext(dst)[1].lower(), 'orbax')
  if fmt not in FORMATS:
    raise ValueError(f'unknown format {fmt!r}; one of {", ".join(FORMATS)}')
  spec, variables = models.load_weights(src, arch=arch)
  if fmt in ('pth', 'safetensors'):
    sd = variables_to_state_dict(spec, variables)
    check_round_trip(spec, variables, sd)
    if fmt == 'pth':
      pth.write(dst, {PTH_PARAM_KEYS[spec.scale is not None]: sd,
                      convert.SPEC_KEY: spec.to_json()})
    else:
      import safetensors.numpy  # pylint: disable=g-import-not-at-top
      safetensors.numpy.save_file(dict(sd), dst, metadata={convert.SPEC_KEY: spec.to_json()})
  elif fmt == 'orbax':
    models.save_orbax(dst, spec, variables, {'exported_from': os.path.basename(os.fspath(src))})
  else:
    from condsr_jax import onnx_export  # pylint: disable=g-import-not-at-top
    onnx_export.save_onnx(dst, spec, variables, onnx_layout)
  return spec, fmt


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('model',
                      help='model file, orbax export, training workdir or PyTorch checkpoint')
  parser.add_argument('out', help='file to write (a directory for orbax)')
  parser.add_argument('--format', default=None, choices=FORMATS,
                      help='default: from the suffix of OUT (.pth/.pt, .safetensors, .onnx; '
                      'anything else: an orbax directory)')
  parser.add_argument('--arch', default=None, help='architecture of a checkpoint (default: detect)')
  parser.add_argument('--onnx-layout', default='nchw', choices=('nchw', 'nhwc'),
                      help="the ONNX graph's image layout (nchw: as PyTorch's ONNX exports)")


def cli_main(args: argparse.Namespace) -> int:
  try:
    spec, fmt = export(args.model, args.out, args.format, arch=args.arch,
                       onnx_layout=args.onnx_layout)
  except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
    print(f'condsr-jax export: {e}', file=sys.stderr)
    return 2
  print(f'{args.model} -> {args.out}: {spec.arch} {spec.kwargs} as {fmt}')
  if fmt in ('pth', 'safetensors'):
    for note in compatibility_notes(spec):
      print(f'note: {note}', file=sys.stderr)
  return 0
