"""ONNX export of an SR network's forward pass through jax2onnx (the `[onnx]` extra).

The graph takes float32 images in [0, 1] with symbolic batch, height and width, NCHW by default
as the ONNX files of the PyTorch ecosystem (chaiNNer, spandrel's exports), or NHWC as here.
"""

import logging
import os
from typing import Any

import jax.numpy as jnp

from condsr_jax import models

LAYOUTS = ('nchw', 'nhwc')


def _import_jax2onnx():
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ONNX export needs jax2onnx: pip install 'condsr_jax[onnx]'") from e
  logging.getLogger('onnx_ir').setLevel(logging.ERROR)  # per-node type notes, not problems
  return jax2onnx


def to_onnx(spec: models.ModelSpec, variables: Any, layout: str = 'nchw'):
  """The onnx.ModelProto of `spec`'s forward pass with `variables` baked in as constants."""
  if layout not in LAYOUTS:
    raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
  if spec.scale is None:
    raise ValueError(f'{spec.arch} is not a super-resolution network; ONNX export covers those')
  module, c = spec.build(), spec.in_channels
  if hasattr(module, 'condition_from_lr'):
    raise ValueError(f'{spec.arch} is a conditional network (its representation comes from the '
                     'image or support images first); ONNX export covers plain SR networks: '
                     'export it as pth or orbax')
  jax2onnx = _import_jax2onnx()

  def forward(x):
    if layout == 'nchw':
      return jnp.transpose(module.apply(variables, jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))
    return module.apply(variables, x)

  shape = ('B', c, 'H', 'W') if layout == 'nchw' else ('B', 'H', 'W', c)
  return jax2onnx.to_onnx(forward, [shape], model_name=spec.arch)


def save_onnx(path: str | os.PathLike, spec: models.ModelSpec, variables: Any,
              layout: str = 'nchw') -> None:
  """Writes `to_onnx(...)` to `path`, atomically."""
  proto = to_onnx(spec, variables, layout)
  tmp = f'{os.fspath(path)}.tmp'
  with open(tmp, 'wb') as f:
    f.write(proto.SerializeToString())
  os.replace(tmp, path)
