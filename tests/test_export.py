"""Exports: .pth / safetensors in the originals' layouts (round trips over every fixture), the
torch-free .pth writer and legacy reader, orbax model directories restored onto a mesh, and
PyTorch-side loading (BasicSR strict, spandrel) where torch is installed."""

import collections
import importlib.util
import sys
import types
import zipfile

import jax
import numpy as np
import pytest
from flax import traverse_util

from condsr_jax import cli, convert, export, images, inference, models, pth

TORCH_RRDBNET = 'torch_rrdbnet/rrdbnet_x4_nf16_nb2.pth'


def _detected_fixtures(fixtures_dir):
  """Every reference fixture holding a whole network (detected without --arch)."""
  for path in sorted((fixtures_dir).glob('*/*.npz')):
    sd = convert.read_state_dict(path)
    try:
      yield path.name, sd, convert.detect_architecture(sd)
    except ValueError:
      continue  # a part of a network (an encoder, a kernel branch): its own tests convert it


def test_export_reproduces_every_fixture_state_dict(fixtures_dir):
  """export(convert(sd)) == sd: same keys, values and layouts, fixed buffers included; only
  BatchNorm's num_batches_tracked (flax does not count) comes back as 0."""
  seen = []
  for name, sd, spec in _detected_fixtures(fixtures_dir):
    variables = convert.state_dict_to_variables(sd, spec)
    out = export.variables_to_state_dict(spec, variables)
    assert set(out) == set(sd), (name, sorted(set(out) ^ set(sd))[:6])
    for key, want in sd.items():
      got = out[key]
      assert got.shape == want.shape and got.dtype == want.dtype, (name, key)
      if key.endswith('num_batches_tracked'):
        assert got == 0
      elif spec.architecture.uses_key is None or spec.architecture.uses_key(spec.kwargs, key):
        np.testing.assert_array_equal(got, want, err_msg=f'{name} {key}')
      else:  # a constant the flax module computes
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f'{name} {key}')
    export.check_round_trip(spec, variables, out)
    seen.append(spec.arch)
  assert {'RRDBNet', 'SRVGGNetCompact', 'EDSR', 'UNetDiscriminatorSN', 'CMDSRNet',
          'DSNGenerator', 'FSDiscriminator', 'DegModel'} <= set(seen)


def test_pth_writer_round_trips_what_checkpoints_hold(tmp_path):
  obj = {'params_ema': collections.OrderedDict([
      ('conv.weight', np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)),
      ('transposed', np.arange(6, dtype=np.float32).reshape(2, 3).T),
      ('half', np.linspace(-1, 1, 5).astype(np.float16)), ('count', np.array(7, np.int64)),
      ('flags', np.array([True, False])), ('empty', np.zeros((0, 3), np.float32))]),
      'iter': 600, 'big': 2 ** 40, 'name': 'x', 'lr': 1.5, 'none': None, 'list': [1, (2, 3)]}
  path = tmp_path / 'model.pth'
  pth.write(path, obj)
  back = pth.read(path)
  assert isinstance(back['params_ema'], collections.OrderedDict)
  assert list(back['params_ema']) == list(obj['params_ema'])
  for k, v in obj['params_ema'].items():
    assert back['params_ema'][k].dtype == v.dtype and back['params_ema'][k].shape == v.shape, k
    np.testing.assert_array_equal(back['params_ema'][k], v)
  assert {k: v for k, v in back.items() if k != 'params_ema'} == {
      k: v for k, v in obj.items() if k != 'params_ema'}
  with zipfile.ZipFile(path) as z:  # torch's layout: stored records, data 64-byte aligned
    names = z.namelist()
    assert names[0] == 'model/data.pkl' and 'model/version' in names
    for info in z.infolist():
      assert info.compress_type == zipfile.ZIP_STORED
      if '/data/' in info.filename:
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        assert start % 64 == 0, info.filename


def test_legacy_pth_reads_without_torch(fixtures_dir):
  """The pre-1.6 format (original ESRGAN / DASR releases) and the zip format of the same dict,
  both written by torch (make_torch_legacy.py): same values, dtypes and shapes."""
  folder = fixtures_dir.parent / 'torch_legacy'
  values = np.load(folder / 'values.npz')
  legacy, current = pth.read(folder / 'legacy.pth'), pth.read(folder / 'zip.pth')
  assert legacy['iteration'] == current['iteration'] == 600
  for key in values.files:
    group, name = key.split('/', 1)
    for obj in (legacy, current):
      got = obj[group][name]
      assert got.dtype == values[key].dtype and got.shape == values[key].shape, key
      np.testing.assert_array_equal(got, values[key])
  spec, _ = convert.convert_file(folder / 'legacy.pth')
  assert spec.arch == 'SRVGGNetCompact' and spec.scale == 2


