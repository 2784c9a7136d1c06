"""DASR training: the smoke recipe end to end, the two-stage schedule, MoCo's queue, seed 004's
variants, and the same step on 4 devices and on 1."""

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import cli, config as config_lib, images, models, train
from conftest import evaluate_command_psnr, start_training, stopped_at, training_batch

REPO = pathlib.Path(__file__).resolve().parent.parent
# Each takes its own path through the step: several query and key views of two sizes (centroid
# keys included), the predictor, the fused map, the oracle MLP without an encoder (and the
# exported blind network). The other variants are values of these paths (no_contrast: of the
# recipe's, without the key encoder); experiments/dasr_small.py trains every one.
VARIANTS = ('multicrop', 'byol', 'local_fusion', 'oracle')


def _config(smoke_config, variant: str = '', **overrides):
  c = smoke_config('dasr_x4')
  if variant:
    config_lib.sibling_recipe(str(REPO / 'configs' / 'dasr_x4.py'), 'dasr_x4').apply_variant(
        c, variant)
  c.update_from_flattened_dict(overrides)
  return c


def _checkpointed_method_state(workdir, step):
  path = pathlib.Path(workdir) / 'checkpoints' / str(step) / 'state'
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)['method']


def _same(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_recipe_trains_resumes_exactly_exports_and_upscales(tmp_path, smoke_config, capsys):
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  # One validation image: the run and `condsr-jax evaluate` each degrade it on the whole grid.
  one = {'eval.max_images': 1}
  summary = train.train_and_evaluate(_config(smoke_config, **one), str(straight))
  # The split run resumes the straight run's step-4 checkpoint rather than training 0 -> 4.
  quiet = {'eval.val': ''}
  stopped_at(straight, 4, split)
  train.train_and_evaluate(_config(smoke_config, **quiet), str(split))  # resumes 4 -> 6
  # Parameters, both optimisers, BatchNorm statistics, the key encoder, queue and pointer.
  a, b = (_checkpointed_method_state(w, 6) for w in (straight, split))
  assert {'queue', 'pointer', 'key_encoder', 'batch_stats'} <= set(a['extra'])
  jax.tree.map(np.testing.assert_array_equal, a, b)
  a = models.load_model_file(straight / 'model.msgpack')
  b = models.load_model_file(split / 'model.msgpack')
  jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
  assert a[0].arch == 'BlindSR' and set(a[1]) == {'params', 'batch_stats'}
  # Validation conditions the generator as `condsr-jax evaluate` does: the same PSNR.
  assert evaluate_command_psnr(capsys, _config(smoke_config, **one), straight) == (
      f'{summary.metrics["val/psnr"]:.3f}')
  lr = images.read_image(REPO / 'tests' / 'fixtures' / 'torch_rrdbnet' / 'input.png')
  images.write_image(tmp_path / 'in.png', lr[:24, :20])
  out = tmp_path / 'out'
  assert cli.main(['upscale', str(tmp_path / 'in.png'), '-m', str(straight), '-o', str(out)]) == 0
  assert images.read_image(out / 'in_out.png').shape == (96, 80, 3)


def test_stage_one_trains_the_encoder_only_then_everything(smoke_config):
  config = _config(smoke_config, **{'dasr.encoder_steps': 1})
  method, state, step = start_training(config)
  gen = lambda s: s.method.params['generator']  # pylint: disable=unnecessary-lambda-assignment
  g0, e0, queue0 = gen(state)['G'], gen(state)['E'], state.method.extra['queue']
  state, m1 = step(state, training_batch(method, config, 1), {})
  assert float(m1['stage']) == 1
  assert _same(g0, gen(state)['G']) and not _same(e0, gen(state)['E'])
  # The tasks' keys entered the queue after the logits, at the pointer, in batch order.
  k = config.data.batch_size
  queue1 = state.method.extra['queue']
  assert int(state.method.extra['pointer']) == k
  np.testing.assert_array_equal(queue0[:, k:], queue1[:, k:])
  assert not np.allclose(queue0[:, :k], queue1[:, :k])
  np.testing.assert_allclose(np.linalg.norm(queue1[:, :k], axis=0), 1.0, rtol=1e-5)
  # The key encoder moved towards the query encoder and kept its own BatchNorm statistics.
  assert not _same(state.method.extra['key_encoder']['params'], e0['encoder_q'])
  e1 = gen(state)['E']
  state, m2 = step(state, training_batch(method, config, 2), {})
  assert float(m2['stage']) == 2 and float(m2['l_sr']) > 0
  assert not _same(g0, gen(state)['G']) and not _same(e1, gen(state)['E'])
  # The SR optimiser's first update is stage 2's first step.
  counts = [int(x) for x in jax.tree.leaves(state.method.opt['sr']) if np.ndim(x) == 0]
  assert counts and set(counts) == {1}


@pytest.mark.parametrize('variant', VARIANTS)
def test_seed_004_variants_take_finite_steps_and_export(variant, smoke_config):
  config = _config(smoke_config, variant, **{'dasr.encoder_steps': 1})
  method, state, step = start_training(config)
  for seed in (1, 2):  # stage 1 (where there is one), then stage 2
    state, metrics = step(state, training_batch(method, config, seed), {})
    assert np.isfinite(float(metrics['loss'])) and float(metrics['l_sr']) > 0
  assert int(state.step) == 2 and int(state.nonfinite[0]) == 0
  products = method.exports(state.method, state.ema)
  spec, variables = products['generator']
  assert spec.kwargs['blind'] == (variant in ('blind', 'oracle'))
  assert ('oracle' in products) == (variant == 'oracle')
  lr = np.full((1, 20, 20, 3), 0.5, np.float32)
  assert spec.build().apply(variables, lr).shape == (1, 80, 80, 3)


def test_four_devices_and_one_take_the_same_step(smoke_config):
  """The global batch's keys reach the queue in batch order and BatchNorm sees the global
  batch, so the data-parallel step is the single-device step."""
  assert jax.device_count() == 4
  # SGD: Adam would scale the rounding noise of zero gradients (a conv bias before BatchNorm has
  # one) up to the learning rate, and the two runs round differently.
  config = _config(smoke_config, **{'dasr.encoder_steps': 1, 'optim.encoder.kind': 'sgd',
                                    'optim.sr.kind': 'sgd'})
  results = []
  for devices in (jax.devices(), jax.devices()[:1]):
    method, state, step = start_training(config, devices)
    for seed in (1, 2):  # stage 1, then stage 2
      state, metrics = step(state, training_batch(method, config, seed), {})
    results.append((jax.device_get(state.method), float(metrics['loss'])))
  (s4, l4), (s1, l1) = results
  assert abs(l4 - l1) < 1e-4 * abs(l1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               (s4.params, s4.extra), (s1.params, s1.extra))


@pytest.mark.parametrize('field, value, message', [
    ('dasr.key_views', (0,), 'every query view needs a key view other than itself'),
    ('dasr.queue_size', 10, 'multiple of the batch of 4 tasks'),
    ('dasr.objective', 'simclr', 'one of'),
])
def test_bad_dasr_config_names_the_field(tmp_path, field, value, message, smoke_config):
  config = _config(smoke_config, **{field: value})
  with pytest.raises(config_lib.ConfigError, match=f'{field} = .*{message}'):
    train.train_and_evaluate(config, str(tmp_path))
