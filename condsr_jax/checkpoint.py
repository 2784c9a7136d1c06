"""Training checkpoints (orbax): the whole train state plus the grain iterator, keep-last-k.

Restores go through an abstract target that carries the current shardings, so a run saved on N
devices resumes on M. Saves are atomic (orbax commits a finished step only), so after kill -9 the
last complete step is what resumes. Next to the checkpoints the EMA generator is exported as
`model.msgpack`, which `condsr-jax upscale -m WORKDIR` reads.
"""

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from condsr_jax import models

MODEL_FILE = 'model.msgpack'
BEST_MODEL_FILE = 'best_model.msgpack'


class Checkpointer:
  """An orbax CheckpointManager for {state, data iterator} under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, save_every: int = 1000,
               async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': grain.checkpoint.CheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every)))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
    """Saves when `step` is on the interval (or `force`); returns whether it saved."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter)), force=force)

  def restore(self, abstract_state: Any, data_iter: Any, step: int | None = None) -> Any:
    """Restores `step` (default: latest) into shardings of `abstract_state`; sets `data_iter`."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    logging.info('restored checkpoint of step %d from %s', step, self.directory)
    return restored['state']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_sharding(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or abstract values), all placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def export_model(workdir: str, spec: models.ModelSpec, variables: Any, step: int,
                 name: str = MODEL_FILE, **metadata) -> str:
  """Writes the inference model of `workdir` (atomically); returns its path."""
  path = os.path.join(workdir, name)
  models.save_model(path, spec, variables, {'step': int(step), **metadata})
  return path


def load_inference_model(workdir: str) -> tuple[models.ModelSpec, Any]:
  """The EMA generator exported by a training run in `workdir`."""
  path = os.path.join(workdir, MODEL_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{workdir}: no {MODEL_FILE}; a training run writes it with its first checkpoint')
  spec, variables, _ = models.load_model_file(path)
  return spec, variables
