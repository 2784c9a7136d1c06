"""Every network fixture loads through the converter and reproduces the PyTorch outputs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from condsr_jax import convert, losses

NETWORKS = ['rrdbnet_x4', 'rrdbnet_x2', 'rrdbnet_x1', 'edsr_x4', 'edsr_x3', 'srvgg_compact_x4',
            'unet_disc_sn']


def nhwc(a: np.ndarray) -> np.ndarray:
  return a.transpose(0, 2, 3, 1)


def assert_close(actual, ref, rtol=1e-4):
  actual, ref = np.asarray(actual), np.asarray(ref)
  assert actual.shape == ref.shape
  err = np.abs(actual - ref).max() / np.abs(ref).max()
  assert err < rtol, f'max error {err:.2e} of max |ref|'


@pytest.mark.parametrize('name', NETWORKS)
def test_network_matches_pytorch(fixtures_dir, name):
  path = fixtures_dir / 'basicsr' / f'{name}.npz'
  data = np.load(path)
  meta = json.loads(str(data['meta']))
  spec, variables = convert.convert_state_dict(convert.read_state_dict(path))
  assert spec.arch == meta['arch']
  for arg in ('num_feat', 'num_block', 'num_grow_ch', 'scale', 'upscale', 'num_conv'):
    if arg in meta:
      assert spec.kwargs[arg] == meta[arg], arg
  y = spec.build().apply(variables, jnp.asarray(nhwc(data['in/x'])))
  assert_close(y, nhwc(data['out/y']))


def test_vgg19_features_and_perceptual_loss(fixtures_dir):
  path = fixtures_dir / 'basicsr' / 'vgg19_perceptual.npz'
  data = np.load(path)
  meta = json.loads(str(data['meta']))
  spec, variables = convert.convert_state_dict(convert.read_state_dict(path))
  weights = meta['layer_weights']
  vgg = spec.build(layer_names=tuple(weights))
  x, gt = jnp.asarray(nhwc(data['in/x'])), jnp.asarray(nhwc(data['in/gt']))
  feats = vgg.apply(variables, x)
  for layer in weights:
    assert_close(feats[layer], nhwc(data[f'out/feat_{layer}']))
  percep, style = losses.perceptual_loss(lambda im: vgg.apply(variables, im), x, gt, weights)
  np.testing.assert_allclose(float(percep), float(data['out/loss']), rtol=1e-5)
  assert float(style) == 0.0
