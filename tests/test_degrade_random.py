"""Statistics of the random degradation parts: Real-ESRGAN's kernel-parameter sampler and the
Gaussian / Poisson noise (tolerances from binomial or sampling standard errors, seeded)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condsr_jax import degrade
from condsr_jax.degrade import noise, sampling
from condsr_jax.degrade.kernels import KERNEL_TYPES

N_DRAWS = 20000


def _stack(records):
  return {k: np.stack([r[k] for r in records]) for k in records[0]}


@pytest.fixture(scope='module')
def blur_records():
  rng = np.random.default_rng(0)
  return _stack([sampling.random_blur_kernel_params(rng) for _ in range(N_DRAWS)])


def _assert_frequency(hits: np.ndarray, p: float, n_std: float = 5.0):
  n = hits.size
  std = math.sqrt(p * (1 - p) / n)
  assert abs(hits.mean() - p) <= n_std * std + 1e-12, (hits.mean(), p)


def test_kernel_type_frequencies_follow_kernel_prob(blur_records):
  types = blur_records['kernel_type']
  _assert_frequency(types == KERNEL_TYPES.index('sinc'), 0.1)
  for name, p in zip(sampling.REALESRGAN_KERNEL_LIST, sampling.REALESRGAN_KERNEL_PROB):
    _assert_frequency(types == KERNEL_TYPES.index(name), 0.9 * p)
  assert not (types == KERNEL_TYPES.index('pulse')).any()


def test_kernel_sizes_uniform_over_odd_range(blur_records):
  sizes = blur_records['size']
  assert set(np.unique(sizes)) == set(sampling.KERNEL_RANGE)
  for k in sampling.KERNEL_RANGE:
    _assert_frequency(sizes == k, 1 / len(sampling.KERNEL_RANGE))


def test_sigma_rotation_and_isotropy(blur_records):
  r = blur_records
  names = np.array(KERNEL_TYPES)[r['kernel_type']]
  gauss = names != 'sinc'
  assert (r['sigma_x'][gauss] >= 0.2).all() and (r['sigma_x'][gauss] <= 3.0).all()
  assert abs(r['sigma_x'][gauss].mean() - 1.6) < 5 * 2.8 / math.sqrt(12 * gauss.sum())
  iso = np.char.endswith(names, 'iso') & ~np.char.endswith(names, 'aniso')
  np.testing.assert_array_equal(r['sigma_y'][iso], r['sigma_x'][iso])
  assert not r['theta'][iso].any()
  aniso = np.char.endswith(names, 'aniso')
  assert (np.abs(r['theta'][aniso]) <= np.float32(math.pi)).all()
  assert r['theta'][aniso].std() > 1.7  # U(-pi, pi) has std 1.81
  assert (r['sigma_y'][aniso] >= 0.2).all() and (r['sigma_y'][aniso] <= 3.0).all()
  assert not np.allclose(r['sigma_y'][aniso], r['sigma_x'][aniso])


def test_beta_rules(blur_records):
  names = np.array(KERNEL_TYPES)[blur_records['kernel_type']]
  beta = blur_records['beta']
  betag = beta[np.char.startswith(names, 'generalized')]
  assert betag.min() >= 0.5 and betag.max() <= 4.0
  _assert_frequency(betag < 1, 0.5)
  betap = beta[np.char.startswith(names, 'plateau')]
  assert betap.min() >= 1.0 and betap.max() <= 2.0
  _assert_frequency(betap == 1.0, 0.5)
  assert (beta[np.isin(names, ['iso', 'aniso'])] == 1.0).all()


def test_sinc_cutoff_depends_on_size(blur_records):
  sinc = blur_records['kernel_type'] == KERNEL_TYPES.index('sinc')
  omega, size = blur_records['omega_c'][sinc], blur_records['size'][sinc]
  small, large = omega[size < 13], omega[size >= 13]
  lo3, lo5, hi = np.float32(math.pi / 3), np.float32(math.pi / 5), np.float32(math.pi)
  assert small.min() >= lo3 and small.max() <= hi
  assert large.min() >= lo5 and large.max() <= hi
  # U(pi/5, pi) puts a sixth of its mass below pi/3.
  _assert_frequency(large < lo3, (math.pi / 3 - math.pi / 5) / (math.pi - math.pi / 5))


def test_final_sinc_or_pulse():
  rng = np.random.default_rng(1)
  r = _stack([sampling.random_final_sinc_params(rng) for _ in range(N_DRAWS // 2)])
  sinc = r['kernel_type'] == KERNEL_TYPES.index('sinc')
  _assert_frequency(sinc, 0.8)
  assert (r['kernel_type'][~sinc] == KERNEL_TYPES.index('pulse')).all()
  assert r['omega_c'][sinc].min() >= np.float32(math.pi / 3)
  assert r['omega_c'][sinc].max() <= np.float32(math.pi)


def test_sampled_records_build_valid_kernels(blur_records):
  batch = {k: v[:64] for k, v in blur_records.items()}
  kernels = np.asarray(degrade.kernel_from_params(batch))
  assert kernels.shape == (64, 21, 21) and np.isfinite(kernels).all()
  np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
  dist = np.abs(np.arange(21) - 10)
  for kernel, size in zip(kernels, batch['size']):
    outside = np.maximum(dist[:, None], dist[None, :]) > size // 2
    assert not kernel[outside].any()


def _flat(value: float, shape=(4, 64, 64, 3)) -> jax.Array:
  return jnp.full(shape, value, jnp.float32)


def test_standard_normal_is_normal_and_independent():
  """1M deviates: moments and the KS distance within sampling error, no correlation between
  neighbours, channels or keys, finite everywhere, one key one field."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  key_a, key_b = jax.random.split(jax.random.key(0))
  z = np.asarray(noise.standard_normal(key_a, (4, 256, 256, 4)))
  flat, n = z.ravel(), z.size
  assert np.isfinite(z).all() and np.abs(z).max() < 5.3
  assert abs(flat.mean()) < 5 / math.sqrt(n) and abs(flat.std() - 1) < 5 / math.sqrt(2 * n)
  assert abs(np.mean(flat ** 4) - 3) < 5 * math.sqrt(96 / n)  # var(z^4) = 96
  assert stats.kstest(flat, 'norm').pvalue > 1e-3
  other = np.asarray(noise.standard_normal(key_b, z.shape)).ravel()
  for a, b in ((flat[:-1], flat[1:]), (z[..., 0].ravel(), z[..., 1].ravel()),
               (z[:, :-1].ravel(), z[:, 1:].ravel()), (flat, other)):
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
  np.testing.assert_array_equal(z, noise.standard_normal(key_a, z.shape))