def test_legacy_pth_with_code_is_refused(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top

  class Evil:
    def __reduce__(self):
      return (print, ('executed',))

  path = tmp_path / 'old.pth'
  path.write_bytes(b''.join(pickle.dumps(x, 2) for x in (0x1950a86a20f9469cfc6c, 1001, {},
                                                          {'w': Evil()})))
  with pytest.raises(ValueError, match=r'old.pth: cannot read .*refusing to load .*\.print'):
    convert.read_state_dict(path)


def test_export_command_formats_come_back(tmp_path, fixtures_dir, capsys):
  """pth, safetensors and orbax exports of a converted checkpoint load back to the same
  variables; the orbax directory upscales like the original; the growth-width note shows."""
  src = fixtures_dir.parent / TORCH_RRDBNET
  spec, variables = models.load_weights(src)
  want = traverse_util.flatten_dict(variables)
  for name in ('out.pth', 'out.safetensors', 'out_orbax'):
    assert cli.main(['export', str(src), str(tmp_path / name)]) == 0
    spec2, back = models.load_weights(tmp_path / name)
    assert spec2 == spec, name
    back = traverse_util.flatten_dict(jax.device_get(back))
    assert set(back) == set(want)
    for k in want:
      np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(want[k]), err_msg=name)
  assert pth.read(tmp_path / 'out.pth').keys() == {'params_ema', convert.SPEC_KEY}
  assert 'spandrel will not load this RRDBNet' in capsys.readouterr().err
  img = images.read_image(fixtures_dir.parent / 'torch_rrdbnet' / 'input.png')[:16, :20]
  np.testing.assert_array_equal(inference.load_model(tmp_path / 'out_orbax').upscale(img),
                                inference.load_model(src).upscale(img))
  assert cli.main(['export', str(src), str(tmp_path / 'x.bin'), '--format', 'pth']) == 0
  assert cli.main(['export', str(tmp_path / 'missing.pth'), str(tmp_path / 'y.pth')]) == 2
  assert 'missing.pth: no such file' in capsys.readouterr().err


def test_exports_keep_what_a_state_dict_cannot_say(tmp_path, fixtures_dir, capsys):
  """The compact model's bicubic skip has no weights: the spec stored with the export brings it
  back (detection alone would give Real-ESRGAN's nearest skip), and the command warns that
  PyTorch tools compute another output. A discriminator's weights go under `params`, as
  RealESRGAN_x4plus_netD.pth."""
  spec = models.ModelSpec('SRVGGNetCompact', dict(num_feat=8, num_conv=1, upscale=4,
                                                  skip='bicubic'))
  module = spec.build()
  models.save_model(tmp_path / 'c.msgpack', spec, module.init(jax.random.key(0),
                                                              *models.example_inputs(module)))
  for name in ('c.pth', 'c.safetensors'):
    assert cli.main(['export', str(tmp_path / 'c.msgpack'), str(tmp_path / name)]) == 0
    assert 'compute another output' in capsys.readouterr().err
    assert models.load_weights(tmp_path / name)[0] == spec, name
    detected = convert.detect_architecture(convert.read_state_dict(tmp_path / name))
    assert detected.kwargs.get('skip', 'nearest') == 'nearest'
  sd = convert.read_state_dict(fixtures_dir / 'basicsr' / 'unet_disc_sn.npz')
  d_spec, d_vars = convert.convert_state_dict(sd)
  models.save_model(tmp_path / 'd.msgpack', d_spec, d_vars)
  assert cli.main(['export', str(tmp_path / 'd.msgpack'), str(tmp_path / 'd.pth')]) == 0
  assert pth.read(tmp_path / 'd.pth').keys() == {'params', convert.SPEC_KEY}


def test_orbax_export_restores_onto_a_mesh(tmp_path, fixtures_dir):
  spec, variables = models.load_weights(fixtures_dir.parent / TORCH_RRDBNET)
  models.save_orbax(tmp_path / 'm', spec, variables, {'note': 'x'})
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  spec2, restored, meta = models.load_orbax(tmp_path / 'm', sharding=replicated)
  assert spec2 == spec and meta == {'note': 'x'}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(variables)):
    assert a.sharding == replicated and len(a.sharding.device_set) == len(jax.devices())
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  (tmp_path / 'm' / models.ORBAX_SPEC_FILE).write_text(
      (tmp_path / 'm' / models.ORBAX_SPEC_FILE).read_text().replace(
          '"num_feat": 16', '"num_feat": 8'))
  with pytest.raises(ValueError, match='do not fit RRDBNet'):
    models.load_weights(tmp_path / 'm')


def _basicsr_rrdbnet():
  """BasicSR's own RRDBNet class, imported without running basicsr/__init__ (which pulls in the
  whole training stack)."""
  spec = importlib.util.find_spec('basicsr')
  if spec is None:
    pytest.skip('basicsr is not installed')
  if 'basicsr' not in sys.modules:
    package = types.ModuleType('basicsr')
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules['basicsr'] = package
  from basicsr.archs.rrdbnet_arch import RRDBNet  # pylint: disable=g-import-not-at-top
  return RRDBNet


