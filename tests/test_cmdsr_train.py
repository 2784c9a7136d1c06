"""CMDSR training: smoke runs of both recipes, the alternating schedule, condition sources,
initialisation from an RRDBNet checkpoint, and conditional upscaling of the exported model."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condsr_jax import cli, images, methods, train

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('name', ['cmdsr_srresnet_x4', 'cmdsr_rrdb_x4'])
def test_recipe_trains_resumes_exports_and_upscales(tmp_path, name, smoke_config):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(smoke_config(name, **{'train.num_steps': 4}), str(workdir))
  summary = train.train_and_evaluate(smoke_config(name), str(workdir))  # resumes 4 -> 6
  assert np.isfinite(summary['psnr'])
  out = tmp_path / 'out'
  lr = images.read_image(REPO / 'tests' / 'fixtures' / 'torch_rrdbnet' / 'input.png')
  images.write_image(tmp_path / 'in.png', lr[:24, :20])
  assert cli.main(['upscale', str(tmp_path / 'in.png'), '-m', str(workdir), '-o', str(out),
                   '--support', str(tmp_path / 'in.png'), '--support-patch', '8']) == 0
  assert images.read_image(out / 'in_out.png').shape == (96, 80, 3)


def _batch(method, config, seed=0):
  rng = np.random.default_rng(seed)
  sampler = method.param_sampler()
  k, size = config.data.batch_size, config.data.crop_size
  elems = [sampler(rng) for _ in range(k)]
  batch = {key: np.stack([e[key] for e in elems]) for key in elems[0]}
  batch['gt'] = rng.random((k, size, size, 3), np.float32)
  return batch


def test_condition_net_steps_every_cond_every_sr_steps(smoke_config):
  config = smoke_config('cmdsr_srresnet_x4', **{'cmdsr.cond_every': 4})
  method = methods.build(config)
  state = jax.jit(method.init_state)(jax.random.key_data(jax.random.key(0)))
  step = jax.jit(method.train_step)
  cond0, sr0 = state.params['condition_net'], state.params['sr_net']
  state, m1 = step(state, _batch(method, config, 1), {})  # SR steps 1, 2
  same = jax.tree.map(np.array_equal, cond0, state.params['condition_net'])
  assert all(jax.tree.leaves(same))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, sr0, state.params['sr_net'])))
  cond1 = state.params['condition_net']
  state, m2 = step(state, _batch(method, config, 2), {})  # SR steps 3, 4: condition step
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, cond1,
                                              state.params['condition_net'])))
  for m in (m1, m2):
    assert {'l_sr', 'l_con', 'd_in', 'd_cross'} <= set(m)


@pytest.mark.parametrize('condition', ['oracle', 'none'])
def test_oracle_and_blind_conditions_train(condition, smoke_config):
  config = smoke_config('cmdsr_srresnet_x4', **{'cmdsr.condition': condition})
  method = methods.build(config)
  state = jax.jit(method.init_state)(jax.random.key_data(jax.random.key(0)))
  assert ('oracle' in state.params) == (condition == 'oracle')
  assert 'condition_net' not in state.params
  state, m = jax.jit(method.train_step)(state, _batch(method, config), {})
  assert np.isfinite(float(m['loss'])) and int(state.step) == 1


def test_rrdb_variant_starts_from_a_converted_rrdbnet(tmp_path, smoke_config):
  fixture = REPO / 'tests' / 'fixtures' / 'reference' / 'basicsr' / 'rrdbnet_x4.npz'
  config = smoke_config('cmdsr_rrdb_x4', **{'init.generator': str(fixture)})
  config.model.kwargs.update({'num_feat': 32, 'num_block': 2, 'num_grow_ch': 16})
  method = methods.build(config)
  init = methods.initial_weights(method, config)
  state = jax.jit(method.init_state)(jax.random.key_data(jax.random.key(0)), **init)
  from condsr_jax import convert  # pylint: disable=g-import-not-at-top
  spec, plain = convert.convert_file(fixture)
  x = jnp.asarray(np.random.default_rng(0).random((1, 16, 16, 3), np.float32))
  ours = method.super_resolve(state.params, x)
  ref = spec.build().apply(plain, x)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5)
