"""DASR's degradation encoder, SR network and MoCo InfoNCE against the official PyTorch outputs.
Every size is read from the fixture's state dict."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import assert_close, nhwc
from condsr_jax import convert, export, inference
from condsr_jax.nn import conditional, dasr, layers


def _fixture(request, name):
  return np.load(request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'methods'
                 / f'{name}.npz')


def _state_dict(data, prefix):
  return {k[len('sd/') + len(prefix):]: data[k] for k in data.files
          if k.startswith(f'sd/{prefix}')}


def _variables(sd, module, *inputs):
  """The official state dict on `module`'s variables; every leaf filled, nothing left over."""
  target = traverse_util.flatten_dict(jax.eval_shape(module.init, jax.random.key(0), *inputs))
  filled = {}
  for key, value in sd.items():
    mods, leaf = convert.torch_module_path(key)
    if leaf == 'num_batches_tracked':
      continue
    if leaf in ('running_mean', 'running_var'):
      dest, value = ('batch_stats', *mods, leaf[len('running_'):]), value
    elif leaf == 'bias':
      dest = ('params', *mods, 'bias')
    elif value.ndim == 1:
      dest = ('params', *mods, 'scale')
    elif value.ndim == 2:
      dest, value = ('params', *mods, 'kernel'), value.T
    else:
      dest, value = ('params', *mods, 'kernel'), value.transpose(2, 3, 1, 0)
    assert dest in target, f'{key} has no place ({dest})'
    assert value.shape == target[dest].shape, key
    filled[dest] = value
  assert set(filled) == set(target)
  return traverse_util.unflatten_dict(filled)


def _count(sd, pattern):
  return len({m.group(1) for k in sd if (m := re.fullmatch(pattern, k))})


def test_encoder_matches_official(request):
  data = _fixture(request, 'dasr_wang_encoder')
  sd = _state_dict(data, 'E.encoder_q.')
  n = _count(sd, r'E\.(\d+)\.weight') // 2  # conv and BN weights
  widths = [sd[f'E.{3 * i}.weight'].shape[0] for i in range(n)]
  encoder = dasr.DegradationEncoder(widths, mlp_dim=sd['mlp.2.weight'].shape[0])
  x = nhwc(data['in/x'])
  variables = _variables(sd, encoder, x)
  fea, proj = encoder.apply(variables, x)
  assert_close(fea, data['out/fea'])
  assert_close(proj, data['out/proj'])
  assert_close(dasr.normalize(proj), data['out/q'])


def test_sr_network_matches_official(request):
  data = _fixture(request, 'dasr_wang_sr')
  sd = _state_dict(data, 'G.')
  # MeanShift keeps the official constants, which the network holds as such.
  mean = 255.0 * np.asarray(layers.DIV2K_MEAN, np.float32)
  np.testing.assert_allclose(sd.pop('sub_mean.bias'), -mean, rtol=1e-6)
  np.testing.assert_allclose(sd.pop('add_mean.bias'), mean, rtol=1e-6)
  for name in ('sub_mean.weight', 'add_mean.weight'):
    np.testing.assert_array_equal(sd.pop(name)[:, :, 0, 0], np.eye(3))
  num_feat, rep_dim = sd['head.0.weight'].shape[0], sd['compress.0.weight'].shape[0]
  num_up = _count(sd, r'tail\.0\.(\d+)\.weight')
  scale = 3 if sd['tail.0.0.weight'].shape[0] == 9 * num_feat else 2 ** num_up
  net = dasr.DASRNet(
      num_feat=num_feat, num_group=_count(sd, r'body\.(\d+)\.body\.0\.da_conv1\.conv\.weight'),
      num_block=_count(sd, r'body\.0\.body\.(\d+)\.da_conv1\.conv\.weight'),
      reduction=rep_dim // sd['body.0.body.0.da_conv1.ca.conv_du.0.weight'].shape[0],
      scale=scale, rep_dim=rep_dim)
  x, fea = nhwc(data['in/x']), data['in/fea']
  variables = _variables(sd, net, x, fea)
  k_v = layers.lrelu(fea @ variables['params']['compress_0']['kernel'], 0.1)
  assert_close(k_v, data['out/k_v'])
  assert_close(net.apply(variables, x, fea), nhwc(data['out/sr']))


