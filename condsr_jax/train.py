"""The training loop every method shares: mesh and shardings, data, checkpoints, logging, eval.

`train_and_evaluate(config, workdir)` is the whole run; re-running it on the same workdir
resumes exactly where the last checkpoint left off (state, RNG and data iterator). A method is
an object with `init_state`, `train_step`, `export` and `inference_params` (see
`condsr_jax.methods`), so the loop knows nothing of losses or networks.
"""

import logging as pylogging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metrics as clu_metrics
from clu import parameter_overview
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from condsr_jax import checkpoint, config as config_lib, evaluate, methods, writers
from condsr_jax.data import pipeline, sources


class TrainingStopped(RuntimeError):
  """The run cannot go on (e.g. too many non-finite losses in a row); checkpoints are kept."""


class TrainingInterrupted(Exception):
  """SIGTERM / Ctrl-C stopped the run after it saved a checkpoint: re-run to resume.

  Raised (not returned) so that `main ... && next command` and Python callers stop too."""

  def __init__(self, signal_name: str, step: int, directory: str):
    super().__init__(f'{signal_name} at step {step}: checkpoint saved in {directory}; re-run '
                     'with the same workdir to resume')
    self.exit_code = 128 + signal.Signals[signal_name].value


class _StopSignal:
  """Turns the first SIGTERM / Ctrl-C into a request to save and stop; the second one kills."""

  def __init__(self):
    self.requested = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None:
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    self.requested = signal.Signals(signum).name
    logging.warning('%s received: saving a checkpoint, then stopping (again to kill)',
                    self.requested)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _QuietCheckpointInfo(pylogging.Filter):
  """Drops orbax's per-save INFO chatter from the log; its warnings and errors stay."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or '/orbax/' not in record.pathname


def _quiet_library_logs() -> None:
  absl_logger = pylogging.getLogger('absl')
  if not any(isinstance(f, _QuietCheckpointInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_QuietCheckpointInfo())


def make_mesh() -> Mesh:
  """A 1D ('data',) mesh over every device of every process."""
  return Mesh(np.array(jax.devices()), ('data',))


def _global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's slice of the batch -> global arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def _device_fields(batch: dict[str, Any]) -> tuple[dict[str, np.ndarray], int]:
  """Numeric arrays for the step, and the number of unreadable images the batch replaced."""
  bad = int(np.sum(batch.get('bad_images', 0)))
  arrays = {k: v for k, v in batch.items()
            if k != 'bad_images' and isinstance(v, np.ndarray) and v.dtype.kind in 'fiub'}
  return arrays, bad


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + '.tmp', path)


def _open_train_source(config: ml_collections.ConfigDict) -> sources.ImageSource:
  d = config.data
  return sources.open_source(d.train, root=d.root or None, channels=d.channels,
                             on_bad_image=d.on_bad_image, validate=d.validate_files)


def _metrics_collection(names):
  return clu_metrics.Collection.create(
      **{n: clu_metrics.Average.from_output(n) for n in sorted(names)})


def _replicated_copy(tree: Any) -> Any:
  """Host numpy copy of a replicated global pytree (works in every process)."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the last eval."""
  _quiet_library_logs()
  if config.distributed.enabled:
    d = config.distributed
    jax.distributed.initialize(d.coordinator_address or None, d.num_processes or None,
                               d.process_id if d.process_id >= 0 else None)
  mesh = make_mesh()
  config_lib.validate(config, device_count=jax.device_count())
  lead = jax.process_index() == 0
  logging.info('process %d/%d, %d local / %d global devices (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  os.makedirs(workdir, exist_ok=True)
  if lead:
    _write_config(config, workdir)
  writer = writers.create_writer(workdir, just_logging=not lead)
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  method = methods.build(config)
  train_iter = pipeline.make_train_iterator(
      _open_train_source(config), batch_size=config.data.batch_size,
      crop_size=config.data.crop_size, seed=config.seed, hflip=config.data.hflip,
      vflip=config.data.vflip, rot90=config.data.rot90, param_sampler=method.param_sampler(),
      num_workers=config.data.num_workers)

  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                 save_every=config.train.checkpoint_every)
  rng = jax.random.key_data(jax.random.key(config.seed))
  if ckpt.latest_step() is not None:
    abstract = jax.eval_shape(method.init_state, rng)
    state = ckpt.restore(checkpoint.abstract_with_sharding(abstract, replicated), train_iter)
  else:
    init = methods.initial_weights(method, config)
    state = jax.jit(method.init_state, out_shardings=replicated)(rng, **init)
  start = int(state.step)
  if lead:
    parameter_overview.log_parameter_overview(_replicated_copy(method.inference_params(state)))

  consts = jax.device_put(method.constants(), replicated)
  train_step = jax.jit(method.train_step, in_shardings=(replicated, batch_sharding, replicated),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  evaluator = evaluate.Evaluator.from_config(config) if config.eval.val else None
  best = evaluate.read_best(workdir)
  num_steps, log_every = config.train.num_steps, config.train.log_every
  logging.info('training steps %d -> %d', start, num_steps)

  summary: dict[str, float] = {}
  acc, bad_images, t_log, steps_log = None, 0, time.perf_counter(), 0
  t_start, step, stopped_by = time.perf_counter(), start, None
  with _StopSignal() as stop:
    while step < num_steps:
      local, bad = _device_fields(next(train_iter))
      bad_images += bad
      state, out = train_step(state, _global_batch(local, batch_sharding), consts)
      step += 1
      steps_log += 1
      update = _metrics_collection(out).single_from_model_output(**out)
      acc = update if acc is None else acc.merge(update)

      at_log = step % log_every == 0 or step == num_steps
      stop_now = stop.requested is not None
      if jax.process_count() > 1:  # every process must stop at the same step
        stop_now = at_log and bool(multihost_utils.process_allgather(np.array(stop_now)).any())
      if at_log or stop_now:
        scalars = {f'train/{k}': float(v) for k, v in acc.compute().items()}
        total_skipped, consecutive = (int(x) for x in np.asarray(state.nonfinite.addressable_data(0)))
        elapsed = time.perf_counter() - t_log
        scalars.update({'train/steps_per_sec': steps_log / elapsed,
                        'train/skipped_total': total_skipped, 'train/bad_images': bad_images})
        writer.write_scalars(step, scalars)
        rate = steps_log / elapsed
        eta = (num_steps - step) / max(rate, 1e-9)
        logging.info('step %d/%d  %.2f steps/s  ETA %s  %s', step, num_steps, rate,
                     time.strftime('%H:%M:%S', time.gmtime(eta)),
                     '  '.join(f'{k[6:]}={v:.4g}' for k, v in scalars.items()
                               if k.startswith('train/l')))
        acc, t_log, steps_log = None, time.perf_counter(), 0
        if consecutive >= config.train.max_consecutive_nonfinite:
          ckpt.close()
          raise TrainingStopped(
              f'{consecutive} consecutive steps had a non-finite loss or gradient (last at step '
              f'{step}); updates were skipped, so the checkpoints in {ckpt.directory} hold the last '
              'good weights. Lower the learning rate or check the data, then re-run to resume.')

      if evaluator is not None and (
          (config.eval.every and step % config.eval.every == 0) or step == num_steps):
        summary = evaluator.run(method, state, writer, step)
        if lead and summary['psnr'] > best:
          best = summary['psnr']
          spec, variables = method.export(state)
          checkpoint.export_model(workdir, spec, variables, step, checkpoint.BEST_MODEL_FILE,
                                  psnr=best)
          evaluate.write_best(workdir, best, step)

      if ckpt.save(step, state, train_iter, force=stop_now or step == num_steps):
        if lead:
          spec, variables = method.export(state)
          checkpoint.export_model(workdir, spec, variables, step)
      if stop_now:
        stopped_by = stop.requested or 'SIGTERM'  # None: requested on another process
        break
  if not summary and evaluator is not None and step >= num_steps:  # a finished run, resumed
    summary = evaluator.run(method, state, writer, step)
  ckpt.close()
  writer.flush()
  logging.info('%s at step %d after %.0f s', 'stopped' if step < num_steps else 'finished', step,
               time.perf_counter() - t_start)
  getattr(train_iter, 'close', lambda: None)()
  if stopped_by:
    raise TrainingInterrupted(stopped_by, step, ckpt.directory)
  return summary
