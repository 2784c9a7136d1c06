"""The architecture registry: each network registers itself where it is defined, with what model
files, upscaling and checkpoint conversion need to know about it.

`@register(...)` on a module class adds an `Architecture` under the class name, the name model
files and `condsr-jax convert --arch` use.
"""

import dataclasses
import re
from typing import Any, Callable, Mapping

import numpy as np
from flax import linen

StateDict = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A registered network: its module class, scale argument and checkpoint detector.

  `scale_arg` names the constructor argument holding the upscaling factor (None: not an SR
  network). A PyTorch state dict holding every key of `detect_keys` is this architecture, with
  the constructor arguments `detect` reads from its key names and shapes. `uses_key(kwargs, key)`
  says whether the module built with `kwargs` reads a torch key (None: every key);
  `torch_constants(kwargs)` gives the keys the original stores but the flax module computes (fixed
  buffers), so that an export loads strictly into the original. `key_renames` are (regex,
  replacement) pairs that turn an older release's key names into these (ESRGAN's `RRDB_trunk`
  layout into BasicSR's), applied to a state dict holding a key the first pattern matches.
  `torch_notes(kwargs)` says what PyTorch-side tools will do differently with an export of these
  arguments (an argument the original lacks, a loader's fixed assumption).
  """
  name: str
  module: type[linen.Module]
  scale_arg: str | None = None
  detect_keys: tuple[str, ...] = ()
  detect: Callable[[StateDict], dict[str, Any]] | None = None
  uses_key: Callable[[Mapping[str, Any], str], bool] | None = None
  torch_constants: Callable[[Mapping[str, Any]], dict[str, np.ndarray]] | None = None
  key_renames: tuple[tuple[str, str], ...] = ()
  torch_notes: Callable[[Mapping[str, Any]], list[str]] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(*, scale_arg: str | None = None, detect_keys: tuple[str, ...] = (),
             detect: Callable[[StateDict], dict[str, Any]] | None = None,
             uses_key: Callable[[Mapping[str, Any], str], bool] | None = None,
             torch_constants: Callable[[Mapping[str, Any]], dict[str, np.ndarray]] | None = None,
             key_renames: tuple[tuple[str, str], ...] = (),
             torch_notes: Callable[[Mapping[str, Any]], list[str]] | None = None
             ) -> Callable[[type[linen.Module]], type[linen.Module]]:
  """Class decorator: registers the module under its class name (see `Architecture`)."""
  if bool(detect_keys) != (detect is not None):
    raise ValueError('detect_keys and detect go together')

  def add(module: type[linen.Module]) -> type[linen.Module]:
    name = module.__name__
    if name in ARCHITECTURES:
      raise ValueError(f'architecture {name} is registered twice '
                       f'({ARCHITECTURES[name].module.__module__} and {module.__module__})')
    ARCHITECTURES[name] = Architecture(name, module, scale_arg, tuple(detect_keys), detect,
                                       uses_key, torch_constants, tuple(key_renames), torch_notes)
    return module

  return add


def get(name: str) -> Architecture:
  """The registered architecture `name`; a ValueError lists the known ones."""
  if name not in ARCHITECTURES:
    raise ValueError(f'unknown architecture {name!r}; known: {", ".join(sorted(ARCHITECTURES))}')
  return ARCHITECTURES[name]


def canonical_keys(sd: StateDict) -> dict[str, Any]:
  """`sd` with an older release's key names renamed by the architecture they belong to."""
  for arch in ARCHITECTURES.values():
    if arch.key_renames and any(re.match(arch.key_renames[0][0], k) for k in sd):
      renamed = {}
      for key, value in sd.items():
        for pattern, replacement in arch.key_renames:
          key = re.sub(pattern, replacement, key)
        renamed[key] = value
      return renamed
  return dict(sd)


# Helpers of the detectors.


def count_indices(sd: StateDict, pattern: str) -> int:
  """Distinct values of `pattern`'s group over the keys: e.g. the blocks of a Sequential."""
  rx = re.compile(pattern)
  return len({m.group(1) for k in sd if (m := rx.match(k))})


def out_in(sd: StateDict, key: str) -> tuple[int, int]:
  """(output, input) channels of a PyTorch conv or linear weight."""
  return int(sd[key].shape[0]), int(sd[key].shape[1])
