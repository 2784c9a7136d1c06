"""Training steps against BasicSR's `SRModel` and Real-ESRGAN's `RealESRGANModel` (fixtures in
tests/fixtures/reference/training): the same initial weights and batches through the loop's own
step (`train.make_train_step` around the method's `train_step`) give the same logged losses and,
after K steps, the same weights, optimiser effect and EMA. Every size and hyper-parameter comes
from the fixture's meta and state dicts."""

import json

import jax
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from conftest import nhwc
from condsr_jax import config as config_lib, convert, methods, train
from condsr_jax.methods import common, optimizers


def _load(fixtures_dir, name):
  data = np.load(fixtures_dir / 'training' / f'{name}.npz')
  return data, json.loads(str(data['meta']))


def _state_dict(data, prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def _configure_generator(c, sd):
  spec = convert.detect_architecture(sd)
  c.scale = spec.scale
  c.model.arch = spec.arch
  c.model.kwargs = {k: v for k, v in spec.kwargs.items()
                    if k not in ('scale', 'num_in_ch', 'num_out_ch')}
  c.data.channels = spec.kwargs['num_in_ch']
  return spec


def _adam(adam: dict, meta: dict, rates: list[float]) -> ml_collections.ConfigDict:
  """The optimiser section of a fixture's Adam and multi-step scheduler; its learning rate at
  each of the K updates is the one the reference logged."""
  b1, b2 = adam['betas']
  assert not adam['weight_decay'] and not adam['amsgrad']
  scheduler = meta['opt']['train']['scheduler']
  assert scheduler['type'] in ('MultiStepLR', 'MultiStepRestartLR'), scheduler
  assert not scheduler.get('restarts'), scheduler
  spec = optimizers.optimizer_config(adam['lr'], b1=b1, b2=b2, eps=adam['eps'],
                                     milestones=scheduler['milestones'], gamma=scheduler['gamma'])
  lr = optimizers.learning_rate(spec)
  np.testing.assert_allclose([float(lr(k)) for k in range(len(rates))], rates, rtol=1e-6)
  return spec


def _batch(data, k):
  return {'train': {'lq': nhwc(data[f'in/lq_{k}']), 'gt': nhwc(data[f'in/gt_{k}'])}}


def _flat(variables):
  return {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables).items()}


def _compare_weights(ours, ref, initial, change_tol=1e-3):
  """Per tensor max|ours - ref| / max|ref| <= 1e-4, and the global L2 of the change."""
  ours, ref, initial = _flat(ours), _flat(ref), _flat(initial)
  assert ours.keys() == ref.keys()
  num = den = 0.0
  for k in ref:
    scale = np.abs(ref[k]).max()
    assert np.abs(ours[k] - ref[k]).max() <= 1e-4 * scale, k
    num += np.sum(np.square((ours[k] - initial[k]) - (ref[k] - initial[k])))
    den += np.sum(np.square(ref[k] - initial[k]))
  assert den > 0 and np.sqrt(num / den) <= change_tol, np.sqrt(num / den)


def _close(ours, ref, name):
  np.testing.assert_allclose(float(ours), float(ref), rtol=2e-5, atol=1e-6, err_msg=name)


def _run(method, config, initial, batches):
  state = jax.jit(lambda init: train.init_loop_state(method, jax.random.key_data(
      jax.random.key(0)), init))(initial)
  step = jax.jit(train.make_train_step(method, config.train.ema_decay))
  logged = []
  for batch in batches:
    state, metrics = step(state, batch, method.constants())
    logged.append(jax.device_get(metrics))
  return state, logged


def test_sr_l1_adam_ema_steps_match_basicsr(fixtures_dir):
  data, meta = _load(fixtures_dir, 'train_sr_l1_adam')
  h = meta['hparams']
  sd = _state_dict(data, 'sd/')
  c = config_lib.default_config('sr')
  spec = _configure_generator(c, sd)
  c.degradation = common.paired_config(h['gt_hw'][0])
  c.data.batch_size = h['batch']
  assert h['pixel_loss']['type'] == 'L1Loss'
  c.loss.pixel_weight = h['pixel_loss']['loss_weight']
  c.optim.generator = _adam(h['adam'], meta, h['lr_per_step'])
  c.train.ema_decay = h['ema_decay']
  method = methods.build(c)
  initial = convert.state_dict_to_variables(sd, spec)
  state, logged = _run(method, c, {'generator': initial},
                       [_batch(data, k) for k in range(h['K'])])
  for k, m in enumerate(logged):
    _close(m['l_pix'], data[f'out/l_pix_{k}'], f'l_pix step {k}')
    assert m['skipped'] == 0
  after = convert.state_dict_to_variables(_state_dict(data, 'out/g_after/'), spec)['params']
  ema = convert.state_dict_to_variables(_state_dict(data, 'out/g_ema_after/'), spec)['params']
  _compare_weights(state.method.params['generator'], after, initial['params'])
  _compare_weights(state.ema, ema, initial['params'], change_tol=5e-2)


