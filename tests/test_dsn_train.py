"""DSN training (DASR-Wei stage 1): two unpaired folders, exact resume, both exports, a
one-channel run, the collapse and colour-shift warnings, and missing perceptual weight files."""

import pathlib
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import config as config_lib
from condsr_jax import images, models, train
from condsr_jax.methods import common, dsn
from conftest import start_training, stopped_at


def _real_lr_folder(path: pathlib.Path, channels: int = 3) -> pathlib.Path:
  """Three small 'real LR' images, unpaired with (and fewer than) the seven HR demo images."""
  path.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    shape = (20 + 2 * i, 24) + ((3,) if channels == 3 else ())
    images.write_image(path / f'lr{i}.png', rng.integers(0, 256, shape, np.uint8))
  return path


def _method_state(workdir: pathlib.Path, step: int):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(workdir / 'checkpoints' / str(step) / 'state')['method']


def test_trains_on_two_folders_resumes_exactly_and_exports_both_networks(tmp_path,
                                                                          smoke_config):
  real_lr = str(_real_lr_folder(tmp_path / 'real_lr'))
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  summary = train.train_and_evaluate(smoke_config('dsn_x4', **{'data.real_lr': real_lr}),
                                     str(straight))
  assert {'val/bicubic_distance', 'val/color_shift'} <= set(summary.metrics)
  # The step has host callbacks (the collapse and colour-shift warnings), so no run reuses
  # another's compiled step: the split run resumes the straight run's step-4 checkpoint rather
  # than training 0 -> 4.
  quiet = {'data.real_lr': real_lr, 'eval.val': ''}
  stopped_at(straight, 4, split)
  train.train_and_evaluate(smoke_config('dsn_x4', **quiet), str(split))  # resumes 4 -> 6

  items = {p.name for p in (straight / 'checkpoints' / '6').iterdir()
           if not p.name.startswith('_')}
  assert items - {'commit_success.txt'} == {'data_hr', 'data_real_lr', 'state'}
  a, b = _method_state(straight, 6), _method_state(split, 6)
  assert set(a['params']) == set(a['opt']) == {'generator', 'discriminator'}
  jax.tree.map(np.testing.assert_array_equal, a, b)

  spec, variables, meta = models.load_model_file(straight / 'model.msgpack')
  assert spec.arch == 'DSNGenerator' and meta['product'] == 'generator'
  lr = spec.build().apply(variables, np.full((1, 32, 32, 3), 0.5, np.float32))
  assert lr.shape == (1, 8, 8, 3) and np.all((lr > 0) & (lr < 1))
  spec, variables, meta = models.load_model_file(straight / 'discriminator.msgpack')
  assert spec.arch == 'FSDiscriminator' and spec.kwargs['filter'] == 'wavelet_cat'
  assert spec.build().apply(variables, lr).shape == (1, 4, 4, 1)  # the wavelet bands: half size


def test_a_one_channel_run_needs_only_the_channel_count(tmp_path, smoke_config):
  real_lr = str(_real_lr_folder(tmp_path / 'real_lr', channels=1))
  config = smoke_config('dsn_x4', **{'data.real_lr': real_lr, 'data.channels': 1,
                                     'train.num_steps': 2, 'eval.every': 2})
  summary = train.train_and_evaluate(config, str(tmp_path / 'grey'))
  assert np.isfinite(summary.metrics['val/bicubic_distance'])
  spec, variables, _ = models.load_model_file(tmp_path / 'grey' / 'model.msgpack')
  assert spec.build().apply(variables, np.zeros((1, 32, 32, 1), np.float32)).shape == (
      1, 8, 8, 1)


def test_a_collapsed_or_colour_shifted_dsn_is_warned_of_once(smoke_config, monkeypatch):
  warnings = []
  monkeypatch.setattr(common, 'logging',
                      types.SimpleNamespace(warning=lambda *a: warnings.append(a)))
  # Limits no generator meets: every step from the warm-up on is collapsed and colour-shifted
  # (with the RaGAN losses, which the training runs do not take).
  config = smoke_config('dsn_x4', **{'dsn.collapse_warmup': 1, 'dsn.collapse_distance': 2.0,
                                     'dsn.color_shift_limit': 0.0, 'dsn.gan_type': 'ragan'})
  method, state, step = start_training(config)
  rng = np.random.default_rng(0)
  batch = {'hr': {'gt': rng.random((4, 32, 32, 3), np.float32)},
           'real_lr': {'lq': rng.random((4, 8, 8, 3), np.float32)}}
  for _ in range(3):
    state, metrics = step(state, batch, method.constants())
  jax.effects_barrier()
  assert float(metrics['skipped']) == 0
  for name in ('l_color', 'l_percep', 'l_texture', 'l_d', 'bicubic_distance', 'color_shift'):
    assert np.isfinite(float(metrics[name])), name
  assert len(warnings) == 2 and all(w[1] == 1 for w in warnings)  # once each, from step 1
  assert {'collapsed to bicubic', 'colour shift'} == {
      phrase for w in warnings for phrase in ('collapsed to bicubic', 'colour shift')
      if phrase in w[0]}


def test_the_colour_loss_low_pass_follows_the_discriminator_filter():
  x = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
  for kind, shape in (('gau', 12), ('avg_pool', 12), ('wavelet_cat', 8), ('wavelet_sum', 8)):
    assert dsn.low_pass(kind, 5)(x).shape == (2, shape, shape, 3), kind
  np.testing.assert_allclose(dsn.low_pass('wavelet_sum', 5)(x),  # half LL = the 2 x 2 block mean
                             x.reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4)), rtol=1e-5)


@pytest.mark.parametrize('overrides, field', [
    ({'dsn.perceptual': 'lpips_alex', 'dsn.lpips_weights': '/nowhere/alex.pth'},
     'dsn.lpips_weights'),
    ({'dsn.perceptual': 'lpips_vgg'}, 'dsn.lpips_weights'),
    ({'dsn.vgg.allow_random_vgg': False, 'dsn.vgg.vgg_weights': '/nowhere/vgg19.pth'},
     'dsn.vgg.vgg_weights'),
])
def test_missing_perceptual_weights_stop_at_validation(smoke_config, overrides, field):
  config = smoke_config('dsn_x4', **overrides)
  with pytest.raises(config_lib.ConfigError, match=field) as e:
    config_lib.validate(config)
  assert ('/nowhere/' in str(e.value)) == ('/nowhere/' in str(overrides))
  config_lib.validate(smoke_config('dsn_x4', **overrides, **{'dsn.perceptual_weight': 0.0}))
