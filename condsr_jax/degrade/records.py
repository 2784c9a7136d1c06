"""Parameter records: the fixed-shape numpy scalars a host-side sampler draws per example.

Records batch into arrays in grain and the device functions read them by 'section/field' keys;
these helpers build and read such keys and turn a config into a sampler's hashable options.
"""

import dataclasses
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

KERNEL_FIELDS = ('kernel_type', 'size', 'sigma_x', 'sigma_y', 'theta', 'beta', 'omega_c')

Options = tuple[tuple[str, Any], ...]


def plain(value: Any) -> Any:
  """A ConfigDict value as a hashable, picklable Python value (lists become tuples)."""
  if isinstance(value, (list, tuple)):
    return tuple(plain(v) for v in value)
  return value


def options(config: ml_collections.ConfigDict) -> Options:
  """The config's own fields, sorted and plain: a sampler's picklable, hashable settings
  (nested sections such as `tasks` belong to other code and are left out)."""
  return tuple(sorted((k, plain(v)) for k, v in config.items()
                      if not isinstance(v, ml_collections.ConfigDict)))


def prefixed(prefix: str, record: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`record`'s keys as 'prefix/key'."""
  return {f'{prefix}/{k}': v for k, v in record.items()}


def kernel_record(params: Mapping[str, jax.typing.ArrayLike], prefix: str
                  ) -> dict[str, jax.typing.ArrayLike]:
  """The `kernels.kernel_from_params` record stored under `prefix/` in `params`."""
  return {k: params[f'{prefix}/{k}'] for k in KERNEL_FIELDS}


def crop_offsets(rng: np.random.Generator, canvas: int, size: int, scale: int
                 ) -> dict[str, np.ndarray]:
  """'crop/top', 'crop/left' of a `size` crop of a `canvas` image, uniform in LQ pixels (so
  the GT crop sits on the LQ grid)."""
  span = (canvas - size) // scale + 1
  return {'crop/top': np.int32(rng.integers(span)), 'crop/left': np.int32(rng.integers(span))}


@dataclasses.dataclass(frozen=True)
class CropSampler:
  """Draws one example's 'crop/top', 'crop/left' (LQ pixels; picklable, runs in grain): the
  only host draws of kinds whose randomness is the crop or is drawn on the device."""
  canvas: int
  gt_size: int
  scale: int

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return crop_offsets(rng, self.canvas, self.gt_size, self.scale)
