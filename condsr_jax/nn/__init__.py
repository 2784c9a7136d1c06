"""Flax linen networks. Importing the package imports each of its modules, so that every network
registers itself; `ARCHITECTURES` maps the names used in model files to their `Architecture`."""

import importlib
import pkgutil

from condsr_jax.nn.registry import ARCHITECTURES, Architecture

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['ARCHITECTURES', 'Architecture']
