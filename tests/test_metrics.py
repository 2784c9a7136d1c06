"""PSNR/SSIM reproduce BasicSR's numbers; the batched JAX PSNR agrees with them."""

import pathlib

import numpy as np
import pytest

from condsr_jax import metrics


@pytest.fixture
def reference(fixtures_dir):
  return dict(np.load(fixtures_dir / 'basicsr' / 'metrics.npz'))


@pytest.mark.parametrize('crop_border', [0, 4])
@pytest.mark.parametrize('y_channel', [False, True])
def test_psnr_ssim_match_basicsr(reference, crop_border, y_channel):
  img, img2 = reference['in/img'][..., ::-1], reference['in/img2'][..., ::-1]  # BGR -> RGB
  suffix = f'crop{crop_border}_y{int(y_channel)}'
  psnr = metrics.psnr(img, img2, crop_border, y_channel)
  ssim = metrics.ssim(img, img2, crop_border, y_channel)
  assert abs(psnr - reference[f'out/psnr_{suffix}']) < 1e-6
  assert abs(ssim - reference[f'out/ssim_{suffix}']) < 1e-6
  img8, img28 = img.astype(np.uint8), img2.astype(np.uint8)
  assert metrics.psnr(img8, img28, crop_border, y_channel) == psnr
  assert metrics.ssim(img8, img28, crop_border, y_channel) == ssim


def test_identical_images_and_bad_inputs():
  img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
  assert metrics.psnr(img, img, 0) == float('inf')
  assert metrics.ssim(img, img, 0) == pytest.approx(1.0)
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.psnr(img, img[:8], 0)
  with pytest.raises(ValueError, match='11x11'):
    metrics.ssim(img, img, 3)


def test_gray_images_measure_like_one_channel():
  rng = np.random.default_rng(1)
  a, b = rng.integers(0, 256, (2, 20, 20), np.uint8)
  assert metrics.psnr(a, b, 2) == metrics.psnr(a[..., None], b[..., None], 2)
  assert metrics.ssim(a, b, 2, y_channel=True) == metrics.ssim(a[..., None], b[..., None], 2)


def test_validation_metrics_quantize_before_measuring():
  rng = np.random.default_rng(2)
  gt8 = rng.integers(0, 256, (2, 24, 20, 3), np.uint8)
  sr = gt8 / 255 + rng.normal(0, 0.01, gt8.shape)  # includes values outside [0, 1]
  sr8 = np.clip(np.round(sr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
  result = metrics.validation_metrics(sr, gt8 / 255, crop_border=4)
  for i in range(2):
    for y in (False, True):
      suffix = '_y' if y else ''
      assert result[f'psnr{suffix}'][i] == metrics.psnr(sr8[i], gt8[i], 4, y)
      assert result[f'ssim{suffix}'][i] == metrics.ssim(sr8[i], gt8[i], 4, y)
      assert result[f'psnr{suffix}'][i] != metrics.psnr(np.clip(sr[i], 0, 1) * 255, gt8[i], 4, y)


def test_the_mild_grid_degrades_every_image_deterministically():
  from condsr_jax import evaluate  # pylint: disable=g-import-not-at-top
  val = str(pathlib.Path(__file__).resolve().parent.parent / 'data' / 'demo' / 'val')
  settings = evaluate.FIXED_GRIDS['mild']
  pairs = evaluate.load_pairs(val, 4, 'mild', max_images=len(settings) + 1)
  assert len(pairs) == len(settings) + 1  # every setting of the first image, then the next
  assert pairs[0].name.split('@')[0] != pairs[-1].name.split('@')[0]
  assert pairs[0].lq.shape[0] * 4 == pairs[0].gt.shape[0]
  again = evaluate.load_pairs(val, 4, 'mild', max_images=2)
  for a, b in zip(pairs, again):
    assert a.name == b.name
    np.testing.assert_array_equal(a.lq, b.lq)


def test_the_resamplers_grid_shrinks_by_box_bilinear_and_lanczos():
  from condsr_jax import evaluate  # pylint: disable=g-import-not-at-top
  val = str(pathlib.Path(__file__).resolve().parent.parent / 'data' / 'demo' / 'val')
  pairs = evaluate.load_pairs(val, 4, 'resamplers', max_images=2)
  assert [p.name.split('@')[1] for p in pairs] == ['blur0_noise0_jpeg0_area',
                                                   'blur0_noise0_jpeg85_area']
  gt = pairs[0].gt
  box = gt.reshape(gt.shape[0] // 4, 4, gt.shape[1] // 4, 4, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(pairs[0].lq, box, atol=0.5 / 255 + 1e-6)  # 8-bit rounding only
  assert 0 < np.abs(pairs[1].lq - pairs[0].lq).max()  # JPEG 85 changes it
