"""Model files: an architecture spec plus its Flax variables, in one msgpack file.

A spec names an architecture of `condsr_jax.nn.ARCHITECTURES` and its constructor arguments, so
a model file is self-describing: `upscale`, `load_model` and training restores need nothing else.
The same spec beside an orbax checkpoint of the variables is the orbax model directory
(`save_orbax`), which restores onto any sharding. `load_weights` reads both, a training
workdir's model and PyTorch checkpoints.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import serialization

from condsr_jax.nn import registry

FORMAT = 'condsr_jax.model'
FORMAT_VERSION = 1
MODEL_SUFFIX = '.msgpack'
MODEL_FILE = 'model.msgpack'  # the main model a training run exports into its workdir
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt', '.safetensors', '.npz', '.bin')
ORBAX_SPEC_FILE = 'model_spec.json'  # in an orbax model directory, beside variables/


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """An architecture name and the keyword arguments of its constructor."""
  arch: str
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    registry.get(self.arch)

  @property
  def architecture(self) -> registry.Architecture:
    """The registry entry of `arch`: module class, scale argument, checkpoint detector."""
    return registry.get(self.arch)

  def build(self, **overrides) -> nn.Module:
    return self.architecture.module(**{**self.kwargs, **overrides})

  @property
  def scale(self) -> int | None:
    """The upscaling factor; None for networks that are not super-resolution networks."""
    arg = self.architecture.scale_arg
    return None if arg is None else int(getattr(self.build(), arg))

  @property
  def in_channels(self) -> int:
    return int(self.kwargs.get('num_in_ch', 3))

  def to_json(self) -> str:
    return json.dumps({'arch': self.arch, 'kwargs': self.kwargs}, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'ModelSpec':
    d = json.loads(text)
    return cls(d['arch'], d.get('kwargs', {}))

  def init_shapes(self) -> dict[str, Any]:
    """Abstract variables (shapes and dtypes) of this architecture, without computing anything."""
    module = self.build()
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs(module)))


def example_inputs(module: nn.Module) -> tuple[jax.Array, ...]:
  """Inputs that `module.init` accepts: the module's own `example_inputs()` or a 32x32 image."""
  if hasattr(module, 'example_inputs'):
    return module.example_inputs()
  return (jnp.zeros((1, 32, 32, getattr(module, 'num_in_ch', 3)), jnp.float32),)


def save_model(path: str | os.PathLike, spec: ModelSpec, variables: Any,
               metadata: dict[str, Any] | None = None) -> None:
  """Writes spec + variables (as float32 numpy) to one file, atomically."""
  payload = {
      'format': FORMAT,
      'version': FORMAT_VERSION,
      'spec': spec.to_json(),
      'metadata': json.dumps(metadata or {}),
      'variables': jax.tree.map(lambda a: np.asarray(a), jax.device_get(variables)),
  }
  tmp = f'{os.fspath(path)}.tmp'
  with open(tmp, 'wb') as f:
    f.write(serialization.msgpack_serialize(payload))
  os.replace(tmp, path)


def is_model_file(path: str | os.PathLike) -> bool:
  try:
    with open(path, 'rb') as f:
      head = f.read(64)
  except OSError:
    return False
  return FORMAT.encode() in head


def load_model_file(path: str | os.PathLike) -> tuple[ModelSpec, Any, dict[str, Any]]:
  """Reads a file written by `save_model`; returns (spec, variables, metadata)."""
  with open(path, 'rb') as f:
    payload = serialization.msgpack_restore(f.read())
  if payload.get('format') != FORMAT:
    raise ValueError(f'{path}: not a condsr_jax model file')
  if payload.get('version', 0) > FORMAT_VERSION:
    raise ValueError(f'{path}: model file version {payload["version"]} is newer than this '
                     f'condsr_jax understands ({FORMAT_VERSION}); upgrade condsr_jax')
  return (ModelSpec.from_json(payload['spec']), payload['variables'],
          json.loads(payload.get('metadata', '{}')))


def save_orbax(path: str | os.PathLike, spec: ModelSpec, variables: Any,
               metadata: dict[str, Any] | None = None) -> None:
  """An orbax model directory: `variables/` (an orbax StandardCheckpoint) and `model_spec.json`;
  replaces `path` only once both are written."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.fspath(path))
  tmp = f'{path}.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(tmp, 'variables'), jax.device_get(variables))
  with open(os.path.join(tmp, ORBAX_SPEC_FILE), 'w') as f:
    json.dump({'format': FORMAT, 'version': FORMAT_VERSION, 'spec': json.loads(spec.to_json()),
               'metadata': metadata or {}}, f, indent=1)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)


def is_orbax_model(path: str | os.PathLike) -> bool:
  return os.path.isfile(os.path.join(path, ORBAX_SPEC_FILE))


def load_orbax(path: str | os.PathLike, sharding: jax.sharding.Sharding | None = None
               ) -> tuple[ModelSpec, Any, dict[str, Any]]:
  """(spec, variables, metadata) of an orbax model directory, the variables restored straight
  into `sharding` (default: the first device), e.g. replicated over a mesh."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(os.fspath(path))
  with open(os.path.join(path, ORBAX_SPEC_FILE)) as f:
    payload = json.load(f)
  if payload.get('format') != FORMAT:
    raise ValueError(f'{path}: {ORBAX_SPEC_FILE} is not a condsr_jax model spec')
  if payload.get('version', 0) > FORMAT_VERSION:
    raise ValueError(f'{path}: model version {payload["version"]} is newer than this condsr_jax '
                     f'understands ({FORMAT_VERSION}); upgrade condsr_jax')
  spec = ModelSpec(payload['spec']['arch'], payload['spec'].get('kwargs', {}))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        spec.init_shapes())
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      variables = checkpointer.restore(os.path.join(path, 'variables'), target)
    except ValueError as e:
      raise ValueError(f'{path}: the saved variables do not fit {spec.arch} {spec.kwargs}: '
                       f'{e}') from e
  return spec, variables, payload.get('metadata', {})


def load_weights(path: str | os.PathLike, *, arch: str | None = None) -> tuple[ModelSpec, Any]:
  """(spec, variables) from a model file, an orbax model directory, a training workdir (its
  `model.msgpack`) or a PyTorch, safetensors or npz checkpoint (converted; `arch` skips the architecture detection)."""
  path = os.fspath(path)
  if is_orbax_model(path):
    spec, variables, _ = load_orbax(path)
    return spec, variables
  if os.path.isdir(path):
    model = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model):
      raise FileNotFoundError(f'{path}: no {MODEL_FILE} in this workdir; a training run writes '
                              'it with its first checkpoint')
    path = model
  if is_model_file(path):
    spec, variables, _ = load_model_file(path)
    return spec, variables
  if path.lower().endswith(CHECKPOINT_SUFFIXES):
    from condsr_jax import convert  # pylint: disable=g-import-not-at-top
    return convert.convert_file(path, arch=arch)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such model file or workdir')
  raise ValueError(f'{path}: not a condsr_jax model file, a workdir or a checkpoint '
                   f'({", ".join(CHECKPOINT_SUFFIXES)})')
