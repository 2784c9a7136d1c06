"""Training checkpoints (orbax), exported products and the best-model record of a workdir.

A checkpoint holds the loop state and the state of every data stream's grain iterator,
keep-last-k. Restores go through an abstract target that carries the current shardings, so a
run saved on N devices resumes on M. Saves are atomic (orbax commits a finished step only), so
after kill -9 the last complete step is what resumes. Next to the checkpoints the method's
products are exported as model files: the main one as `model.msgpack` (what `condsr-jax upscale
-m WORKDIR` reads), others as `NAME.msgpack`, and the best by the method's key metric as
`best_model.msgpack` / `best_NAME.msgpack`.
"""

import json
import os
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from condsr_jax import models

MODEL_FILE = 'model.msgpack'
BEST_FILE = 'best.json'


class Checkpointer:
  """An orbax CheckpointManager for the loop state and one iterator per stream, under
  `workdir/checkpoints` (items 'state' and 'data_STREAM')."""

  def __init__(self, workdir: str, stream_names: tuple[str, ...], *, keep: int = 3,
               save_every: int = 1000, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.stream_names = stream_names
    handlers = {'state': ocp.StandardCheckpointHandler()}
    handlers.update({_data_item(n): grain.checkpoint.CheckpointHandler() for n in stream_names})
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers=handlers,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every)))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, iterators: Mapping[str, Any], force: bool = False) -> bool:
    """Saves when `step` is on the interval (or `force`); returns whether it saved."""
    items = {_data_item(n): grain.checkpoint.CheckpointSave(it) for n, it in iterators.items()}
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), **items), force=force)

  def restore(self, abstract_state: Any, iterators: Mapping[str, Any],
              step: int | None = None) -> Any:
    """Restores `step` (default: latest) into the shardings of `abstract_state`; sets the
    iterators' positions."""
    step = self.latest_step() if step is None else step
    items = {_data_item(n): grain.checkpoint.CheckpointRestore(it) for n, it in iterators.items()}
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), **items))
    logging.info('restored checkpoint of step %d from %s', step, self.directory)
    return restored['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _data_item(stream: str) -> str:
  return f'data_{stream}'


def abstract_with_sharding(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or abstract values), all placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def product_file(name: str, main: bool, best: bool = False) -> str:
  """The file name of a product: `model.msgpack` for the main one, `NAME.msgpack` otherwise."""
  stem = 'model' if main else name
  return f'best_{stem}.msgpack' if best else f'{stem}.msgpack'


def export_products(workdir: str, products: Mapping[str, tuple[models.ModelSpec, Any]],
                    step: int, best: bool = False, **metadata) -> list[str]:
  """Writes every product as a model file (atomically); the first is the main model."""
  paths = []
  for i, (name, (spec, variables)) in enumerate(products.items()):
    path = os.path.join(workdir, product_file(name, i == 0, best))
    models.save_model(path, spec, variables, {'step': int(step), 'product': name, **metadata})
    paths.append(path)
  return paths


def read_best(workdir: str) -> dict[str, Any] | None:
  """{'metric', 'value', 'step'} of the best evaluation so far, or None."""
  path = os.path.join(workdir, BEST_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_best(workdir: str, best: Mapping[str, Any]) -> None:
  path = os.path.join(workdir, BEST_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump(dict(best), f)
  os.replace(path + '.tmp', path)