def test_pth_export_loads_in_pytorch_tools(tmp_path, fixtures_dir):
  """Where torch is installed: torch.load(weights_only=True) reads the export, BasicSR's RRDBNet
  loads it with strict=True and spandrel detects it, both within one grey level of ours."""
  torch = pytest.importorskip('torch')
  spec = models.ModelSpec('RRDBNet', dict(num_feat=16, num_block=1, num_grow_ch=32, scale=4))
  module = spec.build()
  img = images.to_float(images.read_image(fixtures_dir.parent / 'torch_rrdbnet' / 'input.png'))
  img = img[:24, :20]
  variables = module.init(jax.random.key(0), img[None])
  models.save_model(tmp_path / 'm.msgpack', spec, variables)
  ours = np.asarray(module.apply(variables, img[None]))[0]
  export.export(tmp_path / 'm.msgpack', tmp_path / 'm.pth')
  export.export(tmp_path / 'm.msgpack', tmp_path / 'm.safetensors')
  sd = torch.load(tmp_path / 'm.pth', weights_only=True, mmap=True)['params_ema']
  x = torch.from_numpy(img).permute(2, 0, 1)[None]

  def run(net):
    with torch.no_grad():
      return net.eval()(x)[0].permute(1, 2, 0).numpy()

  net = _basicsr_rrdbnet()(3, 3, scale=4, num_feat=16, num_block=1, num_grow_ch=32)
  net.load_state_dict(sd, strict=True)
  assert np.abs(run(net) - ours).max() * 255 < 1
  spandrel = pytest.importorskip('spandrel')
  for name in ('m.pth', 'm.safetensors'):
    descriptor = spandrel.ModelLoader().load_from_file(str(tmp_path / name))
    assert descriptor.scale == 4
    assert np.abs(run(descriptor.model) - ours).max() * 255 < 1, name


_PLAIN_SR = (('RRDBNet', dict(num_feat=8, num_block=1, num_grow_ch=8, scale=2)),
             ('SRVGGNetCompact', dict(num_feat=8, num_conv=2, upscale=4)),
             ('EDSR', dict(num_feat=8, num_block=1, upscale=3)))


@pytest.mark.parametrize('arch,kwargs', _PLAIN_SR, ids=[a for a, _ in _PLAIN_SR])
def test_forward_exports_with_symbolic_height_and_width(arch, kwargs):
  """What the ONNX graph rests on: a jax.export of the forward pass with symbolic batch, height
  and width (RRDBNet x2's pixel-unshuffle included) runs at other sizes like the module."""
  spec = models.ModelSpec(arch, kwargs)
  module = spec.build()
  variables = module.init(jax.random.key(0), *models.example_inputs(module))
  shape = jax.export.symbolic_shape('b, h, w, 3')
  exported = jax.export.export(jax.jit(lambda x: module.apply(variables, x)))(
      jax.ShapeDtypeStruct(shape, np.float32))
  x = np.random.RandomState(0).rand(2, 10, 14, 3).astype(np.float32)
  np.testing.assert_allclose(exported.call(x), module.apply(variables, x), rtol=0, atol=1e-5)


def test_onnx_export_matches_onnxruntime(tmp_path):
  """With the [onnx] extra: the exported graph, NCHW and NHWC, at two sizes and batch sizes
  under onnxruntime, against the module in float32."""
  pytest.importorskip('jax2onnx')
  ort = pytest.importorskip('onnxruntime')
  for (arch, kwargs), layout in zip(_PLAIN_SR[:2], ('nchw', 'nhwc')):
    spec = models.ModelSpec(arch, kwargs)
    module = spec.build()
    variables = module.init(jax.random.key(0), *models.example_inputs(module))
    models.save_model(tmp_path / 'm.msgpack', spec, variables)
    assert cli.main(['export', str(tmp_path / 'm.msgpack'), str(tmp_path / 'm.onnx'),
                     '--onnx-layout', layout]) == 0
    runtime = ort.InferenceSession(str(tmp_path / 'm.onnx'))
    for shape in ((1, 12, 16, 3), (2, 10, 6, 3)):
      x = np.random.RandomState(1).rand(*shape).astype(np.float32)
      want = np.asarray(module.apply(variables, x))
      feed = x.transpose(0, 3, 1, 2) if layout == 'nchw' else x
      got = runtime.run(None, {runtime.get_inputs()[0].name: feed})[0]
      got = got.transpose(0, 2, 3, 1) if layout == 'nchw' else got
      assert got.shape == want.shape
      assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (arch, layout, shape)


def test_onnx_export_refuses_conditional_networks(tmp_path, fixtures_dir, capsys):
  assert cli.main(['export', str(fixtures_dir.parent / 'torch_dasr' / 'model_600.pt'),
                   str(tmp_path / 'm.onnx')]) == 2
  assert 'BlindSR is a conditional network' in capsys.readouterr().err