def test_gaussian_noise_moments_per_sigma():
  sigma = np.array([1.0, 5.0, 15.0, 30.0], np.float32)
  out = degrade.add_gaussian_noise(_flat(0.5), sigma, key=jax.random.key(0), clip=False)
  noise = np.asarray(out - 0.5).reshape(4, -1)
  n = noise.shape[1]
  expected = sigma / 255
  assert (np.abs(noise.mean(1)) <= 5 * expected / math.sqrt(n)).all()
  assert (np.abs(noise.std(1) / expected - 1) <= 5 / math.sqrt(2 * n)).all()


def test_gray_gaussian_noise_fields():
  key = jax.random.key(1)
  gray = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  sigma = np.array([10.0, 20.0, 10.0, 10.0], np.float32)
  own = np.asarray(noise.gaussian_noise(key, (4, 16, 16, 3), sigma, gray))
  assert (own[[0, 1, 3]] == own[[0, 1, 3], ..., :1]).all()  # one field for all channels
  assert not np.allclose(own[2, ..., 0], own[2, ..., 1])
  assert not np.allclose(own[0], own[3])  # each image draws its own gray field
  shared = np.asarray(noise.gaussian_noise(key, (4, 16, 16, 3), sigma, gray, shared_gray=True))
  np.testing.assert_allclose(shared[0], shared[3], atol=1e-7)
  np.testing.assert_allclose(shared[1], 2 * shared[0], rtol=1e-5, atol=1e-7)


