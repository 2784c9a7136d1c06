"""Test set-up: 4 fake CPU devices, absl flags parsed (grain reads them), fast compiles; the
parity helpers `nhwc` and `assert_close` (`from conftest import ...`)."""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')  # faster compiles, same results
# One compilation cache per pytest run, removed at its end (subprocesses inherit it): runs that
# resume or repeat a configuration compile it once.
_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='condsr_jax_xla_')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

from condsr_jax import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.tune_xla_cpu()  # as the entry points do, before JAX starts its backend

from absl import flags  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'reference'
REPO = pathlib.Path(__file__).resolve().parent.parent


def nhwc(a: np.ndarray) -> np.ndarray:
  """A PyTorch NCHW array (fixture images, feature maps) in NHWC."""
  return np.asarray(a).transpose(0, 2, 3, 1)


def assert_close(actual, ref, rtol: float = 1e-4) -> None:
  """Parity with a reference output: same shape and max|actual - ref| <= rtol * max|ref|."""
  actual, ref = np.asarray(actual), np.asarray(ref)
  assert actual.shape == ref.shape, f'shape {actual.shape} vs reference {ref.shape}'
  err = np.abs(actual - ref).max() / np.abs(ref).max()
  assert err <= rtol, f'max error {err:.2e} of max |ref| (allowed {rtol:.0e})'


def evaluate_command_psnr(capsys, config, workdir) -> str:
  """The mean PSNR that `condsr-jax evaluate` prints for the model a run of `config` exported
  into `workdir`, on the run's validation images, grid and measuring convention ('%.3f')."""
  from condsr_jax import cli  # pylint: disable=g-import-not-at-top
  e = config.eval
  capsys.readouterr()
  args = ['evaluate', e.val, '-m', str(workdir), '--grid', e.grid, '--max-images',
          str(e.max_images), '--crop-border', str(e.crop_border)]
  if e.grid == 'draws':  # the run's own degradation, read from the workdir's config.json
    args += ['--draw-size', str(e.draw_size or config.degradation.crop_pad)]
  assert cli.main(args) == 0
  lines = capsys.readouterr().out.splitlines()
  header = lines[0].split()
  mean = next(line for line in lines if line.startswith('mean ')).split()
  column = header.index('PSNR-Y' if e.y_channel else 'PSNR')  # 'image' and 'SR' align
  return f'{float(mean[column + 1]):.3f}'


def stopped_at(workdir, step: int, into) -> pathlib.Path:
  """`into` as a run of `workdir`'s recipe stopped at `step` leaves it: only `workdir`'s checkpoint
  of that step. Resuming it and comparing with `workdir`'s later checkpoints tests exact resume
  without training (and compiling) the first `step` steps a second time."""
  into = pathlib.Path(into)
  shutil.copytree(pathlib.Path(workdir) / 'checkpoints' / str(step),
                  into / 'checkpoints' / str(step))
  return into


def pytest_configure(config):
  del config
  flags.FLAGS.mark_as_parsed()


def pytest_unconfigure(config):
  if _CACHE and not hasattr(config, 'workerinput'):  # the controlling process cleans up
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(params=['whole_batch', 'one_cpu_device'])
def filter_path(request, monkeypatch) -> str:
  """Both ways the filters of `filters` run: whole batches (accelerators, sharded batches: what
  the 4-device test process does by itself) and image by image (one CPU device)."""
  from condsr_jax.degrade import filters  # pylint: disable=g-import-not-at-top
  def forget_traces():  # made under the other path (not every cache: others' compilations stay)
    filters.filter_on_canvas.clear_cache()
    filters.usm_sharp.clear_cache()

  monkeypatch.setattr(filters, 'single_cpu_device', lambda: request.param == 'one_cpu_device')
  forget_traces()
  yield request.param
  forget_traces()


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
  return FIXTURES


@pytest.fixture
def smoke_config():
  """Factory: the ':smoke' variant of configs/NAME.py on the demo images, with overrides
  given as flattened names (`**{'train.num_steps': 4}`)."""
  from condsr_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  def make(name: str = 'edsr_bicubic_x4', **overrides):
    c = config_lib.sibling_recipe(str(REPO / 'configs' / f'{name}.py'), name).get_config('smoke')
    c.data.train = str(REPO / 'data' / 'demo' / 'train')
    c.eval.val = str(REPO / 'data' / 'demo' / 'val')
    c.update_from_flattened_dict(overrides)
    return c

  return make


def start_training(config, devices=None):
  """(method, initial loop state, jitted loop step) of a config, as the loop builds them; on a
  ('data',) mesh of `devices` (state replicated, batch sharded) when given."""
  import jax  # pylint: disable=g-import-not-at-top
  from condsr_jax import methods, train  # pylint: disable=g-import-not-at-top
  method = methods.build(config)
  rng = jax.random.key_data(jax.random.key(0))
  step = train.make_train_step(method, config.train.ema_decay)
  if devices is None:
    return method, jax.jit(lambda: train.init_loop_state(method, rng, {}))(), jax.jit(step)
  mesh = jax.sharding.Mesh(np.array(devices), ('data',))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  state = jax.jit(lambda: train.init_loop_state(method, rng, {}), out_shardings=repl)()
  sharded = jax.jit(step, in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  return method, state, lambda s, batch, consts: sharded(s, jax.device_put(batch, data), consts)


def training_batch(method, config, seed: int = 0) -> dict:
  """A 'train' stream batch as grain delivers it: random GT canvases plus the method's
  per-element degradation draws."""
  rng = np.random.default_rng(seed)
  sampler = method.degradation.param_sampler()
  k, size = config.data.batch_size, method.degradation.canvas
  elems = [sampler(rng) for _ in range(k)]
  batch = {key: np.stack([e[key] for e in elems]) for key in elems[0]}
  batch['gt'] = rng.random((k, size, size, 3), np.float32)
  return {'train': batch}
