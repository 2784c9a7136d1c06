"""The degradation protocol, its registry of kinds, and what works for every kind.

A degradation turns GT canvases (the data pipeline's crops, `canvas` pixels square) into
training pairs on the device. Its random parameters are drawn per example on the host by
`param_sampler` (run in grain) and arrive in the batch; the pixel work is one jitted function.
`degradation.kind` picks the class: `make` builds it, `validate` checks its config and names
the wrong field.
"""

from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib

Batch = Mapping[str, jax.Array]
ParamSampler = Callable[[np.random.Generator], dict[str, np.ndarray]]


class Degradation(Protocol):
  """GT canvases and their sampled parameters -> LQ images (see the module doc)."""
  config: ml_collections.ConfigDict
  scale: int
  canvas: int  # side of the GT canvas the data pipeline delivers: the config's crop_pad
  # How task batches (`tasks.TaskDegradation`) degrade their patches: True, each patch on its own
  # (`apply`); False, each whole canvas once (`degrade`), the patches being crops of the result.
  patchwise: bool

  def param_sampler(self, crop: bool = True) -> ParamSampler | None:
    """Per-example host draws for grain (`crop=False`: no crop offsets), None if none."""

  def device_draws(self, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """Random parameters drawn on the device for the images `batch['gt']`, {} when
    `param_sampler` draws them all; `degrade` and `degrade_whole` use those `batch` carries, so
    several calls share one draw (a task's shifted images, a fixed draw's images)."""

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """Training pairs {'lq', 'gt', ['gt_usm'], 'record'} of gt_size from `batch['gt']`."""

  def degrade_whole(self, batch: Batch, key: jax.Array) -> jax.Array:
    """LQ of the whole canvas `batch['gt']` [B, canvas, canvas, C] (parameters drawn by
    `param_sampler(crop=False)`), degraded from the plain GT: no USM sharpening."""


_REGISTRY: dict[str, Any] = {}
KINDS: tuple[str, ...] = ()  # registered kinds, in registration order


def register(kind: str) -> Callable[[type], type]:
  """Class decorator: `kind` becomes a value of `degradation.kind`.

  The class is built as `cls(config, scale)` and has the classmethods `default_config(scale)`
  and `validate(config, scale, field)` (raises `ConfigError`).
  """
  def add(cls: type) -> type:
    global KINDS
    if kind in _REGISTRY:
      raise ValueError(f'degradation kind {kind!r} is registered twice')
    _REGISTRY[kind] = cls
    KINDS = (*KINDS, kind)
    return cls
  return add


def _kind(kind: str, field: str) -> Any:
  config_lib.check(kind in _REGISTRY, f'{field}.kind', f'one of {KINDS}', kind)
  return _REGISTRY[kind]


def make(config: ml_collections.ConfigDict, scale: int) -> Degradation:
  """The degradation of `config.kind`, validated."""
  return _kind(config.kind, 'degradation')(config, scale)


def on_canvas(degradation: Degradation, size: int) -> Degradation:
  """The same degradation drawn on `size`-pixel canvases (validation crops larger than the
  training crops); `degradation` itself when its canvas is that size already."""
  if size == degradation.canvas:
    return degradation
  config = ml_collections.ConfigDict(degradation.config.to_dict())
  config.crop_pad, config.gt_size = size, min(config.gt_size, size)
  return make(config, degradation.scale)


def default_config(kind: str, scale: int) -> ml_collections.ConfigDict:
  """The settings `kind` trains with at `scale` (its reference's)."""
  return _kind(kind, 'degradation').default_config(scale)


def validate(config: ml_collections.ConfigDict, scale: int, field: str = 'degradation'
             ) -> None:
  """Raises `ConfigError` naming the first wrong field of `config` (found at `field`)."""
  cls = _kind(config.get('kind'), field)
  for name in cls.default_config(scale):
    config_lib.check(name in config, f'{field}.{name}',
                     f'missing (start from default_config({config.kind!r}, scale))', None)
  cls.validate(config, scale, field)


def check_sizes(config: ml_collections.ConfigDict, scale: int, field: str) -> None:
  """The checks of the fields every kind has: gt_size and crop_pad."""
  config_lib.check(config.gt_size > 0 and config.gt_size % scale == 0, f'{field}.gt_size',
                   f'must be a positive multiple of the scale {scale}', config.gt_size)
  config_lib.check(config.crop_pad % scale == 0 and config.crop_pad >= config.gt_size,
                   f'{field}.crop_pad', f'must be a multiple of the scale {scale} and at least '
                   f'gt_size ({config.gt_size})', config.crop_pad)


def gt_canvas(batch: Batch, size: int) -> jax.Array:
  """`batch['gt']` as float32, checked to be `size` x `size` canvases (the data crop)."""
  gt = jnp.asarray(batch['gt'], jnp.float32)
  if gt.shape[1:3] != (size, size):
    raise ValueError(f'GT batch of {gt.shape[1]}x{gt.shape[2]} images; degradation.crop_pad '
                     f'is {size} (the stream must crop the GT to it)')
  return gt


# The `fold_in` tag of the device draws' key, apart from the small indices of other keys.
DEVICE_DRAWS = 0xFFFFFFFF


def fixed_draws(degradation: Degradation, hr: np.ndarray, draws: int, seed: int) -> np.ndarray:
  """LQ [N, draws, canvas / scale, canvas / scale, C] of HR canvases [N, canvas, canvas, C].

  Validation pairs of the training distribution that stay the same across runs: `draws`
  parameter draws seeded by `seed`, the same for every image, applied by `degrade_whole` one
  image at a time with a key from (seed, image, draw), so an LQ image does not depend on N.
  Device draws (`device_draws`) come from (seed, draw), also the same for every image.
  """
  sampler = degradation.param_sampler(crop=False)
  rng = np.random.default_rng(seed)
  records = [sampler(rng) if sampler else {} for _ in range(draws)]
  run = jax.jit(degradation.degrade_whole)
  key = jax.random.key(seed)
  device_key = jax.random.fold_in(key, DEVICE_DRAWS)
  template = {'gt': np.asarray(hr, np.float32)[:1]}
  for j, record in enumerate(records):
    draws_j = degradation.device_draws(template, jax.random.fold_in(device_key, j))
    record.update({k: np.asarray(v)[0] for k, v in draws_j.items()})  # one image's
  out = []
  for i, img in enumerate(np.asarray(hr, np.float32)):
    row = []
    for j, record in enumerate(records):
      batch = {'gt': img[None], **{k: np.asarray(v)[None] for k, v in record.items()}}
      row.append(np.asarray(run(batch, jax.random.fold_in(jax.random.fold_in(key, i), j)))[0])
    out.append(np.stack(row))
  return np.stack(out)
