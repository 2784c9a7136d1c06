"""DASR-Wei's DSN generator and discriminators, the SRN PatchGAN and the FSSR / DSN frequency
filters against the official PyTorch outputs. Every size and filter setting is read from the
fixture (its state dict, shapes or meta)."""

import json

import jax
import numpy as np
import pytest

from conftest import assert_close, nhwc
from condsr_jax import convert, export
from condsr_jax.degrade import frequency, wavelet
from condsr_jax.nn import dasr_wei

_METHODS = ('tests', 'fixtures', 'reference', 'methods')
_FSD_FIXTURES = ('dasr_wei_fsd_gau', 'dasr_wei_fsd_avgpool', 'dasr_wei_fsd_wavelet_cat',
                 'dasr_wei_fsd_wavelet_sum')


def _path(request, name):
  return request.config.rootpath.joinpath(*_METHODS, f'{name}.npz')


def _fixture(request, name):
  data = np.load(_path(request, name))
  return data, json.loads(str(data['meta']))


def _state_dict(data):
  return {k[len('sd/'):]: data[k] for k in data.files if k.startswith('sd/')}


@pytest.fixture(scope='module')
def filters_fixture(request):
  return _fixture(request, 'dasr_wei_filters')


def _inputs(data):
  """(output suffix, NHWC input) of the filters fixture: '' on `img`, '__odd' on `img_odd`."""
  return (('', nhwc(data['in/img'])), ('__odd', nhwc(data['in/img_odd'])))


def _official_filter(config, x):
  """An official `FilterLow` / `FilterHigh` constructor of the fixture's meta, applied to x."""
  kind, k = ('gau' if config['gaussian'] else 'avg'), config['kernel_size']
  if config['cls'] == 'FilterLow':
    return frequency.filter_low(x, kind, k, config['padding'], config.get('include_pad', True))
  assert config['cls'] == 'FilterHigh'
  return frequency.filter_high(x, kind, k, config.get('include_pad', True),
                               config.get('recursions', 1))


def test_low_and_high_pass_filters_match_official(filters_fixture):
  data, meta = filters_fixture
  checked = set()
  for name, config in meta['configs'].items():
    for suffix, x in _inputs(data):
      assert_close(_official_filter(config, x), nhwc(data[f'out/{name}{suffix}']))
      checked.add(f'out/{name}{suffix}')
  for key in data.files:
    if key.startswith('out/gaussian_kernel_k'):
      assert_close(frequency.gaussian_kernel(data[key].shape[0]), data[key])
      checked.add(key)
  filter_outputs = {k for k in data.files if k.startswith(('out/low_', 'out/high_',
                                                            'out/gaussian_kernel'))}
  assert checked == filter_outputs


def test_wavelet_bands_match_official(filters_fixture):
  data, _ = filters_fixture
  for suffix, x in _inputs(data):
    for mode in frequency.WAVELET_MODES:
      assert_close(frequency.wavelet_high(x, mode), nhwc(data[f'out/wavelet_hf_{mode}{suffix}']))
    low, bands = wavelet.haar_dwt(x)
    assert_close(low, nhwc(data[f'out/dwt_LL{suffix}']))
    official_bands = data[f'out/dwt_H{suffix}']  # [B, C, band, h, w]
    for i, band in enumerate(bands):
      assert_close(band, nhwc(official_bands[:, :, i]))
  assert_close(frequency.wavelet_low_half(nhwc(data['in/img'])), nhwc(data['out/wavelet_LL_half']))


def test_filters_keep_one_channel_images(filters_fixture):
  """The channel count comes from the input: each channel of an RGB image filtered alone gives
  the same values as in the RGB result."""
  data, meta = filters_fixture
  x = nhwc(data['in/img_odd'])
  gray = x[..., 1:2]
  for config in meta['configs'].values():
    assert_close(_official_filter(config, gray), _official_filter(config, x)[..., 1:2])
  for mode in frequency.WAVELET_MODES:
    out = frequency.wavelet_high(gray, mode)
    assert out.shape[-1] == (3 if mode == 'cat' else 1)
  cat = frequency.wavelet_high(x, 'cat')
  assert_close(frequency.wavelet_high(gray, 'cat'), cat[..., 1::3])
  assert_close(frequency.wavelet_low_half(gray), frequency.wavelet_low_half(x)[..., 1:2])