def test_per_sample_depthwise_is_the_grouped_convolution():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 5, 4)).astype(np.float32)
  kernels = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
  grouped = jax.lax.conv_general_dilated(
      jnp.asarray(x.transpose(1, 2, 0, 3).reshape(1, 7, 5, 8)),
      jnp.asarray(kernels.reshape(8, 3, 3).transpose(1, 2, 0)[:, :, None, :]), (1, 1),
      ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=8)
  expected = np.asarray(grouped).reshape(7, 5, 2, 4).transpose(2, 0, 1, 3)
  np.testing.assert_allclose(dasr.per_sample_depthwise(x, kernels), expected, atol=1e-5)


def test_info_nce_and_queue_match_official_moco(request):
  data = _fixture(request, 'dasr_wang_moco')
  temperature = json.loads(str(data['meta']))['constructor']['T']
  logits, loss = dasr.info_nce(data['in/q_raw'], data['in/k_raw'], data['in/queue'], temperature)
  assert_close(logits, data['out/logits'])
  assert abs(float(loss) - float(data['out/loss'])) <= 1e-5 * abs(float(data['out/loss']))
  queue, pointer = dasr.enqueue(jnp.asarray(data['in/queue']), jnp.asarray(data['in/queue_ptr']),
                                jnp.asarray(data['in/k_raw']))
  assert_close(queue, data['out/queue_after'])
  assert int(pointer) == int(np.ravel(data['out/queue_ptr_after'])[0])
  with pytest.raises(ValueError, match='multiple of the key batch'):
    dasr.enqueue(queue, pointer, jnp.zeros((7, queue.shape[0])))


def test_moco_training_step_matches_official(request):
  """Train-mode BatchNorm (batch statistics; running stats with PyTorch's unbiased variance),
  the key encoder's EMA before it encodes, the queue and pointer after the logits."""
  data = _fixture(request, 'dasr_wang_moco_train')
  meta = json.loads(str(data['meta']))['constructor']
  sd_q, sd_k = _state_dict(data, 'E.encoder_q.'), _state_dict(data, 'E.encoder_k.')
  n = _count(sd_q, r'E\.(\d+)\.weight') // 2
  encoder = dasr.DegradationEncoder([sd_q[f'E.{3 * i}.weight'].shape[0] for i in range(n)],
                                    mlp_dim=sd_q['mlp.2.weight'].shape[0])
  im_q, im_k = nhwc(data['in/im_q']), nhwc(data['in/im_k'])
  out = dasr.moco_forward(encoder, _variables(sd_q, encoder, im_q), _variables(sd_k, encoder, im_q),
                          jnp.asarray(data['sd/E.queue']), jnp.asarray(data['sd/E.queue_ptr'][0]),
                          im_q, im_k, meta['m'], meta['T'])
  for name in ('embedding', 'q_proj', 'k_proj', 'logits'):
    assert_close(out[name], data[f'out/{name}'])
  assert abs(float(out['loss']) - float(data['out/loss'])) <= 1e-5 * abs(float(data['out/loss']))
  assert_close(out['queue'], data['out/after/E.queue'])
  assert int(out['pointer']) == int(data['out/after/E.queue_ptr'][0])
  after = {k[len('out/after/E.'):]: data[k] for k in data.files if k.startswith('out/after/E.')}
  for prefix, variables in (('encoder_q.', out['variables_q']), ('encoder_k.', out['variables_k'])):
    expected = _variables({**_state_dict(data, 'E.' + prefix),
                           **{k[len(prefix):]: v for k, v in after.items() if k.startswith(prefix)}},
                          encoder, im_q)
    jax.tree.map(lambda a, b: assert_close(a, b, rtol=1e-5), variables, expected)


