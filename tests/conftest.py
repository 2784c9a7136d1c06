"""Test set-up: 4 fake CPU devices, absl flags parsed (grain reads them), fast compiles."""

import os
import pathlib

os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'reference'
REPO = pathlib.Path(__file__).resolve().parent.parent


def pytest_configure(config):
  del config
  jax.config.update('jax_disable_most_optimizations', True)
  flags.FLAGS.mark_as_parsed()


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
  return FIXTURES
