"""Every network fixture loads through the converter and reproduces the PyTorch outputs."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, nhwc
from condsr_jax import convert, losses

NETWORKS = ['rrdbnet_x4', 'rrdbnet_x2', 'rrdbnet_x1', 'edsr_x4', 'edsr_x3', 'srvgg_compact_x4',
            'unet_disc_sn']


@pytest.mark.parametrize('name', NETWORKS)
def test_network_matches_pytorch(fixtures_dir, name):
  path = fixtures_dir / 'basicsr' / f'{name}.npz'
  data = np.load(path)
  meta = json.loads(str(data['meta']))
  spec, variables = convert.convert_state_dict(convert.read_state_dict(path))
  assert spec.arch == meta['arch']
  detected = {k: v for k, v in meta.items() if k in spec.kwargs}
  assert detected == {k: spec.kwargs[k] for k in detected}
  # Constructor arguments the state dict does not store (EDSR's image range and mean) from meta.
  fields = {f.name for f in dataclasses.fields(spec.architecture.module)}
  unstored = {k: v for k, v in meta.items() if k in fields and k not in spec.kwargs}
  y = spec.build(**unstored).apply(variables, jnp.asarray(nhwc(data['in/x'])))
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
