"""Network behaviour beyond the fixtures: spectral-norm training updates, MSRResNet, VGG range
normalisation, pixel (un)shuffle round trips, bfloat16 compute."""

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax import convert, models
from condsr_jax.nn import layers, vgg


def test_pixel_unshuffle_inverts_pixel_shuffle():
  x = jnp.asarray(np.random.default_rng(0).random((2, 6, 4, 12), np.float32))
  np.testing.assert_array_equal(layers.pixel_unshuffle(layers.pixel_shuffle(x, 2), 2), x)


def test_spectral_norm_power_iteration_matches_pytorch_rule(fixtures_dir):
  sd = convert.read_state_dict(fixtures_dir / 'basicsr' / 'unet_disc_sn.npz')
  spec, variables = convert.convert_state_dict(sd)
  disc = spec.build()
  x = jnp.asarray(np.random.default_rng(0).random((1, 32, 32, 3), np.float32))
  _, mutated = disc.apply(variables, x, update_stats=True, mutable=['spectral'])
  # PyTorch: v = normalize(W^T u), u = normalize(W v) with W = weight_orig.view(out, -1).
  w = sd['conv1.weight_orig'].reshape(sd['conv1.weight_orig'].shape[0], -1).astype(np.float64)
  v = w.T @ sd['conv1.weight_u']
  v /= np.linalg.norm(v)
  u = w @ v
  u /= np.linalg.norm(u)
  np.testing.assert_allclose(mutated['spectral']['conv1']['u'], u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mutated['spectral']['conv1']['v'], v, rtol=1e-5, atol=1e-6)
  # Without update_stats the stored vectors are used and nothing changes (PyTorch eval).
  y1 = disc.apply(variables, x)
  y2 = disc.apply({**variables, **mutated}, x)
  assert not np.allclose(y1, y2)


def test_msrresnet_shapes_and_bilinear_skip():
  for scale in (2, 3, 4):
    spec = models.ModelSpec('MSRResNet', dict(num_feat=8, num_block=2, upscale=scale))
    net = spec.build()
    x = jnp.full((1, 6, 5, 3), 0.5)
    variables = net.init(jax.random.key(0), x)
    zeroed = jax.tree.map(jnp.zeros_like, variables)
    y = net.apply(zeroed, x)  # zero weights: the output is the bilinear upsampled input
    assert y.shape == (1, 6 * scale, 5 * scale, 3)
    np.testing.assert_allclose(y, 0.5, atol=1e-6)


def test_vgg_range_norm_maps_minus_one_to_one_inputs():
  net = vgg.VGG19Features(layer_names=('conv1_1',), range_norm=True)
  x = jnp.asarray(np.random.default_rng(0).random((1, 8, 8, 3), np.float32))
  variables = net.init(jax.random.key(0), x)
  plain = vgg.VGG19Features(layer_names=('conv1_1',))
  np.testing.assert_allclose(net.apply(variables, x * 2 - 1)['conv1_1'],
                             plain.apply(variables, x)['conv1_1'], atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_output(fixtures_dir):
  spec, variables = convert.convert_file(fixtures_dir / 'basicsr' / 'rrdbnet_x4.npz')
  x = jnp.asarray(np.random.default_rng(0).random((1, 8, 8, 3), np.float32))
  y32 = spec.build().apply(variables, x)
  y16 = spec.build(dtype=jnp.bfloat16).apply(variables, x)
  assert y16.dtype == jnp.float32
  assert float(jnp.abs(y16 - y32).max() / jnp.abs(y32).max()) < 0.05


def test_srvgg_bicubic_skip_starts_from_bicubic():
  from condsr_jax import degrade  # pylint: disable=g-import-not-at-top
  net = models.ModelSpec('SRVGGNetCompact', {'num_feat': 4, 'num_conv': 1, 'upscale': 4,
                                             'skip': 'bicubic'}).build()
  x = jax.random.uniform(jax.random.key(0), (1, 12, 10, 3))
  variables = net.init(jax.random.key(1), x)
  zero_last = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if 'body_4' in str(path) else v, variables)
  np.testing.assert_allclose(net.apply(zero_last, x),
                             degrade.interpolate(x, scale_factor=4, mode='bicubic'), atol=1e-6)
