"""Per-method training state and pure step functions, plugged into the loop in `condsr_jax.train`.

A method object has: `param_sampler()` (per-example host-side parameters for grain, or None),
`constants()` (frozen arrays the step reads, e.g. VGG19 weights), `init_state(rng, **initial)`,
`train_step(state, batch, constants) -> (state, metrics)`, `inference_params(state)`,
`super_resolve(params, lq)` and `export(state)`.
"""

import dataclasses
import os
from typing import Any

import ml_collections

from condsr_jax import checkpoint, convert, models


def build(config: ml_collections.ConfigDict):
  """The method object of `config.method`."""
  if config.method == 'sr':
    from condsr_jax.methods import sr  # pylint: disable=g-import-not-at-top
    return sr.SRMethod(config)
  if config.method == 'esrgan':
    from condsr_jax.methods import esrgan  # pylint: disable=g-import-not-at-top
    return esrgan.ESRGANMethod(config)
  if config.method == 'cmdsr':
    from condsr_jax.methods import cmdsr  # pylint: disable=g-import-not-at-top
    return cmdsr.CMDSRMethod(config)
  raise ValueError(f'config.method = {config.method!r}: unknown method')


def load_weights(path: str) -> tuple[models.ModelSpec, Any]:
  """(spec, variables) from a model file, a training workdir or a PyTorch checkpoint."""
  if os.path.isdir(path):
    return checkpoint.load_inference_model(path)
  if models.is_model_file(path):
    spec, variables, _ = models.load_model_file(path)
    return spec, variables
  return convert.convert_file(path)


def check_same_architecture(expected: models.ModelSpec, found: models.ModelSpec, field: str,
                            path: str) -> None:
  """Raises a ValueError naming the differing constructor arguments."""
  if expected.arch != found.arch:
    raise ValueError(f'config.{field} = {path!r} holds a {found.arch}, the config trains a '
                     f'{expected.arch}')
  a, b = _constructor_args(expected), _constructor_args(found)
  diff = {k: (a[k], b[k]) for k in a if k not in ('dtype', 'remat') and a[k] != b[k]}
  if diff:
    shown = ', '.join(f'{k}: config {x!r} vs file {y!r}' for k, (x, y) in sorted(diff.items()))
    raise ValueError(f'config.{field} = {path!r} does not fit config.model: {shown}')


def _constructor_args(spec: models.ModelSpec) -> dict[str, Any]:
  module = spec.build()
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ('parent', 'name')}


def initial_weights(method: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments of `method.init_state` for the weights named in `config.init`."""
  init = {}
  if config.init.generator:
    path = config.init.generator
    spec, variables = load_weights(path)
    if hasattr(method, 'adapt_initial_weights'):
      init['init_params'] = method.adapt_initial_weights(spec, variables)
    else:
      check_same_architecture(method.spec, spec, 'init.generator', path)
      init['init_params'] = variables['params']
  if config.init.discriminator:
    path = config.init.discriminator
    spec, variables = load_weights(path)
    check_same_architecture(method.d_spec, spec, 'init.discriminator', path)
    init['init_disc'] = variables
  return init
