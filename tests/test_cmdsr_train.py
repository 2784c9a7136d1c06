"""CMDSR training: smoke runs of both recipes, the alternating schedule, condition sources,
initialisation from an RRDBNet checkpoint, and conditional upscaling of the exported model."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condsr_jax import cli, convert, images, methods, models, train
from conftest import evaluate_command_psnr, start_training, training_batch

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_recipe_trains_resumes_exports_and_upscales(tmp_path, smoke_config, capsys):
  name = 'cmdsr_srresnet_x4'
  workdir = tmp_path / 'run'
  train.train_and_evaluate(smoke_config(name, **{'train.num_steps': 4}), str(workdir))
  summary = train.train_and_evaluate(smoke_config(name), str(workdir))  # resumes 4 -> 6
  assert np.isfinite(summary.metrics['val/psnr'])
  # Validation conditions the generator as `condsr-jax evaluate` does: the same PSNR.
  psnr = evaluate_command_psnr(capsys, smoke_config(name), workdir)
  assert psnr == f'{summary.metrics["val/psnr"]:.3f}'
  spec, _, _ = models.load_model_file(workdir / 'model.msgpack')
  assert spec.kwargs['support_patch'] == 8 and not spec.kwargs['blind']
  out = tmp_path / 'out'
  lr = images.read_image(REPO / 'tests' / 'fixtures' / 'torch_rrdbnet' / 'input.png')
  images.write_image(tmp_path / 'in.png', lr[:24, :20])
  assert cli.main(['upscale', str(tmp_path / 'in.png'), '-m', str(workdir), '-o', str(out),
                   '--support', str(tmp_path / 'in.png'), '--support-patch', '8']) == 0
  assert images.read_image(out / 'in_out.png').shape == (96, 80, 3)


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_condition_net_steps_every_cond_every_sr_steps(smoke_config):
  config = smoke_config('cmdsr_srresnet_x4', **{'cmdsr.cond_every': 4})
  method, state, step = start_training(config)
  params = lambda s: s.method.params['generator']  # pylint: disable=unnecessary-lambda-assignment
  cond0, sr0 = params(state)['condition_net'], params(state)['sr_net']
  state, m1 = step(state, training_batch(method, config, 1), {})  # SR steps 1, 2
  assert _same(cond0, params(state)['condition_net'])
  assert not _same(sr0, params(state)['sr_net'])
  cond1 = params(state)['condition_net']
  state, m2 = step(state, training_batch(method, config, 2), {})  # SR steps 3, 4: condition step
  assert not _same(cond1, params(state)['condition_net'])
  for m in (m1, m2):
    assert {'l_sr', 'l_con', 'd_in', 'd_cross'} <= set(m)


@pytest.mark.parametrize('condition', ['oracle', 'none'])
def test_oracle_and_blind_conditions_train_and_export(condition, smoke_config):
  config = smoke_config('cmdsr_srresnet_x4', **{'cmdsr.condition': condition})
  method, state, step = start_training(config)
  params = state.method.params['generator']
  assert ('oracle' in params) == (condition == 'oracle')
  assert 'condition_net' not in params
  state, m = step(state, training_batch(method, config), {})
  assert np.isfinite(float(m['loss'])) and int(state.step) == 1
  products = method.exports(state.method, state.ema)
  assert products['generator'].spec.kwargs['blind']
  assert ('oracle' in products) == (condition == 'oracle')
  # The exported blind generator is a deployable model: its condition is zeros.
  net = products['generator'].spec.build()
  lr = jnp.ones((1, 12, 12, 3)) * 0.5
  cond = net.apply(products['generator'].variables, lr, method='condition_from_lr')
  np.testing.assert_array_equal(cond, 0.0)
  assert method.evaluators() == {} if condition == 'oracle' else 'val' in method.evaluators()


def test_rrdb_variant_starts_from_a_converted_rrdbnet(smoke_config):
  fixture = REPO / 'tests' / 'fixtures' / 'reference' / 'basicsr' / 'rrdbnet_x4.npz'
  spec, plain = convert.convert_file(fixture)
  config = smoke_config('cmdsr_rrdb_x4', **{'init.generator': str(fixture)})
  config.model.kwargs.update({k: spec.kwargs[k] for k in ('num_feat', 'num_block',
                                                           'num_grow_ch')})
  method = methods.build(config)
  init = train.initial_weights(method, config)
  state = jax.jit(lambda init: train.init_loop_state(
      method, jax.random.key_data(jax.random.key(0)), init))(init)
  x = jnp.asarray(np.random.default_rng(0).random((1, 16, 16, 3), np.float32))
  params = state.method.params['generator']
  cond = method.net.apply({'params': params}, x, method='condition_from_lr')
  np.testing.assert_allclose(np.asarray(method.upscale(params, x, cond)),
                             np.asarray(spec.build().apply(plain, x)), atol=1e-5)
  # The recipe trains from there and exports its own architecture (resuming, evaluating and
  # upscaling are the SRResNet recipe's test: the same code).
  step = jax.jit(train.make_train_step(method, config.train.ema_decay))
  state, metrics = step(state, training_batch(method, config, 1), {})
  assert np.isfinite(float(metrics['loss'])) and int(state.nonfinite[0]) == 0
  exported, _ = method.exports(state.method, state.ema)['generator']
  assert exported.arch == 'CMDSRRRDBNet'
