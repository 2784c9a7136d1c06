"""The degradation ops reproduce BasicSR / PyTorch / pytorch_wavelets outputs (fixtures), also
under jit and vmap, and random resize scales and kernel sizes compile once."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, nhwc
from condsr_jax import degrade
from condsr_jax.degrade import filters, matlab, resize, sampling


@pytest.fixture
def blur(fixtures_dir):
  data = np.load(fixtures_dir / 'basicsr' / 'blur_kernels.npz')
  return data, json.loads(str(data['meta']))['values']


@pytest.fixture
def ops(fixtures_dir):
  return np.load(fixtures_dir / 'basicsr' / 'image_ops.npz')


def _fixture_record(values) -> dict[str, np.ndarray]:
  """Parameter records of the fixture's iso, aniso, generalized, plateau and sinc kernels."""
  iso, aniso, gen, plat = values['iso'], values['aniso'], values['gen'], values['plat']
  omega_c, sinc_size, _ = values['sinc']
  records = [
      sampling.kernel_params('iso', iso[0], iso[1]),
      sampling.kernel_params('aniso', *aniso),
      sampling.kernel_params('generalized_aniso', *gen),
      sampling.kernel_params('plateau_aniso', *plat),
      sampling.kernel_params('sinc', int(sinc_size), omega_c=omega_c),
  ]
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


FIXTURE_KERNELS = ['iso', 'aniso', 'generalized_aniso', 'plateau_aniso', 'sinc']


def test_blur_kernels_match_basicsr(blur):
  data, v = blur
  omega_c, size, pad_to = v['sinc']
  built = {
      'iso': degrade.bivariate_gaussian_kernel(*v['iso']),
      'aniso': degrade.bivariate_gaussian_kernel(*v['aniso']),
      'generalized_aniso': degrade.generalized_gaussian_kernel(*v['gen']),
      'plateau_aniso': degrade.plateau_kernel(*v['plat']),
      'sinc': degrade.sinc_kernel(omega_c, int(size), pad_to=int(pad_to)),
  }
  for name in FIXTURE_KERNELS:
    assert_close(built[name], data[f'out/{name}'])


def test_kernel_from_params_traced_sizes_compile_once(blur):
  data, v = blur
  build = jax.jit(degrade.kernel_from_params)
  kernels = build(_fixture_record(v))
  for i, name in enumerate(FIXTURE_KERNELS):
    assert_close(kernels[i], data[f'out/{name}'])
  # Smaller sizes on the 21x21 canvas equal BasicSR's zero padding of the small kernel.
  record = _fixture_record(v)
  record['size'] = np.array([7, 9, 15, 5, 11], np.int32)
  kernels = build(record)
  small = degrade.plateau_kernel(5, *v['plat'][1:])
  np.testing.assert_allclose(kernels[3], np.pad(small, 8), atol=1e-7)
  small = degrade.sinc_kernel(v['sinc'][0], 11)
  np.testing.assert_allclose(kernels[4], np.pad(small, 5), atol=1e-7)
  pulse = build(sampling.kernel_params('pulse', 1))
  np.testing.assert_array_equal(pulse, np.pad([[1.0]], 10))
  assert build._cache_size() == 2  # one for the batch of 5, one for the scalar record


def test_filter2d_shared_and_per_image(ops):
  img = nhwc(ops['in/img'])
  assert_close(degrade.filter2d(img, ops['in/kernel_shared']), nhwc(ops['out/filter2d_shared']))
  assert_close(degrade.filter2d(img, ops['in/kernel_shared'][0]),
               nhwc(ops['out/filter2d_shared']))
  assert_close(degrade.filter2d(img, ops['in/kernel_per_image']),
               nhwc(ops['out/filter2d_per_image']))


def test_filter2d_under_vmap_matches_batched(ops):
  img, kernels = nhwc(ops['in/img']), ops['in/kernel_per_image']
  one = jax.jit(jax.vmap(lambda x, k: degrade.filter2d(x[None], k)[0]))
  np.testing.assert_allclose(one(img, kernels), degrade.filter2d(img, kernels), atol=1e-6)