def test_gaussian_noise_clips_and_rounds():
  out = degrade.add_gaussian_noise(_flat(0.98, (1, 32, 32, 3)), 30.0, key=jax.random.key(2),
                                   rounds=True)
  out = np.asarray(out)
  assert out.min() >= 0 and out.max() == 1.0
  np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)


def _with_levels(value: float, distinct: int) -> np.ndarray:
  """[1, 64, 64, 3] image at `value` except for a few pixels that make `distinct` 8-bit values."""
  img = np.full((1, 64, 64, 3), value, np.float32)
  others = [v for v in range(256) if v != round(value * 255)][:distinct - 1]
  img.reshape(-1)[:len(others)] = np.array(others, np.float32) / 255
  return img


@pytest.mark.parametrize('distinct,levels', [(1, 1), (2, 2), (3, 4), (5, 8), (17, 32),
                                             (129, 256), (256, 256)])
def test_poisson_levels_rule(distinct, levels):
  img = _with_levels(128 / 255, distinct)
  assert float(noise.poisson_levels(jnp.asarray(img))[0]) == levels


def test_poisson_levels_count_only_the_valid_region():
  img = _with_levels(128 / 255, 4)
  img[:, 40:, :, :] = 0.9  # a fifth value outside the valid region
  valid = np.zeros((1, 64, 64, 1), bool)
  valid[:, :40] = True
  assert float(noise.poisson_levels(jnp.asarray(img))[0]) == 8
  assert float(noise.poisson_levels(jnp.asarray(img), valid)[0]) == 4


def _per_image(value: float) -> jax.Array:
  return jnp.full((4,), value, jnp.float32)


# The Poisson tests share one batch shape and array arguments so that they share compilations.
@pytest.mark.parametrize('distinct,scale', [(256, 1.0), (256, 2.0), (3, 0.1)])
def test_poisson_noise_variance_on_flat_region(distinct, scale):
  img = jnp.asarray(np.repeat(_with_levels(128 / 255, distinct), 4, axis=0))
  levels = 256 if distinct == 256 else 4
  out = degrade.add_poisson_noise(img, _per_image(scale), _per_image(0.0), key=jax.random.key(3),
                                  clip=False)
  flat = np.asarray(out - img)[:, 32:].reshape(-1)  # rows 32+ hold only the flat value
  n = flat.size
  expected = 128 / 255 / levels * scale ** 2
  assert abs(flat.mean()) <= 5 * math.sqrt(expected / n)
  assert abs(flat.var() / expected - 1) <= 5 * math.sqrt(2 / n) + 0.02


def test_poisson_noise_is_measured_on_the_quantised_image():
  img = jnp.asarray(np.repeat(_with_levels(0.5013, 256), 4, axis=0))  # 0.5013 is off the grid
  key, one, color = jax.random.key(4), _per_image(1.0), _per_image(0.0)
  field = np.asarray(noise.poisson_noise(key, img, one, color))
  out = degrade.add_poisson_noise(img, one, color, key=key, clip=False)
  np.testing.assert_allclose(out - img, field, atol=1e-6)
  counts = (field + np.asarray(noise.quantize(img))) * 256
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_gray_poisson_noise_is_shared_by_channels():
  img = jnp.asarray(np.random.default_rng(5).random((4, 64, 64, 3), np.float32))
  gray = jnp.array([1.0, 0.0, 1.0, 0.0])
  scale = jnp.array([0.5, 1.0, 3.0, 2.0])
  field = np.asarray(noise.poisson_noise(jax.random.key(6), img, scale, gray))
  assert (field[[0, 2]] == field[[0, 2], ..., :1]).all()
  assert not np.allclose(field[1, ..., 0], field[1, ..., 1])
  out = np.asarray(degrade.add_poisson_noise(img, scale, gray, key=jax.random.key(6)))
  assert out.min() >= 0 and out.max() <= 1
