"""The degradation pipelines: Real-ESRGAN's second order on static canvases (one compilation,
per-sample or per-batch randomness, exact on identity-like parameters), the classic CMDSR / DASR
degradation against OpenCV, task batches sharing a degradation, and the gallery command."""

import argparse
import math
import pickle

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import special

from condsr_jax import images
from condsr_jax.degrade import (canvas, classic, filters, gallery, jpeg, kernels, matlab, noise,
                                realesrgan, records, resize, sampling, tasks)

S = 96  # GT canvas of the small Real-ESRGAN pipeline (stage-1 canvas 144, stage-2 32)
G = 64  # its GT crop (LQ crop 16)
B = 2


def _stack(records):
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


def _small_config(mode='per_sample', scale=4):
  c = realesrgan.default_config(scale)
  c.crop_pad, c.gt_size, c.mode = S, G, mode
  return c


def _smooth_images(n, size, seed=0, gray=False):
  """8-bit smooth random content in [0.2, 0.8] (no clipping by moderate noise)."""
  rng = np.random.default_rng(seed)
  low = rng.random((n, size // 8, size // 8, 1 if gray else 3))
  img = cv2.resize(low.transpose(1, 2, 0, 3).reshape(size // 8, size // 8, -1), (size, size),
                   interpolation=cv2.INTER_CUBIC).reshape(size, size, n, -1).transpose(2, 0, 1, 3)
  img = 0.2 + 0.6 * np.clip(img, 0, 1)
  if gray:
    img = np.repeat(img, 3, axis=-1)
  return (np.round(img * 255) / 255).astype(np.float32)


def _batch(deg, gt, seeds):
  sampler = deg.param_sampler()
  batch = _stack([sampler(np.random.default_rng(s)) for s in seeds])
  batch['gt'] = gt
  return batch


def _identity_like(batch, **overrides):
  """Delta kernels, keep-size resizes, zero noise, JPEG quality 99.9 (gray images compress
  almost losslessly); `overrides` set other fields for the whole batch."""
  out = dict(batch)
  pulse = sampling.kernel_params('pulse', 1)
  for prefix in ('kernel1', 'kernel2', 'sinc'):
    for k, v in pulse.items():
      out[f'{prefix}/{k}'] = np.full(B, v)
  values = {'resize1/choice': 2, 'resize1/scale': 1.0, 'resize1/size': S, 'resize1/mode': 2,
            'resize2/choice': 2, 'resize2/scale': 1.0, 'resize2/size': S // 4,
            'noise1/gaussian': True, 'noise1/sigma': 0.0, 'noise1/gray': True,
            'noise2/gaussian': True, 'noise2/sigma': 0.0, 'noise2/gray': True,
            'jpeg1/quality': 99.9, 'jpeg2/quality': 99.9, 'blur2/apply': True,
            'crop/top': 0, 'crop/left': 0, **overrides}
  for k, v in values.items():
    out[k] = np.full(B, v, dtype=np.asarray(batch[k]).dtype)
  return out


@pytest.fixture(scope='module')
def deg():
  return realesrgan.RealESRGANDegradation(_small_config(), 4)


@pytest.fixture(scope='module')
def degrade_fn(deg):
  return jax.jit(deg)


# --- Real-ESRGAN: parameters -------------------------------------------------------------------


def test_default_config_has_the_reference_values():
  c = realesrgan.default_config(4)
  assert (c.kind, c.gt_size, c.crop_pad, c.mode) == ('realesrgan', 256, 400, 'per_sample')
  assert tuple(c.resize_prob) == (0.2, 0.7, 0.1) and tuple(c.resize_range) == (0.15, 1.5)
  assert tuple(c.resize_prob2) == (0.3, 0.4, 0.3) and tuple(c.resize_range2) == (0.3, 1.2)
  assert tuple(c.blur_sigma) == (0.2, 3.0) and tuple(c.blur_sigma2) == (0.2, 1.5)
  assert tuple(c.noise_range) == (1, 30) and tuple(c.noise_range2) == (1, 25)
  assert tuple(c.poisson_scale_range) == (0.05, 3) and tuple(c.poisson_scale_range2) == (
      0.05, 2.5)
  assert (c.second_blur_prob, c.final_sinc_prob, c.sinc_prob, c.sinc_prob2) == (
      0.8, 0.8, 0.1, 0.1)
  g = realesrgan.Geometry.from_config(c, 4)
  assert (g.stage1, g.stage2, g.lq_size) == (608, 128, 100)
  assert g.buckets == (160, 288, 400, 512, 608)


def test_sampler_is_picklable_fixed_shape_and_follows_the_probabilities(deg):
  sampler = pickle.loads(pickle.dumps(deg.param_sampler()))
  first = sampler(np.random.default_rng(3))
  again = deg.param_sampler()(np.random.default_rng(3))
  assert first.keys() == again.keys()
  for k in first:
    np.testing.assert_array_equal(first[k], again[k])
  draws = _stack([sampler(np.random.default_rng([7, i])) for i in range(2000)])
  assert all(draws[k].shape == (2000,) for k in draws)
  n = 2000
  tol = lambda p: 5 * math.sqrt(p * (1 - p) / n)
  for choice, p in enumerate((0.2, 0.7, 0.1)):
    assert abs(np.mean(draws['resize1/choice'] == choice) - p) < tol(p)
  for choice, p in enumerate((0.3, 0.4, 0.3)):
    assert abs(np.mean(draws['resize2/choice'] == choice) - p) < tol(p)
  assert abs(draws['blur2/apply'].mean() - 0.8) < tol(0.8)
  pulse = sampling.KERNEL_TYPES.index('pulse')
  assert abs(np.mean(draws['sinc/kernel_type'] != pulse) - 0.8) < tol(0.8)
  up = draws['resize1/choice'] == 0
  assert draws['resize1/scale'][up].min() >= 1 and draws['resize1/scale'][up].max() <= 1.5
  down = draws['resize1/choice'] == 1
  assert draws['resize1/scale'][down].min() >= 0.15 and draws['resize1/scale'][down].max() <= 1
  np.testing.assert_array_equal(
      draws['resize1/size'], np.floor(S * draws['resize1/scale'].astype(np.float64)))
  np.testing.assert_array_equal(
      draws['resize2/size'], (S / 4 * draws['resize2/scale'].astype(np.float64)).astype(int))
  assert 1 <= draws['noise1/sigma'].min() and draws['noise1/sigma'].max() <= 30
  assert 30 <= draws['jpeg1/quality'].min() and draws['jpeg2/quality'].max() <= 95
  assert draws['crop/top'].max() == (S - G) // 4


# --- Real-ESRGAN: canvas ops against the plain ops ---------------------------------------------


@pytest.mark.parametrize('mode', realesrgan.MODES)
def test_resize_on_canvas_matches_interpolate_on_the_valid_region(mode):
  x = jnp.asarray(_smooth_images(2, 40, seed=1))
  scales = (0.63, 1.37)  # stage-1 semantics: coordinates map with the given scale
  sizes = [math.floor(40 * s) for s in scales]
  index = realesrgan.MODES.index(mode)
  out = canvas.resize_on_canvas(x, 64, jnp.full(2, index), scale=jnp.asarray(scales),
                                out_valid=jnp.asarray(sizes))
  for i, (s, n) in enumerate(zip(scales, sizes)):
    ref = resize.interpolate(x[i:i + 1], scale_factor=s, mode=mode)[0]
    np.testing.assert_allclose(out[i, :n, :n], ref, atol=2e-6)
    assert not np.asarray(out[i, n:]).any() and not np.asarray(out[i, :, n:]).any()
  # Size semantics from a partially valid canvas (the second resize).
  back = canvas.resize_on_canvas(out, 32, jnp.full(2, index), in_valid=jnp.asarray(sizes),
                                 out_valid=jnp.asarray([17, 29]))
  for i, (n, m) in enumerate(zip(sizes, (17, 29))):
    ref = resize.interpolate(out[i:i + 1, :n, :n], size=(m, m), mode=mode)[0]
    np.testing.assert_allclose(back[i, :m, :m], ref, atol=2e-6)


def test_filter_on_canvas_reflects_at_the_true_border(filter_path):
  x = jnp.asarray(np.random.default_rng(2).random((2, 48, 48, 3), np.float32))
  k = kernels.kernel_from_params(_stack([
      sampling.kernel_params('aniso', 21, 2.0, 0.7, 0.4),
      sampling.kernel_params('sinc', 13, omega_c=1.3)]), 21)
  valid = jnp.asarray([30, 48])
  masked = x * canvas.valid_mask(valid, 48)
  out = filters.filter_on_canvas(masked, k, valid)
  np.testing.assert_allclose(out[0, :30, :30], filters.filter2d(x[:1, :30, :30], k[:1])[0],
                             atol=1e-6)
  np.testing.assert_allclose(out[1], filters.filter2d(x[1:], k[1:])[0], atol=1e-6)
  np.testing.assert_allclose(filters.filter_on_canvas(x, k), filters.filter2d(x, k),
                             atol=1e-6)
  wide = x[:, :40]  # non-square images without valid regions
  np.testing.assert_allclose(filters.filter_on_canvas(wide, k), filters.filter2d(wide, k),
                             atol=1e-6)


def test_jpeg_on_canvas_matches_the_op():
  x = jnp.asarray(_smooth_images(2, 64, seed=3))
  valid = jnp.asarray([37, 64])
  out = canvas.jpeg_on_canvas(x + 0.3, jnp.asarray([40.0, 75.0]), valid)
  ref = jpeg.diff_jpeg(jnp.clip(x[:1, :37, :37] + 0.3, 0, 1), 40.0)
  np.testing.assert_allclose(out[0, :37, :37], ref[0], atol=1e-5)
  assert not np.asarray(out[0, 37:]).any()


def test_quantized_poisson_is_the_exact_inverse_cdf():
  rng = np.random.default_rng(4)
  z = np.clip(rng.standard_normal((4, 16, 16, 3)) * 2.5, -8, 40).astype(np.float32)
  img = (rng.integers(0, 256, (4, 16, 16, 3)) / 255).astype(np.float32)
  levels = np.array([1.0, 8.0, 128.0, 256.0], np.float32)
  out = np.asarray(noise.quantized_poisson(jnp.asarray(z), jnp.asarray(img), levels))
  u = np.asarray(jax.scipy.special.ndtr(jnp.asarray(z)))
  rate = np.round(img * 255) * levels[:, None, None, None] / 255
  cdf = special.pdtr(np.arange(512), rate[..., None]).astype(np.float32)
  np.testing.assert_array_equal(out, np.sum(cdf < u[..., None], axis=-1))
  # Moments of many draws at a few rates.
  z = jnp.asarray(rng.standard_normal((3, 64, 64, 3)), jnp.float32)
  img = jnp.broadcast_to(jnp.asarray([3, 100, 255], jnp.float32)[:, None, None, None] / 255,
                         z.shape)
  draws = np.asarray(noise.quantized_poisson(z, img, jnp.asarray([4.0, 64.0, 256.0])))
  for i, lam in enumerate((3 * 4 / 255, 100 * 64 / 255, 256.0)):
    assert abs(draws[i].mean() - lam) < 5 * math.sqrt(lam / draws[i].size)
    assert abs(draws[i].var() / lam - 1) < 0.05


def test_poisson_noise_statistics_match_the_reference_op():
  img = jnp.asarray(_smooth_images(2, 64, seed=5))
  key = jax.random.key(5)
  ones, zeros = jnp.ones(2), jnp.zeros(2, bool)
  ours = realesrgan.add_noise(key, img, zeros, ones, jnp.asarray([1.0, 2.0]),
                              jnp.asarray([False, True])) - img
  ref = noise.add_poisson_noise(img, jnp.asarray([1.0, 2.0]), jnp.asarray([False, True]),
                                key=jax.random.key(6)) - img
  for i in range(2):
    assert abs(float(ours[i].std()) / float(ref[i].std()) - 1) < 0.05
    assert abs(float(ours[i].mean())) < 3e-3
  out = np.asarray(ours[1] + img[1])
  unclipped = np.all((out > 0) & (out < 1), axis=-1)
  np.testing.assert_allclose(ours[1, ..., 0][unclipped], ours[1, ..., 2][unclipped], atol=1e-6)


def test_poisson_levels_count_only_the_valid_region():
  # 8 distinct values inside (levels 8), 256 outside (levels 256): noise std differs by ~5.7x.
  inside = np.random.default_rng(6).integers(0, 8, (1, 40, 40, 3)) * 20 / 255 + 0.2
  canvas = np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3)) / 255
  canvas[:, :40, :40] = inside
  canvas = jnp.asarray(canvas, jnp.float32)
  args = (jnp.zeros(1, bool), jnp.ones(1), jnp.ones(1), jnp.zeros(1, bool))
  on_canvas = realesrgan.add_noise(jax.random.key(7), canvas, *args, valid=jnp.asarray([40]))
  alone = realesrgan.add_noise(jax.random.key(8), canvas[:, :40, :40], *args)
  ratio = (float((on_canvas - canvas)[:, :40, :40].std())
           / float((alone - canvas[:, :40, :40]).std()))
  assert abs(ratio - 1) < 0.1


# --- Real-ESRGAN: the pipeline -----------------------------------------------------------------


def test_pipeline_compiles_once_over_random_parameters(deg):
  fn = jax.jit(deg)
  gt = _smooth_images(B, S)
  for i in range(20):
    out = fn(_batch(deg, gt, [(i, 0), (i, 1)]), jax.random.key(i))
  jax.block_until_ready(out)
  assert fn._cache_size() == 1


def test_shapes_x4_x2_and_gray():
  for scale, channels in ((4, 3), (2, 3), (4, 1)):
    d = realesrgan.RealESRGANDegradation(_small_config(scale=scale), scale)
    batch = _batch(d, np.zeros((3, S, S, channels), np.float32), [0, 1, 2])
    out = jax.eval_shape(d, batch, jax.random.key(0))
    assert out['lq'].shape == (3, G // scale, G // scale, channels)
    assert out['gt'].shape == out['gt_usm'].shape == (3, G, G, channels)
    assert out['record']['kernel1'].shape == (3, 21, 21)


def test_deterministic_given_parameters_and_key(deg, degrade_fn):
  batch = _batch(deg, _smooth_images(B, S), [10, 11])
  a = degrade_fn(batch, jax.random.key(1))
  b = degrade_fn(batch, jax.random.key(1))
  c = degrade_fn(batch, jax.random.key(2))
  np.testing.assert_array_equal(a['lq'], b['lq'])
  assert np.abs(np.asarray(a['lq']) - np.asarray(c['lq'])).max() > 0  # noise follows the key


def test_record_holds_the_applied_parameters(deg, degrade_fn):
  batch = _batch(deg, _smooth_images(B, S), [12, 13])
  record = degrade_fn(batch, jax.random.key(3))['record']
  for k in deg.param_keys():
    np.testing.assert_array_equal(record[k], batch[k])
  np.testing.assert_allclose(
      record['kernel2'], kernels.kernel_from_params(records.kernel_record(batch, 'kernel2')),
      atol=1e-7)


@pytest.mark.parametrize('mode_index', [0, 2])
def test_identity_like_parameters_give_the_plain_downscale(deg, degrade_fn, mode_index):
  gt = _smooth_images(B, S, seed=7, gray=True)
  batch = _identity_like(_batch(deg, gt, [20, 21]), **{'resize2/mode': mode_index})
  batch['final/sinc_first'] = np.array([True, False])
  batch['crop/top'], batch['crop/left'] = np.array([0, 8], np.int32), np.array([8, 4], np.int32)
  out = degrade_fn(batch, jax.random.key(4))
  usm = filters.usm_sharp(jnp.asarray(gt))
  full = resize.interpolate(usm, size=(S // 4, S // 4), mode=realesrgan.MODES[mode_index])
  for i in range(B):
    t, l = int(batch['crop/top'][i]), int(batch['crop/left'][i])
    expected = noise.quantize(full[i, t:t + G // 4, l:l + G // 4])
    err = np.abs(np.asarray(out['lq'][i]) - np.asarray(expected))
    assert err.max() <= 1 / 255 + 1e-6 and err.mean() < 0.1 / 255
    np.testing.assert_array_equal(out['gt'][i], gt[i, 4 * t:4 * t + G, 4 * l:4 * l + G])
    np.testing.assert_allclose(out['gt_usm'][i], usm[i, 4 * t:4 * t + G, 4 * l:4 * l + G],
                               atol=1e-6)


def test_forced_gray_gaussian_noise_has_its_sigma(deg, degrade_fn):
  gt = _smooth_images(B, S, seed=8, gray=True)
  clean = _identity_like(_batch(deg, gt, [30, 31]))
  noisy = _identity_like(_batch(deg, gt, [30, 31]), **{'noise2/sigma': 20.0})
  diff = np.asarray(degrade_fn(noisy, jax.random.key(5))['lq']) - np.asarray(
      degrade_fn(clean, jax.random.key(5))['lq'])
  assert abs(diff.std() * 255 / 20 - 1) < 0.15
  np.testing.assert_allclose(diff[..., 0], diff[..., 1], atol=1.5 / 255)  # gray field


def test_lq_mean_follows_the_downscaled_gt(deg, degrade_fn):
  gt = _smooth_images(B, S, seed=9)
  errs = []
  for i in range(6):
    batch = _batch(deg, gt, [(40, i), (41, i)])
    batch['crop/top'] = batch['crop/left'] = np.zeros(B, np.int32)
    lq = np.asarray(degrade_fn(batch, jax.random.key(i))['lq'])
    ref = np.asarray(resize.interpolate(jnp.asarray(gt), size=(S // 4, S // 4), mode='area'))
    errs.append(np.abs(lq.mean(axis=(1, 2)) - ref[:, :16, :16].mean(axis=(1, 2))).mean())
  assert np.mean(errs) < 0.06


def test_canvas_buckets_and_loops_leave_the_result_unchanged():
  """Noise-free draws (the only random part): every bucket canvas and both loops give the
  single-canvas batch result, up to float rounding before the 8-bit quantisation."""
  single = _small_config()
  single.canvas_buckets, single.loop = (), 'batch'
  ref = realesrgan.RealESRGANDegradation(single, 4)
  assert ref.geometry.buckets == (144,)
  gt = _smooth_images(4, S, seed=11)
  batch = _batch(ref, gt, [70, 71, 72, 73])
  scales = np.array([0.3, 0.8, 1.3, 1.0], np.float32)  # sizes 28, 76, 124, 96
  batch['resize1/scale'], batch['resize1/size'] = scales, np.floor(S * scales).astype(np.int32)
  for stage in ('noise1', 'noise2'):
    batch[f'{stage}/gaussian'], batch[f'{stage}/sigma'] = np.ones(4, bool), np.zeros(4, np.float32)
  batch['final/sinc_first'] = np.array([True, False, True, False])
  expected = np.asarray(jax.jit(ref)(batch, jax.random.key(0))['lq'])
  for loop in ('batch', 'examples'):  # the batch on bucket 128; each example on its own
    bucketed = _small_config()
    bucketed.loop = loop
    deg = realesrgan.RealESRGANDegradation(bucketed, 4)
    assert deg.geometry.buckets == (48, 80, 96, 128, 144)
    assert deg.per_example() == (loop == 'examples')
    lq = np.asarray(jax.jit(deg)(batch, jax.random.key(1))['lq'])
    err = np.abs(lq - expected)
    assert err.max() <= 1 / 255 + 1e-6 and err.mean() < 1e-3 / 255, loop


def test_reference_mode_shares_the_batch_choices_and_gray_field(degrade_fn):
  d = realesrgan.RealESRGANDegradation(_small_config('reference'), 4)
  gt = _smooth_images(B, S, seed=10, gray=True)
  batch = _batch(d, gt, [50, 51])
  batch['gt'] = np.repeat(gt[:1], B, axis=0)
  record = jax.jit(d.record)(batch)
  for k in d.param_keys():
    expected = np.full(B, batch[k][0]) if k in realesrgan.BATCH_LEVEL else batch[k]
    np.testing.assert_array_equal(record[k], expected)
  # Identical images and per-sample values: the shared gray Gaussian field makes them equal.
  same = _identity_like(batch, **{'noise2/sigma': 15.0})
  lq = np.asarray(jax.jit(d)(same, jax.random.key(6))['lq'])
  np.testing.assert_array_equal(lq[0], lq[1])
  lq = np.asarray(degrade_fn(same, jax.random.key(6))['lq'])
  assert np.abs(lq[0] - lq[1]).max() > 0


# --- classic -----------------------------------------------------------------------------------


def _classic(reference='cmdsr', scale=4, **fields):
  c = classic.default_config(scale, reference)
  c.crop_pad, c.gt_size = 64, 32
  c.update(fields)
  return classic.ClassicDegradation(c, scale)


def test_classic_defaults_follow_the_references():
  cmdsr = classic.default_config(4, 'cmdsr')
  assert (cmdsr.kernel_size, cmdsr.downsample, cmdsr.rounding, cmdsr.gt_size) == (
      15, 'bicubic', 'cmdsr', 192)
  for scale, top in ((2, 2.0), (3, 3.0), (4, 4.0)):
    assert classic.default_config(scale, 'dasr').sigma_range[1] == top
  draws = _stack([_classic().param_sampler()(np.random.default_rng(i)) for i in range(400)])
  sigma = draws['blur/sigma_x']
  np.testing.assert_allclose(sigma * 10, np.round(sigma * 10), atol=1e-4)
  assert sigma.min() >= 0.2 - 1e-6 and sigma.max() <= 4.0 + 1e-6
  assert set(np.unique(draws['noise/sigma'])) <= set(range(76))
  dasr = _stack([_classic('dasr', 2).param_sampler()(np.random.default_rng(i))
                 for i in range(100)])
  assert dasr['blur/sigma_x'].max() <= 2.0 and len(np.unique(dasr['blur/sigma_x'])) == 100


def test_classic_matches_opencv_blur_and_resize():
  d = _classic(rounding='none')
  hr = _smooth_images(2, 32, seed=11)
  p = _classic_record(d, (0.7, 2.3), (0, 0))
  lq = np.asarray(d.apply(jnp.asarray(hr)[:, None], p, jax.random.key(0)))[:, 0]
  for i, sigma in enumerate((0.7, 2.3)):
    ref = cv2.resize(cv2.GaussianBlur(hr[i], (15, 15), sigma), (8, 8),
                     interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(lq[i], np.clip(ref, 0, 1), atol=2e-6)


def _classic_record(d, sigmas, noise_levels, jpeg_apply=(False, False)):
  records = [sampling.kernel_params('iso', d.config.kernel_size, s) for s in sigmas]
  batch = {f'blur/{k}': v for k, v in _stack(records).items()}
  batch |= {'noise/sigma': np.asarray(noise_levels, np.float32),
            'jpeg/apply': np.asarray(jpeg_apply), 'jpeg/quality': np.full(2, 40.0, np.float32)}
  return d.record(batch, crop=False)


def _assert_equal_but_rounding_ties(actual, expected):
  """Equal 8-bit images, up to a rare one-level flip where float32 rounding error meets a .5."""
  err = np.abs(np.asarray(actual) - np.asarray(expected))
  assert err.max() <= 1 / 255 + 1e-6 and np.mean(err > 1e-6) < 0.01


def test_classic_cmdsr_rounding_and_dasr_matlab_downsampling():
  hr = jnp.asarray(_smooth_images(2, 32, seed=12))[:, None]
  d = _classic()
  lq = np.asarray(d.apply(hr, _classic_record(d, (1.0, 3.0), (0, 0)), jax.random.key(1)))
  np.testing.assert_allclose(lq * 255, np.round(lq * 255), atol=1e-4)  # uint8 values
  blurred = noise.quantize(filters.filter2d(hr[:, 0], kernels.bivariate_gaussian_kernel(
      15, jnp.asarray([1.0, 3.0]), jnp.asarray([1.0, 3.0]), pad_to=15)))
  expected = noise.quantize(resize.interpolate(blurred, size=(8, 8), mode='bicubic'))
  _assert_equal_but_rounding_ties(lq[:, 0], expected)
  d = _classic('dasr')
  lq = np.asarray(d.apply(hr, _classic_record(d, (1.0, 3.0), (0, 0)), jax.random.key(1)))
  blurred = filters.filter2d(hr[:, 0], kernels.bivariate_gaussian_kernel(
      21, jnp.asarray([1.0, 3.0]), jnp.asarray([1.0, 3.0]), pad_to=21))
  _assert_equal_but_rounding_ties(lq[:, 0],
                                  noise.quantize(matlab.imresize_matlab(blurred, 0.25)))
  sfold = _classic('dasr', downsample='sfold', rounding='none')
  lq = sfold.apply(hr, _classic_record(sfold, (0.2, 0.2), (0, 0)), jax.random.key(1))
  blurred = filters.filter2d(hr[:, 0], kernels.bivariate_gaussian_kernel(21, 0.2, 0.2))
  np.testing.assert_allclose(lq[:, 0], blurred[:, ::4, ::4], atol=1e-6)


def test_classic_noise_level_and_fresh_fields_per_patch():
  d = _classic(rounding='none')
  hr = jnp.asarray(np.repeat(_smooth_images(2, 32, seed=13)[:, None], 4, axis=1))
  clean = d.apply(hr, _classic_record(d, (1.0, 1.0), (0, 0)), jax.random.key(2))
  noisy = d.apply(hr, _classic_record(d, (1.0, 1.0), (10, 30)), jax.random.key(2))
  diff = np.asarray(noisy - clean) * 255
  for task, level in enumerate((10, 30)):
    assert abs(diff[task].std() / level - 1) < 0.1
  assert np.abs(diff[:, 0] - diff[:, 1]).max() > 1  # same content, independent noise
  jpeg_d = _classic(rounding='round')
  compressed = jpeg_d.apply(hr, _classic_record(jpeg_d, (1.0, 1.0), (0, 0), (True, False)),
                            jax.random.key(2))
  assert np.abs(np.asarray(compressed[0] - clean[0])).max() > 1 / 255
  np.testing.assert_allclose(compressed[1], noise.quantize(clean[1]), atol=1e-6)


def test_classic_paired_call_crops_and_degrades():
  d = _classic()
  gt = _smooth_images(2, 64, seed=14)
  batch = _stack([d.param_sampler()(np.random.default_rng(i)) for i in range(2)])
  batch['gt'] = gt
  out = jax.jit(d)(batch, jax.random.key(3))
  assert out['lq'].shape == (2, 8, 8, 3) and out['gt'].shape == (2, 32, 32, 3)
  t, l = int(batch['crop/top'][1]) * 4, int(batch['crop/left'][1]) * 4
  np.testing.assert_array_equal(out['gt'][1], gt[1, t:t + 32, l:l + 32])


# --- task batches ------------------------------------------------------------------------------


def _task_batch(d, gt, seeds):
  batch = _stack([d.param_sampler()(np.random.default_rng(s)) for s in seeds])
  batch['gt'] = gt
  return batch


def _task_config(kind, layout, **tasks_fields):
  c = tasks.default_config(kind, 4, layout)
  c.crop_pad = S
  c.tasks.update(tasks_fields)
  c.gt_size = max(size for size, _ in c.tasks.crops) * 4
  return c


def test_task_defaults():
  c = tasks.default_config('classic', 4, 'cmdsr')
  assert tuple(map(tuple, c.tasks.crops)) == ((48, 40),) and c.tasks.patches_per_image == 20
  assert not c.tasks.different_images and c.kernel_size == 15
  c = tasks.default_config('classic', 2, 'multicrop')
  assert tuple(map(tuple, c.tasks.crops)) == ((64, 2), (48, 4)) and c.downsample == 'matlab'


def test_classic_tasks_share_one_degradation_per_task():
  c = _task_config('classic', 'cmdsr', crops=((8, 4),), patches_per_image=2)
  c.rounding, c.noise_range = 'none', (0.0, 0.0)
  d = tasks.TaskDegradation(c, 4)
  k = 3
  gt = np.repeat(_smooth_images(1, S, seed=15), k, axis=0)  # one image in every task
  batch = _task_batch(d, gt, [60, 61, 62])
  batch['blur/sigma_x'] = batch['blur/sigma_y'] = np.asarray([0.5, 1.5, 3.0], np.float32)
  for axis in ('top', 'left'):
    batch[f'patches0/{axis}'] = np.tile(np.asarray([[2, 2, 7, 11]], np.int32), (k, 1))
  out = jax.jit(d)(batch, jax.random.key(7))
  lq, hr = np.asarray(out['lq'][0]), np.asarray(out['gt'][0])
  assert lq.shape == (k, 4, 8, 8, 3) and hr.shape == (k, 4, 32, 32, 3)
  for t in range(k):
    np.testing.assert_array_equal(lq[t, 0], lq[t, 1])  # same place, same degradation
    np.testing.assert_array_equal(hr[t, 2], gt[0, 28:60, 28:60])
  assert np.abs(lq[0, 0] - lq[1, 0]).max() > 0.01 and np.abs(lq[1, 0] - lq[2, 0]).max() > 0.01
  np.testing.assert_array_equal(out['record']['blur/sigma_x'], batch['blur/sigma_x'])


def test_classic_tasks_noise_level_is_the_tasks():
  c = _task_config('classic', 'cmdsr', crops=((8, 6),), patches_per_image=3)
  c.rounding = 'none'
  d = tasks.TaskDegradation(c, 4)
  gt = _smooth_images(2, S, seed=16)
  batch = _task_batch(d, gt, [63, 64])
  clean = dict(batch, **{'noise/sigma': np.zeros(2, np.float32)})
  batch['noise/sigma'] = np.asarray([5.0, 40.0], np.float32)
  fn = jax.jit(d)
  diff = (np.asarray(fn(batch, jax.random.key(8))['lq'][0])
          - np.asarray(fn(clean, jax.random.key(8))['lq'][0])) * 255
  for t, level in enumerate((5.0, 40.0)):
    per_patch = diff[t].reshape(6, -1).std(axis=1)
    assert np.all(np.abs(per_patch / level - 1) < 0.3)


def test_tasks_from_different_images_and_multicrop():
  c = _task_config('classic', 'multicrop', different_images=True, crops=((12, 2), (8, 2)),
                   patches_per_image=2)
  c.noise_range, c.rounding = (0.0, 0.0), 'none'
  d = tasks.TaskDegradation(c, 4)
  gt = _smooth_images(3, S, seed=17)
  batch = _task_batch(d, gt, [65, 66, 67])
  out = jax.jit(d)(batch, jax.random.key(9))
  assert [x.shape for x in out['lq']] == [(3, 2, 12, 12, 3), (3, 2, 8, 8, 3)]
  assert [x.shape for x in out['gt']] == [(3, 2, 48, 48, 3), (3, 2, 32, 32, 3)]
  np.testing.assert_array_equal(out['record']['patches0/image'], [[0, 0], [1, 1], [2, 2]])
  np.testing.assert_array_equal(out['record']['patches1/image'], [[1, 1], [2, 2], [0, 0]])
  t, i = 2, 1  # group 1 of task 2 is cut from image 0 and degraded with task 2's kernel
  top, left = (int(batch[f'patches1/{a}'][t, i]) * 4 for a in ('top', 'left'))
  hr = gt[0, top:top + 32, left:left + 32]
  np.testing.assert_array_equal(out['gt'][1][t, i], hr)
  record = {k: v[t:t + 1] for k, v in d.base.record(batch, crop=False).items()}
  expected = d.base.apply(jnp.asarray(hr)[None, None], record, jax.random.key(0))
  np.testing.assert_allclose(out['lq'][1][t, i], expected[0, 0], atol=1e-6)


def test_realesrgan_tasks_crop_one_degraded_image():
  c = _task_config('realesrgan', 'dasr', crops=((8, 3),))
  d = tasks.TaskDegradation(c, 4)
  gt = _smooth_images(2, S, seed=18)
  batch = _task_batch(d, gt, [68, 69])
  batch['patches0/top'] = np.asarray([[3, 3, 10], [0, 5, 5]], np.int32)
  batch['patches0/left'] = np.asarray([[4, 4, 1], [16, 2, 2]], np.int32)
  out = jax.jit(d)(batch, jax.random.key(10))
  lq = np.asarray(out['lq'][0])
  assert lq.shape == (2, 3, 8, 8, 3) and out['gt_usm'][0].shape == (2, 3, 32, 32, 3)
  np.testing.assert_array_equal(lq[0, 0], lq[0, 1])  # crops of one degraded image
  np.testing.assert_array_equal(lq[1, 1], lq[1, 2])
  np.testing.assert_allclose(out['gt_usm'][0][1, 0],
                             filters.usm_sharp(jnp.asarray(gt[1:]))[0, 0:32, 64:96], atol=1e-6)


# --- gallery -----------------------------------------------------------------------------------


def test_captions_describe_a_realesrgan_record(deg):
  record = deg.param_sampler()(np.random.default_rng(0))
  lines = gallery.describe_realesrgan(record)
  assert len(lines) == 8 and lines[0].startswith('1 blur ')
  assert f'->{int(record["resize1/size"])}' in lines[1]


def test_gallery_command_writes_a_captioned_grid(tmp_path):
  src = tmp_path / 'in put.png'
  images.write_image(src, images.from_float(_smooth_images(1, 96, seed=19)[0, :, :88]))
  out = tmp_path / 'grid.png'
  parser = argparse.ArgumentParser()
  gallery.add_cli_arguments(parser)
  assert gallery.cli_main(parser.parse_args(
      [str(src), '-o', str(out), '--config', 'classic', '-n', '3', '--columns', '2'])) == 0
  grid = np.asarray(Image.open(out))
  tile = 22 * (256 // 22)  # 88 // 4 = 22-pixel LR, nearest-upsampled 11x
  assert grid.shape[1] == 2 * (tile + 4) + 4 and grid.shape[0] > 2 * tile
  assert (grid[4 + tile:4 + tile + 40, 4:4 + tile] < 100).any()  # caption text
  assert gallery.cli_main(parser.parse_args([str(tmp_path / 'missing.png'), '-o',
                                             str(out)])) == 2