@pytest.fixture
def esrgan_case(fixtures_dir, tmp_path):
  data, meta = _load(fixtures_dir, 'train_esrgan_step')
  h = meta['hparams']
  assert h['net_d_iters'] == 1 and h['net_d_init_iters'] == 0
  vgg_file = tmp_path / 'vgg.safetensors'
  safetensors.numpy.save_file(_state_dict(data, 'sd_vgg/'), str(vgg_file))
  sd_g, sd_d = _state_dict(data, 'sd_g/'), _state_dict(data, 'sd_d/')
  c = config_lib.default_config('esrgan')
  g_spec = _configure_generator(c, sd_g)
  d_spec = convert.detect_architecture(sd_d)
  c.discriminator.kwargs = {k: v for k, v in d_spec.kwargs.items() if k != 'num_in_ch'}
  c.degradation = common.paired_config(h['gt_hw'][0])
  c.data.batch_size = h['batch']
  c.loss.pixel_weight = h['pixel']['loss_weight']
  target = {True: 'usm', False: 'gt'}
  c.loss.pixel_target = target[h['l1_gt_usm']]
  c.loss.perceptual_target = target[h['percep_gt_usm']]
  c.loss.gan_target = target[h['gan_gt_usm']]
  p = h['perceptual']
  assert p['criterion'] == 'l1' and p['use_input_norm'] and not p['range_norm']
  c.loss.perceptual_weight = p['perceptual_weight']
  c.loss.perceptual_layers = p['layer_weights']
  c.loss.vgg_weights = str(vgg_file)
  c.loss.gan_type = h['gan']['gan_type']
  c.loss.gan_weight = h['gan']['loss_weight']
  rates_g, rates_d = zip(*h['lr_per_step_g_d'])
  c.optim.generator = _adam(h['adam_g'], meta, rates_g)
  c.optim.discriminator = _adam(h['adam_d'], meta, rates_d)
  c.train.ema_decay = h['ema_decay']
  initial = {'generator': convert.state_dict_to_variables(sd_g, g_spec),
             'discriminator': convert.state_dict_to_variables(sd_d, d_spec)}
  return data, h, c, g_spec, d_spec, initial


def test_realesrgan_steps_match_the_reference(esrgan_case):
  data, h, c, g_spec, d_spec, initial = esrgan_case
  method = methods.build(c)
  state, logged = _run(method, c, initial, [_batch(data, k) for k in range(h['K'])])
  names = {'l_g_pix': 'l_pix', 'l_g_percep': 'l_percep', 'l_g_gan': 'l_g_gan',
           'l_d_real': 'l_d_real', 'out_d_real': 'out_d_real', 'l_d_fake': 'l_d_fake',
           'out_d_fake': 'out_d_fake'}
  for k, m in enumerate(logged):
    for ref_name, ours in names.items():
      _close(m[ours], data[f'out/{ref_name}_{k}'], f'{ref_name} step {k}')
  g_after = convert.state_dict_to_variables(_state_dict(data, 'out/g_after/'), g_spec)
  g_ema = convert.state_dict_to_variables(_state_dict(data, 'out/g_ema_after/'), g_spec)
  d_after = convert.state_dict_to_variables(_state_dict(data, 'out/d_after/'), d_spec)
  ours = state.method
  _compare_weights(ours.params['generator'], g_after['params'],
                   initial['generator']['params'])
  _compare_weights(state.ema, g_ema['params'], initial['generator']['params'], change_tol=5e-2)
  _compare_weights(ours.params['discriminator'], d_after['params'],
                   initial['discriminator']['params'])
  # Spectral-norm u and v after three power iterations per step (one in the generator's step).
  ours_uv = _flat(ours.extra['d_stats']['spectral'])
  for path, ref in _flat(d_after['spectral']).items():
    np.testing.assert_allclose(ours_uv[path], ref, atol=1e-5, err_msg=path)


def test_usm_targets_match_the_reference(esrgan_case):
  from condsr_jax.degrade import filters  # pylint: disable=g-import-not-at-top
  data, h, *_ = esrgan_case
  for k in range(h['K']):
    usm = filters.usm_sharp(nhwc(data[f'in/gt_{k}']))
    np.testing.assert_allclose(usm, nhwc(data[f'out/gt_usm_{k}']), atol=1e-5)