@pytest.mark.parametrize('h, w, k', [(61, 37, 21), (20, 12, 51), (1, 4, 3)])
def test_separable_filter_is_filter2d_of_the_outer_product(h, w, k, filter_path):
  """Block sizes that do not divide the image, and kernels wider than it (repeated reflection)."""
  taps = np.random.default_rng(k).random(k)
  x = jnp.asarray(np.random.default_rng(h).random((2, h, w, 3), np.float32))
  np.testing.assert_allclose(filters.separable_filter(x, taps),
                             degrade.filter2d(x, np.outer(taps, taps)), rtol=1e-5, atol=1e-5)


def test_usm_sharp(ops, filter_path):
  meta = json.loads(str(ops['meta']))['usm']
  out = degrade.usm_sharp(nhwc(ops['in/usm_img']), meta['weight'], meta['threshold'],
                          meta['radius'])
  assert_close(out, nhwc(ops['out/usm_sharp']))


INTERP_OUTPUTS = [
    'interp_area_12x10', 'interp_area_9x7', 'interp_area_31x26', 'interp_bilinear_12x10',
    'interp_bilinear_9x7', 'interp_bilinear_31x26', 'interp_bilinear_scale0.37',
    'interp_bicubic_12x10', 'interp_bicubic_9x7', 'interp_bicubic_31x26',
    'interp_bicubic_scale0.37'
]


@pytest.mark.parametrize('name', INTERP_OUTPUTS)
def test_interpolate_matches_torch(ops, name):
  _, mode, how = name.split('_')
  img = nhwc(ops['in/img'])
  if how.startswith('scale'):
    out = degrade.interpolate(img, scale_factor=float(how[5:]), mode=mode)
  else:
    out = degrade.interpolate(img, size=tuple(int(s) for s in how.split('x')), mode=mode)
  assert_close(out, nhwc(ops[f'out/{name}']))


def test_interpolate_fixture_covers_every_output(ops):
  assert sorted(k[4:] for k in ops.files if k.startswith('out/interp')) == sorted(INTERP_OUTPUTS)


@pytest.mark.parametrize('mode', resize.MODES)
def test_resize_matrix_traced_scale_compiles_once(ops, mode):
  img = nhwc(ops['in/img'])  # 24 x 20
  canvas = (36, 30)  # room for scale 1.5

  @jax.jit
  def resize_on_canvas(x, scale, out_h, out_w):
    mh = degrade.resize_matrix(x.shape[1], canvas[0], mode, scale=scale, out_valid=out_h)
    mw = degrade.resize_matrix(x.shape[2], canvas[1], mode, scale=scale, out_valid=out_w)
    return degrade.apply_resize_matrices(x, mh, mw)

  for s in (0.37, 0.6, 1.0, 1.04, 1.3, 1.5):
    oh, ow = resize.scaled_size(24, s), resize.scaled_size(20, s)
    out = np.asarray(resize_on_canvas(img, np.float32(s), np.int32(oh), np.int32(ow)))
    assert_close(out[:, :oh, :ow], degrade.interpolate(img, scale_factor=s, mode=mode))
    assert not out[:, oh:].any() and not out[:, :, ow:].any()
  assert resize_on_canvas._cache_size() == 1


@pytest.mark.parametrize('mode', resize.MODES)
def test_resize_matrix_reads_only_the_valid_input(ops, mode):
  img = nhwc(ops['in/img'])
  canvas = np.full((2, 30, 26, 3), 7.0, np.float32)  # garbage outside the valid 24 x 20
  canvas[:, :24, :20] = img
  mh = degrade.resize_matrix(30, 16, mode, in_valid=24, out_valid=9)
  mw = degrade.resize_matrix(26, 16, mode, in_valid=20, out_valid=7)
  out = np.asarray(degrade.apply_resize_matrices(canvas, mh, mw))
  assert_close(out[:, :9, :7], nhwc(ops[f'out/interp_{mode}_9x7']))


def test_resize_matrices_per_image(ops):
  img = nhwc(ops['in/img'])
  scales = np.array([0.5, 1.25], np.float32)
  sizes_h = np.array([resize.scaled_size(24, s) for s in scales.tolist()], np.int32)
  sizes_w = np.array([resize.scaled_size(20, s) for s in scales.tolist()], np.int32)

  def build(n, out_valid):
    return jax.vmap(lambda s, m: degrade.resize_matrix(n, 32, 'bicubic', scale=s, out_valid=m))(
        scales, out_valid)

  out = degrade.apply_resize_matrices(img, build(24, sizes_h), build(20, sizes_w))
  for i, s in enumerate(scales.tolist()):
    ref = degrade.interpolate(img[i:i + 1], scale_factor=s, mode='bicubic')
    assert_close(out[i:i + 1, :sizes_h[i], :sizes_w[i]], ref)


