"""PyTorch checkpoints to Flax variables.

Reads `.pth` without torch and without running pickled code (`condsr_jax.pth`), `.safetensors`
and `.npz`; detects the architecture with the detectors the networks register
(`condsr_jax.nn.registry`); maps keys generically
(`body.0.rdb1.conv1.weight` -> params/body_0/rdb1/conv1/kernel, OIHW -> HWIO, linear [out, in]
-> [in, out]) guided by the target module's variable tree, and reports missing, unexpected and
mis-shaped keys together.
"""

import argparse
import ast
import os
import sys
from typing import Any, Mapping

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from condsr_jax import models, pth
from condsr_jax.nn import registry

StateDict = dict[str, np.ndarray]

# ---------------------------------------------------------------------------------------------
# Reading files.


def _read_npz(path: str) -> StateDict:
  with np.load(path, allow_pickle=False) as d:
    if any(k.startswith('sd/') for k in d.files):  # our fixture layout: sd/, in/, out/, meta
      return {k[3:]: d[k] for k in d.files if k.startswith('sd/')}
    return {k: d[k] for k in d.files}


PARAM_KEYS = ('params_ema', 'params', 'state_dict', 'model', 'net', 'generator')


# An exported checkpoint's model spec: a .pth's top-level entry, a safetensors metadata field.
SPEC_KEY = 'condsr_jax_spec'


