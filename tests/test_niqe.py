"""NIQE reproduces BasicSR's `calculate_niqe` on the cases of tests/fixtures/perceptual/niqe.npz."""

import importlib.resources
import json
import pathlib

import numpy as np
import pytest

from condsr_jax import metrics

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'perceptual' / 'niqe.npz'


def _cases() -> dict[str, dict]:
  with np.load(FIXTURE) as d:
    return json.loads(str(d['meta']))['cases']


@pytest.fixture(scope='module')
def reference() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as d:
    return dict(d)


@pytest.mark.parametrize('name', sorted(_cases()))
def test_niqe_matches_basicsr(reference, name):
  case = _cases()[name]
  img = reference[f'img/{case["image"]}']  # RGB (BasicSR was given it in BGR) or gray HW
  assert list(img.shape) == case['shape']
  ref = float(reference[f'niqe/{name}'])
  value = metrics.niqe(img, case['crop_border'], case['convert_to'])
  assert abs(value - ref) <= 1e-4 * abs(ref), (value, ref)
  # Float input in [0, 255] measures like the uint8 image.
  assert metrics.niqe(img.astype(np.float64), case['crop_border'], case['convert_to']) == value


def test_niqe_needs_whole_blocks():
  img = np.random.default_rng(0).integers(0, 256, (100, 200, 3), np.uint8)
  with pytest.raises(ValueError, match=r'at least 96x96 pixels after cropping 4 .* got 92x192'):
    metrics.niqe(img, crop_border=4)
  # One block, or one beside a flat one (NaN features), leaves no covariance to fit (in BasicSR,
  # numpy's SVD fails on the NaN matrix).
  with pytest.raises(ValueError, match=r'at least two 96x96 blocks .* has 1 of 1'):
    metrics.niqe(img[:, :191], 0)
  with pytest.raises(ValueError, match=r'at least two 96x96 blocks .* has 1 of 2'):
    metrics.niqe(np.concatenate([img[:, :96], np.zeros_like(img[:, :96])], axis=1), 0, 'gray')
  with pytest.raises(ValueError, match='convert_to'):
    metrics.niqe(img, 0, 'ycbcr')


def test_pristine_parameters_ship_with_their_source():
  assets = importlib.resources.files('condsr_jax') / 'assets'
  assert (assets / 'niqe_pris_params.npz').is_file()
  readme = (assets / 'README.md').read_text()
  assert 'niqe_pris_params.npz' in readme and 'BasicSR' in readme and 'niqe_release.zip' in readme