def _official_layout(variables) -> dict[str, np.ndarray]:
  """Flax BlindSR variables as the official trainer's full BlindSR state dict: torch names,
  plus the constant mean shifts, the key encoder, the queue and BN counters."""
  sd = export.torch_state_dict(variables)
  mean = 255.0 * np.asarray(layers.DIV2K_MEAN, np.float32)
  for name, sign in (('sub_mean', -1), ('add_mean', 1)):
    sd[f'G.{name}.weight'] = np.eye(3, dtype=np.float32)[:, :, None, None]
    sd[f'G.{name}.bias'] = sign * mean
  for key in [k for k in sd if k.startswith('E.encoder_q.')]:
    sd['E.encoder_k.' + key[len('E.encoder_q.'):]] = sd[key] + 1.0
    if key.endswith('running_var'):
      sd[key[:-len('running_var')] + 'num_batches_tracked'] = np.array(7)
  sd['E.queue'], sd['E.queue_ptr'] = np.zeros((8, 16), np.float32), np.array([0])
  return sd


def test_official_blindsr_state_dict_is_detected_converted_and_tiles_agree():
  net = dasr.BlindSR(num_feat=16, num_group=2, num_block=1, reduction=4, scale=2, rep_dim=8,
                     enc_widths=(8, 8, 12, 12, 16, 16), mlp_dim=8, support_patch=40)
  lr = np.random.default_rng(3).uniform(size=(1, 30, 26, 3)).astype(np.float32)
  variables = net.init(jax.random.key(1), jnp.asarray(lr))
  variables = jax.tree.map(lambda v: v + 0.01 * jnp.arange(v.size).reshape(v.shape) % 0.3,
                           variables)  # BN statistics off their init values
  spec, converted = convert.convert_state_dict(_official_layout(variables))
  assert spec.arch == 'BlindSR' and spec.scale == 2
  built = spec.build()
  for field in ('num_feat', 'num_group', 'num_block', 'reduction', 'rep_dim', 'mlp_dim'):
    assert getattr(built, field) == getattr(net, field), field
  assert tuple(built.enc_widths) == net.enc_widths
  jax.tree.map(np.testing.assert_array_equal, converted, jax.device_get(variables))
  # The official test path: the encoder on the whole LR image, then G; the Upscaler computes
  # the representation once per image, so tiles agree with the whole image.
  expected = np.asarray(net.apply(variables, jnp.asarray(lr)))[0]
  upscaler = inference.Upscaler(spec, converted)
  np.testing.assert_allclose(upscaler.upscale_float(lr[0]), expected, atol=1e-5)
  np.testing.assert_allclose(upscaler.upscale_float(lr[0], tile=16, tile_overlap=4), expected,
                             atol=1e-5)
  # Past support_patch the representation is the mean over fixed crops.
  big = np.random.default_rng(4).uniform(size=(1, 44, 50, 3)).astype(np.float32)
  crops = conditional.lr_support_crops(big, net.support_size, net.support_patch)
  np.testing.assert_allclose(net.apply(variables, jnp.asarray(big), method='condition_from_lr'),
                             net.apply(variables, jnp.asarray(crops),
                                       method='condition_from_support'), rtol=1e-6)


def test_official_model_pt_upscales_from_the_command_line(request, tmp_path):
  """tests/fixtures/torch_dasr/model_600.pt: written by torch.save in the official trainer's
  layout (make_torch_dasr.py); the CLI reads it without torch, detects BlindSR and upscales."""
  from condsr_jax import cli, images  # pylint: disable=g-import-not-at-top
  checkpoint = request.config.rootpath / 'tests' / 'fixtures' / 'torch_dasr' / 'model_600.pt'
  spec, variables = convert.convert_state_dict(convert.read_state_dict(checkpoint))
  assert spec.arch == 'BlindSR' and spec.scale == 2
  lr = np.random.default_rng(5).integers(0, 256, (20, 24, 3), np.uint8)
  images.write_image(tmp_path / 'in.png', lr)
  assert cli.main(['upscale', str(tmp_path / 'in.png'), '-m', str(checkpoint), '-o',
                   str(tmp_path / 'out')]) == 0
  written = sorted((tmp_path / 'out').iterdir())
  assert len(written) == 1
  out = images.read_image(written[0])
  expected = spec.build().apply(variables, jnp.asarray(lr[None] / 255.0, jnp.float32))[0]
  expected = np.clip(np.round(np.asarray(expected) * 255.0), 0, 255)
  assert out.shape == (40, 48, 3)
  assert np.abs(out.astype(np.float32) - expected).max() <= 1.0
