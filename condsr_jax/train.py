"""The training loop every method shares: mesh, streams, the guarded step, EMA, checkpoints,
logging, evaluation, exports and best-model keeping.

`train_and_evaluate(config, workdir)` is the whole run; re-running it on the same workdir
resumes exactly where the last checkpoint left off (state, RNG, EMA and every data iterator). The
method (`condsr_jax.methods`) supplies streams, state, a pure step, evaluators and exports; this
module knows nothing of networks, losses or degradations.
"""

import dataclasses
import logging as pylogging
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import parameter_overview
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from condsr_jax import checkpoint, config as config_lib, methods, writers
from condsr_jax.data import streams
from condsr_jax.methods import api


class TrainingStopped(RuntimeError):
  """The run cannot go on (e.g. too many non-finite losses in a row); checkpoints are kept."""


class TrainingInterrupted(Exception):
  """SIGTERM / Ctrl-C stopped the run after it saved a checkpoint: re-run to resume.

  Raised (not returned) so that `main ... && next command` and Python callers stop too."""

  def __init__(self, signal_name: str, step: int, directory: str):
    super().__init__(f'{signal_name} at step {step}: checkpoint saved in {directory}; re-run '
                     'with the same workdir to resume')
    self.exit_code = 128 + signal.Signals[signal_name].value


@flax.struct.dataclass
class LoopState:
  """Everything a checkpoint holds besides the data iterators."""
  step: jax.Array  # int32 steps taken
  rng: jax.Array  # raw uint32[2] run key (orbax stores it as a plain array)
  nonfinite: jax.Array  # int32 [total skipped updates, consecutive skipped updates]
  method: Any  # the method's own state
  ema: Any  # EMA of the method's `ema_params`


@dataclasses.dataclass
class Summary:
  """The outcome of a run: its last evaluation's scalars ('evaluator/name') and reports."""
  step: int
  metrics: dict[str, float]
  reports: list[str]


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


def count_nonfinite(counts: jax.Array, ok: jax.Array) -> jax.Array:
  """Updates [total skipped, consecutive skipped] after a step whose update was `ok` or not."""
  bad = jnp.logical_not(ok).astype(jnp.int32)
  return jnp.stack([counts[0] + bad, (counts[1] + 1) * bad])


def init_loop_state(method: api.Method, rng: jax.Array, initial: dict[str, Any]) -> LoopState:
  """Step 0: the method's initial state, and its EMA starting as a copy of its parameters."""
  state = method.init_state(jax.random.fold_in(jax.random.wrap_key_data(rng), 1), initial)
  return LoopState(step=jnp.zeros((), jnp.int32), rng=rng, nonfinite=jnp.zeros((2,), jnp.int32),
                   method=state, ema=method.ema_params(state))


def make_train_step(method: api.Method, ema_decay: float) -> Callable:
  """The loop's step around the method's: this step's key, the EMA, the one non-finite guard.

  An update whose loss, gradients or new state is not finite leaves the method state and EMA as
  they were (one `cond` over the whole state: a `where` per leaf of the donated state made
  XLA:CPU's compile time grow by ~17 s per RRDB block) and is counted.
  """
  def step(state: LoopState, batch: api.Batch, consts: Any) -> tuple[LoopState, api.Metrics]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    ctx = api.StepContext(step=state.step, key=key, consts=consts)
    new, metrics, finite = method.train_step(state.method, batch, ctx)
    ema = optax.incremental_update(method.ema_params(new), state.ema, 1.0 - ema_decay)
    finite = jnp.logical_and(finite, api.all_finite(ema))
    kept, ema = jax.lax.cond(finite, lambda: (new, ema), lambda: (state.method, state.ema))
    return (LoopState(step=state.step + 1, rng=state.rng,
                      nonfinite=count_nonfinite(state.nonfinite, finite), method=kept, ema=ema),
            {**metrics, 'skipped': 1.0 - finite.astype(jnp.float32)})
  return step


def initial_weights(method: api.Method, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The variables of every network named in `config.init`, checked (or adapted) by the method."""
  from condsr_jax import models  # pylint: disable=g-import-not-at-top
  initial = {}
  for name, path in config.get('init', {}).items():
    if path:
      spec, variables = models.load_weights(path)
      initial[name] = method.initial_variables(name, spec, variables)
  return initial


def host_copy(tree: Any) -> Any:
  """Host numpy copy of a replicated global pytree (works in every process)."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


def _global_batch(local: dict[str, Any], sharding: NamedSharding) -> dict[str, Any]:
  """This process's slice of every stream's batch -> global arrays sharded along the batch."""
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, v), local)


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


def _mean_metrics(pending: list[dict[str, Any]]) -> dict[str, float]:
  """The mean of each scalar over the steps since the last log line.

  The steps' metrics stay on the device until then: averaging them step by step (clu's
  `Average`) cost a few eager dispatches per metric per step, which made small models' steps
  several times slower on CPU.
  """
  host = host_copy(pending)
  return {k: float(np.mean([np.asarray(m[k], np.float64) for m in host])) for k in host[0]}