def read_checkpoint(path: str | os.PathLike, param_key: str | None = None
                    ) -> tuple[StateDict, models.ModelSpec | None]:
  """(flat {torch key: numpy array}, the model spec it carries if `condsr-jax export` wrote it)
  from .pth/.pt/.ckpt, .safetensors or .npz.

  Checkpoints that nest their weights pick `param_key`, else the first of `PARAM_KEYS` present
  (`params_ema` before `params`, as Real-ESRGAN's loader). A leading `module.` (DataParallel)
  is stripped.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file')
  ext = os.path.splitext(path)[1].lower()
  spec_json = None
  if ext == '.safetensors':
    obj = safetensors.numpy.load_file(path)
    with safetensors.safe_open(path, 'np') as f:
      spec_json = (f.metadata() or {}).get(SPEC_KEY)
  elif ext == '.npz':
    obj = _read_npz(path)
  else:
    obj = pth.read(path)
    spec_json = obj.get(SPEC_KEY) if isinstance(obj, Mapping) else None
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a dict of tensors, got {type(obj).__name__}')
  if param_key and not isinstance(obj.get(param_key), Mapping):
    raise KeyError(f'{path}: no {param_key!r} entry; top-level keys: {sorted(obj)[:20]}')
  nested = [k for k, v in obj.items() if isinstance(v, Mapping)]
  keys = [param_key] if param_key else [k for k in PARAM_KEYS if k in nested]
  if not keys and len(nested) == 1 and not any(isinstance(v, np.ndarray) for v in obj.values()):
    keys = nested  # a single nested dict under an unusual name
  if keys:
    obj = obj[keys[0]]
  sd = {}
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      continue
    sd[k[len('module.'):] if k.startswith('module.') else k] = v
  if not sd:
    raise ValueError(f'{path}: no tensors found; top-level keys: {sorted(obj)[:20]}')
  return sd, models.ModelSpec.from_json(spec_json) if isinstance(spec_json, str) else None


def read_state_dict(path: str | os.PathLike, param_key: str | None = None) -> StateDict:
  """The flat state dict of a checkpoint file (`read_checkpoint` without the spec)."""
  return read_checkpoint(path, param_key)[0]


# ---------------------------------------------------------------------------------------------
# Architecture detection.


def detect_architecture(sd: StateDict, arch: str | None = None) -> models.ModelSpec:
  """Infers the architecture (or reads the arguments of the given one) from keys and shapes.

  Every registered detector whose keys are all present matches; the one with the most keys
  (the most specific) wins, so registration order never matters. With `arch` given, an
  architecture without a detector gets its constructor defaults.
  """
  if arch is not None:
    a = registry.get(arch)
    if a.detect is None:
      return models.ModelSpec(arch)
    absent = [k for k in a.detect_keys if k not in sd]
    if absent:
      raise ValueError(f'not a {arch} state dict: no {", ".join(absent)}')
    return models.ModelSpec(arch, a.detect(sd))
  matches = [a for a in registry.ARCHITECTURES.values()
             if a.detect is not None and all(k in sd for k in a.detect_keys)]
  if matches:
    most = max(len(a.detect_keys) for a in matches)
    best = sorted(a.name for a in matches if len(a.detect_keys) == most)
    if len(best) > 1:
      raise ValueError(f'ambiguous state dict: it fits {" and ".join(best)} equally; pass --arch')
    return models.ModelSpec(best[0], registry.get(best[0]).detect(sd))
  shown = ', '.join(f'{k} {tuple(v.shape)}' for k, v in list(sd.items())[:12])
  known = ', '.join(sorted(a.name for a in registry.ARCHITECTURES.values() if a.detect))
  raise ValueError(f'unknown architecture: {len(sd)} tensors, first ones: {shown}. '
                   f'Known: {known}; pass --arch to choose one')


# ---------------------------------------------------------------------------------------------
# Key mapping.


def torch_module_path(key: str) -> tuple[tuple[str, ...], str]:
  """'body.0.rdb1.conv1.weight' -> (('body_0', 'rdb1', 'conv1'), 'weight')."""
  *mods, leaf = key.split('.')
  path: list[str] = []
  for m in mods:
    if m.isdigit() and path:
      path[-1] = f'{path[-1]}_{m}'
    else:
      path.append(m)
  return tuple(path), leaf


# torch leaf name -> candidate (collection, flax leaf) pairs, tried in order.
_LEAF_RULES = {
    'weight': (('params', 'kernel'), ('params', 'scale'), ('params', 'alpha'), ('params', 'weight')),
    'weight_orig': (('params', 'kernel'),),
    'bias': (('params', 'bias'),),
    'weight_u': (('spectral', 'u'),),
    'weight_v': (('spectral', 'v'),),
    'running_mean': (('batch_stats', 'mean'),),
    'running_var': (('batch_stats', 'var'),),
}
_IGNORED_LEAVES = ('num_batches_tracked',)


def _to_flax_layout(value: np.ndarray, flax_leaf: str, target_ndim: int) -> np.ndarray:
  if flax_leaf == 'kernel' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if flax_leaf == 'kernel' and value.ndim == 2 and target_ndim == 2:
    return value.T  # Linear [out, in] -> [in, out]
  return value


class KeyMismatchError(ValueError):
  """The state dict does not fit the architecture; carries the offending keys."""

  def __init__(self, arch: str, missing, unexpected, mismatched):
    self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
    parts = [f'state dict does not match {arch}:']
    if missing:
      parts.append(f'  missing ({len(missing)}): {", ".join(missing[:30])}')
    if unexpected:
      parts.append(f'  unexpected ({len(unexpected)}): {", ".join(unexpected[:30])}')
    if mismatched:
      parts.append(f'  wrong shape ({len(mismatched)}): ' + ', '.join(
          f'{k} {a} vs expected {b}' for k, a, b in mismatched[:30]))
    super().__init__('\n'.join(parts))


def state_dict_to_variables(sd: StateDict, spec: models.ModelSpec) -> dict[str, Any]:
  """Maps a PyTorch state dict onto `spec`'s Flax variables; every target leaf must be filled.

  Torch keys the architecture does not read (its `uses_key`, e.g. VGG's classifier) are dropped.
  """
  uses_key = spec.architecture.uses_key or (lambda kwargs, key: True)
  target = traverse_util.flatten_dict(spec.init_shapes())
  filled: dict[tuple[str, ...], np.ndarray] = {}
  unexpected, mismatched = [], []
  for key, value in sd.items():
    mods, leaf = torch_module_path(key)
    if leaf in _IGNORED_LEAVES or not uses_key(spec.kwargs, key):
      continue
    candidates = _LEAF_RULES.get(leaf, ())
    dest = next(((col, *mods, fl) for col, fl in candidates if (col, *mods, fl) in target), None)
    if dest is None:  # same-named buffer anywhere (e.g. fixed filters)
      dest = next((p for p in target if p[1:] == (*mods, leaf)), None)
    if dest is None:
      unexpected.append(key)
      continue
    want = target[dest]
    arr = _to_flax_layout(np.asarray(value), dest[-1], len(want.shape))
    if tuple(arr.shape) != tuple(want.shape):
      mismatched.append((key, tuple(value.shape), tuple(want.shape)))
      continue
    filled[dest] = arr.astype(want.dtype)
  missing = ['/'.join(p) for p in target if p not in filled]
  if missing or unexpected or mismatched:
    raise KeyMismatchError(spec.arch, missing, unexpected, mismatched)
  return traverse_util.unflatten_dict(filled)


def convert_state_dict(sd: StateDict, arch: str | None = None,
                       overrides: Mapping[str, Any] | None = None,
                       spec: models.ModelSpec | None = None
                       ) -> tuple[models.ModelSpec, dict[str, Any]]:
  """State dict -> (spec, variables). The architecture is detected unless `spec` (stored with
  an export) or `arch` says it; `overrides` adjust the spec. Older releases' key names are
  renamed first (`registry.canonical_keys`)."""
  sd = registry.canonical_keys(sd)
  if spec is None or (arch is not None and arch != spec.arch):
    spec = detect_architecture(sd, arch)
  if overrides:
    spec = models.ModelSpec(spec.arch, {**spec.kwargs, **overrides})
  return spec, state_dict_to_variables(sd, spec)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike | None = None,
                 arch: str | None = None, overrides: Mapping[str, Any] | None = None,
                 param_key: str | None = None) -> tuple[models.ModelSpec, dict[str, Any]]:
  """Converts a checkpoint file; writes a model file to `dst` when given."""
  sd, stored = read_checkpoint(src, param_key)
  try:
    spec, variables = convert_state_dict(sd, arch, overrides, stored)
  except ValueError as e:
    raise ValueError(f'{os.fspath(src)}: {e}') from e
  if dst is not None:
    models.save_model(dst, spec, variables, {'converted_from': os.path.basename(os.fspath(src))})
  return spec, variables


# ---------------------------------------------------------------------------------------------
# Command line.


def _parse_override(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition('=')
  if not sep:
    raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('src', help='PyTorch .pth/.pt, .safetensors or .npz state dict')
  parser.add_argument('dst', help=f'model file to write (conventionally *{models.MODEL_SUFFIX})')
  parser.add_argument('--arch', default=None, choices=sorted(registry.ARCHITECTURES),
                      help='skip detection: the architecture of the state dict')
  parser.add_argument('--param-key', default=None,
                      help='entry holding the weights (default: params_ema, then params, ...)')
  parser.add_argument('--set', dest='overrides', action='append', type=_parse_override, default=[],
                      metavar='KEY=VALUE', help='constructor argument the file does not store, '
                      'e.g. res_scale=0.1 (repeatable)')


def cli_main(args: argparse.Namespace) -> int:
  try:
    spec, variables = convert_file(args.src, args.dst, args.arch, dict(args.overrides),
                                   args.param_key)
  except (ValueError, KeyError, FileNotFoundError) as e:
    print(f'condsr-jax convert: {e}', file=sys.stderr)
    return 2
  n = sum(np.size(v) for v in jax.tree.leaves(variables))
  print(f'{args.src} -> {args.dst}: {spec.arch} {spec.kwargs}, {n:,} values')
  return 0