def test_filter_arguments_are_checked():
  x = np.zeros((1, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match='unknown low-pass kind'):
    frequency.filter_low(x, 'box')
  with pytest.raises(ValueError, match='must be odd'):
    frequency.filter_low(x, 'gau', 4)
  with pytest.raises(ValueError, match='unknown wavelet mode'):
    frequency.wavelet_high(x, 'max')
  with pytest.raises(ValueError, match='unknown discriminator filter'):
    dasr_wei.fsd_filter(x, 'wavelet')


def test_generator_matches_official_and_round_trips(request):
  name = 'dasr_wei_dsn_generator'
  data, meta = _fixture(request, name)
  spec, variables = convert.convert_state_dict(convert.read_state_dict(_path(request, name)))
  ctor = meta['constructor']
  assert spec.arch == 'DSNGenerator'
  assert (spec.kwargs['scale'], spec.kwargs['num_block']) == (ctor['scale'], ctor['n_res_blocks'])
  model = spec.build()
  for suffix in ('', '_odd'):
    x, y = nhwc(data[f'in/x{suffix}']), nhwc(data[f'out/y{suffix}'])
    assert_close(model.apply(variables, x), y)
  sd = export.torch_state_dict(variables)
  assert set(sd) == set(_state_dict(data))
  spec2, again = convert.convert_state_dict(sd)
  assert spec2 == spec
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_one_channel_generator_and_discriminators_run():
  gray = jax.random.uniform(jax.random.key(0), (2, 15, 13, 1))
  generator = dasr_wei.DSNGenerator(scale=2, num_feat=8, num_block=1, in_channels=1,
                                    out_channels=1)
  lr = jax.jit(lambda x: generator.apply(generator.init(jax.random.key(1), x), x))(gray)
  assert lr.shape == (2, 8, 7, 1) and 0 < lr.min() and lr.max() < 1
  for kind in dasr_wei.FSD_FILTERS:
    disc = dasr_wei.FSDiscriminator(kind, num_feat=4, in_channels=1)
    variables = jax.jit(disc.init)(jax.random.key(2), lr)
    net_in = 3 if kind == 'wavelet_cat' else 1
    assert variables['params']['net']['net_0']['kernel'].shape[2] == net_in
    half = kind.startswith('wavelet')
    logits = jax.jit(disc.apply)(variables, lr)
    assert logits.shape == (2, 4 if half else 8, 4 if half else 7, 1)
    assert np.isfinite(logits).all()


@pytest.fixture(scope='module', params=_FSD_FIXTURES)
def fsd_fixture(request):
  """(data, meta, spec, converted variables) of an FSD fixture."""
  data, meta = _fixture(request, request.param)
  spec, variables = convert.convert_state_dict(
      convert.read_state_dict(_path(request, request.param)))
  return data, meta, spec, variables


def test_fsd_is_detected_and_matches_official(fsd_fixture):
  data, meta, spec, variables = fsd_fixture
  ctor = meta['constructor']
  official_filter = ctor['filter_type'] + ('_' + ctor['cs'] if ctor['filter_type'] == 'wavelet'
                                           else '')
  assert spec.arch == 'FSDiscriminator'
  assert spec.kwargs['filter'] == official_filter
  assert spec.kwargs['num_feat'] == meta['conv_widths'][0]
  assert spec.build().kernel_size == ctor['kernel_size']
  model, x = spec.build(), nhwc(data['in/x'])
  assert_close(dasr_wei.fsd_filter(x, official_filter, ctor['kernel_size']),
               nhwc(data['out/filtered']))
  logits = model.apply(variables, x)
  assert_close(jax.nn.sigmoid(logits), nhwc(data['out/y']))
  if 'in/y_real' in data.files:
    raw = dasr_wei.relativistic(logits, model.apply(variables, nhwc(data['in/y_real'])))
    assert_close(raw, nhwc(data['out/y_ragan_raw']))
    assert_close(jax.nn.sigmoid(raw), nhwc(data['out/y_ragan']))


def test_fsd_round_trips_without_its_fixed_buffers(fsd_fixture):
  """The network's weights come back under the official names; the fixed filter buffers are not
  variables, so converting back needs the filter named."""
  data, _, spec, variables = fsd_fixture
  sd = export.torch_state_dict(variables)
  assert set(sd) == {k for k in _state_dict(data) if k.startswith('net.')}
  for k, v in sd.items():
    np.testing.assert_array_equal(v, data[f'sd/{k}'])
  _, again = convert.convert_state_dict(sd, 'FSDiscriminator', overrides=spec.kwargs)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_fsd_refuses_unexpected_fixed_filters(request):
  sd = convert.read_state_dict(_path(request, 'dasr_wei_fsd_gau'))
  sd['filter.filter_low.filter.gaussian_filter.weight'] *= 1.01
  with pytest.raises(ValueError, match='not the fixed filter'):
    convert.detect_architecture(sd)
  sd = convert.read_state_dict(_path(request, 'dasr_wei_fsd_wavelet_cat'))
  del sd['DWT2.h1_row']
  with pytest.raises(ValueError, match='DWT2.h1_row is missing'):
    convert.detect_architecture(sd)


def test_srn_patchgan_matches_official_on_the_wavelet_bands(request):
  name = 'dasr_wei_srn_patchgan'
  data, meta = _fixture(request, name)
  img = nhwc(data['in/img'])
  assert_close(frequency.wavelet_high(img), nhwc(data['out/x9']))
  assert_close(frequency.wavelet_high(img, normalize=False), nhwc(data['out/x9_raw']))
  assert_close(frequency.wavelet_low_half(img), nhwc(data['out/LL_half']))
  assert_close(wavelet.haar_dwt(img)[0], nhwc(data['out/LL_raw']))
  spec, variables = convert.convert_state_dict(convert.read_state_dict(_path(request, name)))
  ctor = meta['constructor']
  assert spec.arch == 'NLayerPatchGAN'
  assert spec.kwargs == dict(in_channels=ctor['input_nc'], num_feat=ctor['ndf'],
                             n_layers=ctor['n_layers'])
  assert_close(spec.build().apply(variables, nhwc(data['out/x9'])), nhwc(data['out/y']))
  sd = export.torch_state_dict(variables)
  assert set(sd) == set(_state_dict(data))
  spec2, again = convert.convert_state_dict(sd)
  assert spec2 == spec
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_pdm_patchgan_is_not_taken_for_the_srn_one(request):
  """PDM-SR's PatchGAN shares the SRN key names but has biased middle convs."""
  sd = convert.read_state_dict(_path(request, 'pdm_patchgan'))
  assert convert.detect_architecture(sd).arch == 'PatchGANDiscriminator'
  with pytest.raises(ValueError, match='not the SRN NLayerDiscriminator'):
    convert.detect_architecture(sd, 'NLayerPatchGAN')
