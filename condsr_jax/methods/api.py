"""The method contract: what a training method declares, and what the shared loop does with it.

A method is one class registered with `@register('name')` in its own module under `methods/`.
It owns its config sections (`default_config`, `validate`), its data streams, its named
networks, optimisers and initial weights, a pure `train_step`, its evaluators and its exports.
The loop (`condsr_jax.train`) owns the step counter, the RNG, the non-finite guard, the EMA,
the grain iterators, checkpoints, evaluation and export scheduling and best-model keeping.
`docs/adding_a_method.md` walks through a whole method.
"""

import dataclasses
from typing import Any, ClassVar, Mapping, NamedTuple, Protocol

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib
from condsr_jax import models
from condsr_jax.data import streams

Batch = Mapping[str, Mapping[str, jax.Array]]  # {stream name: {array or parameter name: [b, ...]}}
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class StepContext:
  """What the loop hands every step besides the state and the batch."""
  step: jax.Array  # int32 count of steps taken before this one
  key: jax.Array  # this step's PRNG key (the run key folded with the step)
  consts: Any  # the method's `constants()`: frozen arrays the step reads (never checkpointed)


@flax.struct.dataclass
class TrainState:
  """A method state most methods can use: networks and optimiser states by name, plus the rest."""
  params: dict[str, Any]  # trainable parameters by network name
  opt: dict[str, Any]  # optimiser state by optimiser name
  extra: dict[str, Any]  # non-parameter variables (spectral norm, BatchNorm), pools, queues


class Product(NamedTuple):
  """An exported network: the architecture spec and its variables (a model file's content)."""
  spec: models.ModelSpec
  variables: Any


@dataclasses.dataclass
class EvalResult:
  """What an evaluator measured: scalars, images for TensorBoard and a one-line report."""
  scalars: dict[str, float]
  images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  report: str = ''


class Evaluator(Protocol):
  """Scores the exported products of a run (e.g. PSNR/SSIM of the generator against bicubic)."""

  def __call__(self, products: Mapping[str, Product]) -> EvalResult:
    """Runs on host copies of the products; deterministic, so runs and resumes compare."""


@dataclasses.dataclass(frozen=True)
class KeyMetric:
  """The evaluation scalar ('evaluator/name') whose best value keeps a run's best products."""
  name: str
  higher_is_better: bool = True

  def better(self, value: float, best: float | None) -> bool:
    if best is None:
      return True
    return value > best if self.higher_is_better else value < best


class Method(Protocol):
  """The contract every training method fulfils (see `MethodBase` for the usual defaults)."""

  name: ClassVar[str]  # set by `register`: the value of `config.method`
  key_metric: ClassVar[KeyMetric | None]  # None: no best-model keeping

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """The method's config sections with defaults, merged over the loop's (`config.py`).

    Besides its own sections it names its optimisers (`optim.NAME`, see `methods.optimizers`)
    and the networks initial weights may be given for (`init.NAME = ''`).
    """

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Raises `config.ConfigError` naming the first wrong field of the method's sections."""

  def streams(self) -> dict[str, streams.StreamSpec]:
    """The data streams the step reads, by name: the batch is `{name: that stream's batch}`."""

  def networks(self) -> dict[str, models.ModelSpec]:
    """The networks `config.init.NAME` may start from a model file, workdir or checkpoint."""

  def initial_variables(self, name: str, spec: models.ModelSpec, variables: Any) -> Any:
    """Checks (or adapts) the loaded variables of network `name` before `init_state`."""

  def constants(self) -> dict[str, Any]:
    """Frozen arrays the step reads (e.g. VGG19 weights), replicated, never checkpointed."""

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> Any:
    """The method's state; `initial` maps network names to loaded variables."""

  def train_step(self, state: Any, batch: Batch, ctx: StepContext
                 ) -> tuple[Any, Metrics, jax.Array]:
    """Pure: (new state, scalar metrics, whether the update is finite). The loop keeps the old
    state (and EMA) when it is not, and counts the skip."""

  def ema_params(self, state: Any) -> Any:
    """The parameters the loop keeps an exponential moving average of (`train.ema_decay`)."""

  def exports(self, state: Any, ema: Any) -> dict[str, Product]:
    """Named products (the first is the run's main model, `model.msgpack`)."""

  def evaluators(self) -> dict[str, Evaluator]:
    """Named evaluators; their scalars are logged as 'NAME/scalar'."""


class MethodBase:
  """Defaults for the optional parts of `Method`: no constants, same-architecture initial
  weights, no evaluators."""

  name: ClassVar[str] = ''
  key_metric: ClassVar[KeyMetric | None] = None

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def constants(self) -> dict[str, Any]:
    return {}

  def evaluators(self) -> dict[str, Evaluator]:
    return {}

  def initial_variables(self, name: str, spec: models.ModelSpec, variables: Any) -> Any:
    expected = self.networks()[name]
    check_same_architecture(expected, spec, f'init.{name}', self.config.init[name])
    return variables


_REGISTRY: dict[str, type] = {}


def register(name: str):
  """Class decorator: makes the method available as `config.method = name`."""
  def decorate(cls: type) -> type:
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f'method {name!r} is registered twice')
    cls.name = name
    _REGISTRY[name] = cls
    return cls
  return decorate


def registered() -> dict[str, type]:
  return _REGISTRY


def all_finite(*trees: Any) -> jax.Array:
  """Whether every floating-point leaf of `trees` is finite (a scalar bool)."""
  leaves = [jnp.all(jnp.isfinite(x)) for t in trees for x in jax.tree.leaves(t)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _constructor_args(spec: models.ModelSpec) -> dict[str, Any]:
  module = spec.build()
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ('parent', 'name')}


def _shapes(spec: models.ModelSpec) -> Any:
  return jax.tree.map(lambda a: tuple(a.shape), spec.init_shapes())


def check_same_architecture(expected: models.ModelSpec, found: models.ModelSpec, field: str,
                            path: str) -> None:
  """Raises ConfigError unless `found` has the configured architecture and variable shapes
  (naming the constructor arguments that differ); the config's other arguments then apply."""
  config_lib.check(expected.arch == found.arch, field,
                   f'holds a {found.arch}; the config trains a {expected.arch}', path)
  if _shapes(expected) == _shapes(found):
    return
  a, b = _constructor_args(expected), _constructor_args(found)
  diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
  shown = ', '.join(f'{k}: config {x!r} vs file {y!r}' for k, (x, y) in sorted(diff.items()))
  config_lib.check(False, field, f'does not fit the configured network: {shown}', path)
