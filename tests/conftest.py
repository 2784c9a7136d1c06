"""Test set-up: 4 fake CPU devices, absl flags parsed (grain reads them), fast compiles."""

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

from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'reference'
REPO = pathlib.Path(__file__).resolve().parent.parent


def pytest_configure(config):
  del config
  flags.FLAGS.mark_as_parsed()


def pytest_unconfigure(config):
  if _CACHE and not hasattr(config, 'workerinput'):  # the controlling process cleans up
    shutil.rmtree(_CACHE, ignore_errors=True)


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