@pytest.mark.parametrize('name,scale', [('down_0.25', 0.25), ('down_0.5', 0.5), ('up_2', 2.0),
                                        ('down_1_3', 1 / 3)])
def test_imresize_matlab(fixtures_dir, name, scale):
  data = np.load(fixtures_dir / 'basicsr' / 'matlab_imresize.npz')
  ref = data[f'out/{name}']
  assert_close(degrade.imresize_matlab(data['in/img'], scale), ref)
  batch = np.stack([data['in/img'], 1 - data['in/img']]).astype(np.float32)
  assert_close(degrade.imresize_matlab(batch, scale)[0], ref)


def test_matlab_matrix_rows_sum_to_one():
  for n, s in ((7, 0.3), (32, 0.5), (5, 3.0)):
    m = matlab.matlab_resize_matrix(n, s)
    assert m.shape == (math.ceil(n * s), n)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize('name,quality,differentiable', [
    ('jpeg_round_q30', 30, False), ('jpeg_diff_q30', 30, True), ('jpeg_round_q75', 75, False),
    ('jpeg_diff_q75', 75, True), ('jpeg_round_per_image_q', (75.0, 30.0), False)])
def test_diff_jpeg_matches_basicsr(ops, name, quality, differentiable):
  if isinstance(quality, tuple):
    quality = np.array(quality, np.float32)
  out = degrade.diff_jpeg(nhwc(ops['in/jpeg_img']), quality, differentiable)
  assert_close(out, nhwc(ops[f'out/{name}']))


def test_diff_jpeg_on_zero_canvas_equals_valid_region(ops):
  img = nhwc(ops['in/jpeg_img'])[:, :21, :35]
  canvas = jnp.zeros((2, 48, 48, 3)).at[:, :21, :35].set(img)
  quality = np.array([40.0, 90.0], np.float32)
  jpeg = jax.jit(degrade.diff_jpeg)
  np.testing.assert_allclose(jpeg(canvas, quality)[:, :21, :35], degrade.diff_jpeg(img, quality),
                             atol=1e-6)


def test_diff_jpeg_differentiable_has_gradients(ops):
  img = jnp.asarray(nhwc(ops['in/jpeg_img']))
  grad = jax.grad(lambda x: degrade.diff_jpeg(x, 50.0, differentiable=True).sum())(img)
  assert np.isfinite(grad).all() and np.abs(grad).mean() > 1e-3
  assert not jax.grad(lambda x: degrade.diff_jpeg(x, 50.0).sum())(img).any()


def test_ops_under_vmap_match_batched(ops):
  img = jnp.asarray(nhwc(ops['in/jpeg_img']))
  quality = jnp.array([75.0, 30.0])
  jpeg_each = jax.jit(jax.vmap(lambda x, q: degrade.diff_jpeg(x[None], q)[0]))
  np.testing.assert_allclose(jpeg_each(img, quality), degrade.diff_jpeg(img, quality), atol=1e-6)
  batched_ops = [
      degrade.usm_sharp, degrade.rgb_to_gray, lambda x: degrade.haar_dwt(x)[1][2],
      lambda x: degrade.interpolate(x, scale_factor=0.37, mode='bicubic'),
      lambda x: degrade.imresize_matlab(x, 0.5),
  ]
  for op in batched_ops:
    each = jax.vmap(lambda x, op=op: op(x[None])[0])
    np.testing.assert_allclose(each(img), op(img), atol=1e-6)


def test_rgb_to_gray(ops):
  assert_close(degrade.rgb_to_gray(nhwc(ops['in/img'])), nhwc(ops['out/rgb_to_grayscale']))


@pytest.mark.parametrize('suffix,inp', [('', 'img'), ('__odd', 'img_odd')])
def test_haar_dwt_matches_pytorch_wavelets(fixtures_dir, suffix, inp):
  data = np.load(fixtures_dir / 'methods' / 'dasr_wei_filters.npz')
  ll, highs = jax.jit(degrade.haar_dwt)(nhwc(data[f'in/{inp}']))
  assert_close(ll, nhwc(data[f'out/dwt_LL{suffix}']))
  ref = data[f'out/dwt_H{suffix}']
  for band, out in enumerate(highs):
    assert_close(out, nhwc(ref[:, :, band]))