class _Evaluation:
  """Runs the method's evaluators on its products and keeps the best products by key metric."""

  def __init__(self, method: api.Method, workdir: str, writer: Any, lead: bool):
    self.method, self.workdir, self.writer, self.lead = method, workdir, writer, lead
    self.evaluators = method.evaluators()
    self.best = checkpoint.read_best(workdir)

  def run(self, products: dict[str, api.Product], step: int) -> Summary:
    scalars, images, reports = {}, {}, []
    for name, evaluator in self.evaluators.items():
      result = evaluator(products)
      scalars.update({f'{name}/{k}': v for k, v in result.scalars.items()})
      images.update({f'{name}/{k}': v for k, v in result.images.items()})
      if result.report:
        reports.append(result.report)
        logging.info('step %d: %s', step, result.report)
    self.writer.write_scalars(step, scalars)
    if images:
      self.writer.write_images(step, images)
    key = self.method.key_metric
    if self.lead and key is not None and key.name in scalars:
      value = scalars[key.name]
      if key.better(value, None if self.best is None else self.best['value']):
        self.best = {'metric': key.name, 'value': value, 'step': int(step)}
        checkpoint.export_products(self.workdir, products, step, best=True,
                                   **{key.name: value})
        checkpoint.write_best(self.workdir, self.best)
    return Summary(step, scalars, reports)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Summary:
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
  method = methods.build(config)
  specs = method.streams()
  for spec in specs.values():
    streams.check(spec, jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  if lead:
    _write_config(config, workdir)
  writer = writers.create_writer(workdir, just_logging=not lead)
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))

  iterators = {name: streams.make_iterator(spec, seed=streams.stream_seed(config.seed, name))
               for name, spec in specs.items()}
  ckpt = checkpoint.Checkpointer(workdir, tuple(iterators), keep=config.train.keep_checkpoints,
                                 save_every=config.train.checkpoint_every)
  rng = jax.random.key_data(jax.random.key(config.seed))
  if ckpt.latest_step() is not None:
    abstract = jax.eval_shape(lambda: init_loop_state(method, rng, {}))
    state = ckpt.restore(checkpoint.abstract_with_sharding(abstract, replicated), iterators)
  else:
    initial = initial_weights(method, config)
    state = jax.jit(lambda init: init_loop_state(method, rng, init),
                    out_shardings=replicated)(initial)
  start = int(state.step)
  if lead:
    parameter_overview.log_parameter_overview(host_copy(method.ema_params(state.method)))

  consts = jax.device_put(method.constants(), replicated)
  train_step = jax.jit(make_train_step(method, config.train.ema_decay),
                       in_shardings=(replicated, batch_sharding, replicated),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  evaluation = _Evaluation(method, workdir, writer, lead)
  num_steps, log_every = config.train.num_steps, config.train.log_every
  logging.info('training steps %d -> %d', start, num_steps)

  def products() -> dict[str, api.Product]:
    return {name: api.Product(spec, host_copy(variables))
            for name, (spec, variables) in method.exports(state.method, state.ema).items()}

  summary = Summary(start, {}, [])
  pending, bad_images, t_log, steps_log = [], 0, time.perf_counter(), 0
  t_start, step, stopped_by = time.perf_counter(), start, None
  with _StopSignal() as stop:
    while step < num_steps:
      local = {}
      for name, it in iterators.items():
        local[name], bad = _device_fields(next(it))
        bad_images += bad
      state, out = train_step(state, _global_batch(local, batch_sharding), consts)
      step += 1
      steps_log += 1
      pending.append(out)

      at_log = step % log_every == 0 or step == num_steps
      stop_now = stop.requested is not None
      if jax.process_count() > 1:  # every process must stop at the same step
        stop_now = at_log and bool(multihost_utils.process_allgather(np.array(stop_now)).any())
      if at_log or stop_now:
        scalars = {f'train/{k}': v for k, v in _mean_metrics(pending).items()}
        total_skipped, consecutive = (int(x) for x in host_copy(state.nonfinite))
        rate = steps_log / (time.perf_counter() - t_log)
        scalars.update({'train/steps_per_sec': rate, 'train/skipped_total': total_skipped,
                        'train/bad_images': bad_images})
        writer.write_scalars(step, scalars)
        eta = (num_steps - step) / max(rate, 1e-9)
        losses = {k[6:]: v for k, v in scalars.items() if k[6:] in out and k != 'train/skipped'}
        logging.info('step %d/%d  %.2f steps/s  ETA %s  %s', step, num_steps, rate,
                     time.strftime('%H:%M:%S', time.gmtime(eta)),
                     '  '.join(f'{k}={v:.4g}' for k, v in losses.items()))
        pending, t_log, steps_log = [], time.perf_counter(), 0
        if consecutive >= config.train.max_consecutive_nonfinite:
          ckpt.close()
          raise TrainingStopped(
              f'{consecutive} consecutive steps had a non-finite loss or gradient (last at '
              f'step {step}); updates were skipped, so the checkpoints in {ckpt.directory} hold '
              'the last good weights. Lower the learning rate or check the data, then re-run to '
              'resume.')

      if evaluation.evaluators and (
          (config.eval.every and step % config.eval.every == 0) or step == num_steps):
        summary = evaluation.run(products(), step)

      if ckpt.save(step, state, iterators, force=stop_now or step == num_steps) and lead:
        checkpoint.export_products(workdir, products(), step)
      if stop_now:
        stopped_by = stop.requested or 'SIGTERM'  # None: requested on another process
        break
  if not summary.metrics and evaluation.evaluators and step >= num_steps:  # finished, resumed
    summary = evaluation.run(products(), step)
  ckpt.close()
  writer.flush()
  if lead:
    writers.plot_curves(os.path.join(workdir, writers.HISTORY_FILE),
                        os.path.join(workdir, writers.CURVES_FILE))
  logging.info('%s at step %d after %.0f s', 'stopped' if step < num_steps else 'finished', step,
               time.perf_counter() - t_start)
  for it in iterators.values():
    getattr(it, 'close', lambda: None)()
  if stopped_by:
    raise TrainingInterrupted(stopped_by, step, ckpt.directory)
  return summary
