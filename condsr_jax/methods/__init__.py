"""Training methods: one module per method, each registering a class with `api.register`.

`build(config)` returns the method object of `config.method`; the modules of this package are
imported on first use, so a new method is a new file here and nothing else.
"""

import importlib
import pkgutil

import ml_collections

from condsr_jax import config as config_lib
from condsr_jax.methods import api


def _import_all() -> None:
  for info in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{info.name}')


def names() -> tuple[str, ...]:
  """The registered method names."""
  _import_all()
  return tuple(sorted(api.registered()))


def get(name: str) -> type:
  """The method class registered as `name`; ConfigError naming `config.method` otherwise."""
  _import_all()
  config_lib.check(name in api.registered(), 'method',
                   f'unknown; one of {sorted(api.registered())}', name)
  return api.registered()[name]


def build(config: ml_collections.ConfigDict) -> api.Method:
  """The method object of `config.method` (the config is validated first by the caller)."""
  return get(config.method)(config)
