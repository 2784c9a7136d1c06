"""Checkpoint reading (torch-free .pth, safetensors, npz), detection and key-mismatch reports."""

import json
import pickle
import re
import struct
import zipfile

import jax
import numpy as np
import pytest

from condsr_jax import cli, convert, models

TORCH_DIR = 'torch_rrdbnet'


@pytest.fixture
def torch_dir(fixtures_dir):
  return fixtures_dir.parent / TORCH_DIR


def _fixture_sd(fixtures_dir, name):
  return convert.read_state_dict(fixtures_dir / 'basicsr' / f'{name}.npz')


def test_pth_prefers_params_ema(torch_dir):
  sd = convert.read_state_dict(torch_dir / 'rrdbnet_x4_nf16_nb2.pth')
  assert sd['conv_first.weight'].dtype == np.float32
  assert np.abs(sd['conv_first.weight']).sum() > 0  # 'params' holds zeros in this file
  params = convert.read_state_dict(torch_dir / 'rrdbnet_x4_nf16_nb2.pth', param_key='params')
  assert np.abs(params['conv_first.weight']).sum() == 0
  spec = convert.detect_architecture(sd)
  assert spec == models.ModelSpec('RRDBNet', dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=16,
                                                  num_block=2, num_grow_ch=8))


def test_pth_with_code_is_refused(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ('executed',))

  path = tmp_path / 'evil.pth'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps({'w': Evil()}))
  with pytest.raises(ValueError, match='refusing to load builtins.print'):
    convert.read_state_dict(path)


def _write_safetensors(path, sd):
  header, blobs, offset = {}, [], 0
  for k, v in sd.items():
    b = np.ascontiguousarray(v).tobytes()
    header[k] = {'dtype': {'float32': 'F32', 'int64': 'I64'}[str(v.dtype)], 'shape': list(v.shape),
                 'data_offsets': [offset, offset + len(b)]}
    blobs.append(b)
    offset += len(b)
  raw = json.dumps(header).encode()
  path.write_bytes(struct.pack('<Q', len(raw)) + raw + b''.join(blobs))


def test_safetensors_equals_npz(fixtures_dir, tmp_path):
  sd = _fixture_sd(fixtures_dir, 'edsr_x4')
  _write_safetensors(tmp_path / 'm.safetensors', sd)
  again = convert.read_state_dict(tmp_path / 'm.safetensors')
  assert sorted(again) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(again[k], sd[k])


def test_unknown_architecture_says_what_it_saw(torch_dir, capsys):
  code = cli.main(['convert', str(torch_dir / 'unknown_arch.pth'), '/tmp/never_written.msgpack'])
  err = capsys.readouterr().err
  assert code == 2
  assert 'unknown_arch.pth' in err and 'unknown architecture' in err
  assert '0.weight (4, 3, 3, 3)' in err and re.search(r'Known: [^;]*\bRRDBNet\b', err)


def test_missing_unexpected_and_misshaped_keys(fixtures_dir):
  sd = _fixture_sd(fixtures_dir, 'rrdbnet_x4')
  del sd['conv_hr.bias']
  sd['extra.weight'] = np.zeros((3, 3, 3, 3), np.float32)
  sd['conv_last.bias'] = np.zeros((5,), np.float32)
  with pytest.raises(convert.KeyMismatchError) as info:
    convert.convert_state_dict(sd)
  err = info.value
  assert err.missing == ['params/conv_hr/bias', 'params/conv_last/bias']
  assert err.unexpected == ['extra.weight']
  assert err.mismatched == [('conv_last.bias', (5,), (3,))]
  assert 'missing (2)' in str(err) and 'unexpected (1)' in str(err)


def test_convert_cli_writes_a_model_file(fixtures_dir, tmp_path):
  dst = tmp_path / 'srvgg.msgpack'
  assert cli.main(['convert', str(fixtures_dir / 'basicsr' / 'srvgg_compact_x4.npz'), str(dst)]) == 0
  spec, variables, meta = models.load_model_file(dst)
  assert spec.arch == 'SRVGGNetCompact' and spec.scale == 4
  assert meta['converted_from'] == 'srvgg_compact_x4.npz'
  ref = convert.convert_state_dict(_fixture_sd(fixtures_dir, 'srvgg_compact_x4'))[1]
  np.testing.assert_array_equal(variables['params']['body_1']['alpha'],
                                ref['params']['body_1']['alpha'])


def test_arch_override_and_constructor_overrides(fixtures_dir):
  sd = _fixture_sd(fixtures_dir, 'edsr_x4')
  spec, _ = convert.convert_state_dict(sd, arch='EDSR', overrides={'res_scale': 0.1})
  assert spec.kwargs['res_scale'] == 0.1
  with pytest.raises(ValueError, match='not a RRDBNet state dict'):
    convert.convert_state_dict(sd, arch='RRDBNet')


def test_full_torchvision_vgg19_drops_unused_layers(fixtures_dir):
  sd = _fixture_sd(fixtures_dir, 'vgg19_perceptual')
  sd['classifier.0.weight'] = np.zeros((4, 4), np.float32)
  spec, variables = convert.convert_state_dict(
      sd, arch='VGG19Features', overrides={'layer_names': ('conv2_2',)})
  assert sorted(variables['params']) == ['features_0', 'features_2', 'features_5', 'features_7']


def test_esrgan_release_key_names_convert_as_basicsr(fixtures_dir):
  """ESRGAN's own RRDBNet names (RRDB_trunk.N.RDBk, trunk_conv, upconv1/2, HRconv; the
  RRDB_ESRGAN_x4.pth release) convert to the same variables as BasicSR's."""
  sd = _fixture_sd(fixtures_dir, 'rrdbnet_x4')
  old = {}
  for key, value in sd.items():
    key = re.sub(r'^body\.(\d+)\.rdb(\d)\.', r'RRDB_trunk.\1.RDB\2.', key)
    for new, legacy in (('conv_body.', 'trunk_conv.'), ('conv_up1.', 'upconv1.'),
                        ('conv_up2.', 'upconv2.'), ('conv_hr.', 'HRconv.')):
      key = key.replace(new, legacy) if key.startswith(new) else key
    old[key] = value
  assert 'RRDB_trunk.0.RDB1.conv1.weight' in old and 'HRconv.weight' in old
  spec, variables = convert.convert_state_dict(sd)
  spec_old, variables_old = convert.convert_state_dict(old)
  assert spec_old == spec
  for a, b in zip(jax.tree.leaves(variables_old), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
