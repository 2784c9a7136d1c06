"""PDM-SR training: two unpaired folders, exact resume, both exports, the frozen-degradation
mode, the noise-collapse warning and the perceptual variant (VGG19 + HR PatchGAN)."""

import pathlib
import types

import jax
import numpy as np
import orbax.checkpoint as ocp

from condsr_jax import config as config_lib
from condsr_jax import images, models, train
from condsr_jax.degrade import kernels
from condsr_jax.methods import common, pdm
from conftest import REPO, start_training, stopped_at


def _real_lr_folder(path: pathlib.Path) -> pathlib.Path:
  """Three small 'real LR' images, unpaired with (and fewer than) the seven HR demo images."""
  path.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    images.write_image(path / f'lr{i}.png', rng.integers(0, 256, (20 + 2 * i, 24, 3), np.uint8))
  return path


def _method_state(workdir: pathlib.Path, step: int):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(workdir / 'checkpoints' / str(step) / 'state')['method']


def test_trains_on_two_folders_resumes_exactly_exports_and_freezes(tmp_path, smoke_config):
  real_lr = str(_real_lr_folder(tmp_path / 'real_lr'))
  straight, split, frozen = tmp_path / 'straight', tmp_path / 'split', tmp_path / 'frozen'
  summary = train.train_and_evaluate(smoke_config('pdm_sr_x4', **{'data.real_lr': real_lr}),
                                     str(straight))
  assert {'val/psnr', 'deg/kernel_width', 'deg/noise_std'} <= set(summary.metrics)
  # The step has host callbacks (the collapse warning), so no run reuses another's compiled
  # step: the split run resumes the straight run's step-4 checkpoint rather than training 0 -> 4.
  quiet = {'data.real_lr': real_lr, 'eval.val': ''}
  stopped_at(straight, 4, split)
  train.train_and_evaluate(smoke_config('pdm_sr_x4', **quiet), str(split))  # resumes 4 -> 6

  # One iterator state per stream; all parameters, the three optimisers and BatchNorm
  # statistics resume exactly.
  items = {p.name for p in (straight / 'checkpoints' / '6').iterdir()
           if not p.name.startswith('_')}
  assert items - {'commit_success.txt'} == {'data_hr', 'data_real_lr', 'state'}
  a, b = _method_state(straight, 6), _method_state(split, 6)
  assert set(a['opt']) == {'degradation', 'discriminator', 'sr'} and 'batch_stats' in a['extra']
  jax.tree.map(np.testing.assert_array_equal, a, b)

  # Both products load back and run.
  spec, variables, meta = models.load_model_file(straight / 'model.msgpack')
  assert meta['product'] == 'generator'
  assert spec.build().apply(variables, np.zeros((1, 10, 12, 3), np.float32)).shape == (
      1, 40, 48, 3)
  spec, deg, _ = models.load_model_file(straight / 'degradation.msgpack')
  assert spec.arch == 'DegModel' and set(deg) == {'params', 'batch_stats'}
  lr, kernel, noise = spec.build().apply(deg, np.full((2, 32, 32, 3), 0.5, np.float32),
                                         rngs={'latent': jax.random.key(0)})
  assert lr.shape == noise.shape == (2, 8, 8, 3) and kernel.shape == (2, 7, 7)
  np.testing.assert_allclose(np.sum(kernel, axis=(1, 2)), 1.0, rtol=1e-5)

  # SR on the frozen exported degradation model: it stays as loaded, the SR network trains.
  config = smoke_config('pdm_sr_x4', **{
      'eval.val': '', 'data.real_lr': '', 'train.num_steps': 2, 'pdm.train_degradation': False,
      'init.degradation': str(straight / 'degradation.msgpack')})
  train.train_and_evaluate(config, str(frozen))
  state = _method_state(frozen, 2)
  jax.tree.map(np.testing.assert_array_equal, state['params']['degradation'], deg['params'])
  jax.tree.map(np.testing.assert_array_equal, state['extra']['batch_stats'], deg['batch_stats'])
  assert not (frozen / 'checkpoints' / '2' / 'data_real_lr').exists()
  shown = pdm.DegradationSamples(32)({'degradation': (spec, deg)}).images
  assert shown['kernels'].shape == (4, 28, 28, 1) and shown['noise'].shape == (4, 8, 8, 3)


def test_kernel_width_is_sigma_of_a_gaussian():
  u = np.arange(21) - 10
  g = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * 1.7 ** 2))
  width = pdm.kernel_width(jax.numpy.asarray((g / g.sum())[None], np.float32))
  np.testing.assert_allclose(width, [1.7], rtol=1e-3)


def test_kernel_offset_is_the_shift_of_the_centre_of_mass():
  """What pdm.kernel_centre_weight penalises: a Gaussian moved 2 taps right and 1 up is offset
  by (2, -1) pixels; its width does not change."""
  u = np.arange(21) - 10
  g = np.exp(-((u[:, None] + 1) ** 2 + (u[None, :] - 2) ** 2) / (2 * 1.3 ** 2))
  kernel = jax.numpy.asarray((g / g.sum())[None], np.float32)
  np.testing.assert_allclose(np.ravel(kernels.offsets(kernel)), [2, -1], atol=1e-4)
  np.testing.assert_allclose(pdm.kernel_width(kernel), [1.3], rtol=1e-3)


def test_a_collapsed_noise_branch_is_warned_of_once(smoke_config, monkeypatch):
  warnings = []
  monkeypatch.setattr(common, 'logging',
                      types.SimpleNamespace(warning=lambda *a: warnings.append(a)))
  # A zero-initialised noise branch that does not train generates no noise at all.
  config = smoke_config('pdm_sr_x4', **{'pdm.train_degradation': False, 'data.real_lr': '',
                                        'pdm.collapse_warmup': 1})
  method, state, step = start_training(config)
  batch = {'hr': {'gt': np.random.default_rng(0).random((4, 32, 32, 3), np.float32)}}
  for _ in range(3):
    state, metrics = step(state, batch, {})
  jax.effects_barrier()
  assert float(metrics['noise_std']) == 0 and float(metrics['l_sr']) > 0
  assert len(warnings) == 1 and 'collapsed' in warnings[0][0] and warnings[0][1] == 1


def test_degradation_only_trains_the_degradation_model_alone(smoke_config):
  """The official deg/*.yml mode (train_sr False): no SR loss or validation, the SR network as
  initialised; the kernel-centring term is taken when its weight is set."""
  config = smoke_config('pdm_sr_x4', **{'pdm.train_sr': False, 'pdm.kernel_centre_weight': 1.0})
  method, state, step = start_training(config)
  rng = np.random.default_rng(0)
  batch = {'hr': {'gt': rng.random((4, 32, 32, 3), np.float32)},
           'real_lr': {'lq': rng.random((4, 8, 8, 3), np.float32)}}
  new, metrics = step(state, batch, {})
  assert 'l_sr' not in metrics and float(metrics['loss']) == float(metrics['l_deg'])
  assert 'l_kernel_centre' in metrics and np.isfinite(float(metrics['kernel_offset']))
  jax.tree.map(np.testing.assert_array_equal, new.method.params['sr'], state.method.params['sr'])
  assert set(method.evaluators()) == {'deg'}



def test_the_perceptual_variant_trains_four_networks_and_the_psnr_recipe_builds_two_fewer(
    smoke_config):
  psnr = pdm.PDMSRMethod(smoke_config('pdm_sr_x4'))
  shapes = jax.eval_shape(psnr.init_state, jax.random.key(0), {})
  assert psnr.vgg is None and psnr.constants() == {} and psnr.hr_disc is None
  assert set(shapes.params) == set(shapes.opt) == {'degradation', 'discriminator', 'sr'}

  path = str(REPO / 'configs' / 'pdm_sr_x4.py')
  config = config_lib.sibling_recipe(path, 'pdm_sr_x4').get_config('percep,smoke')
  assert config.model.arch == 'RRDBNet' and dict(config.loss.perceptual_layers) == {'conv5_4': 1}
  method, state, step = start_training(config)
  rng = np.random.default_rng(0)
  batch = {'hr': {'gt': rng.random((4, 32, 32, 3), np.float32)},
           'real_lr': {'lq': rng.random((4, 8, 8, 3), np.float32)}}
  new, metrics = step(state, batch, method.constants())
  assert set(new.method.opt) == {'degradation', 'discriminator', 'sr', 'hr_discriminator'}
  assert float(metrics['skipped']) == 0
  for name in ('l_pix', 'l_percep', 'l_g_gan', 'l_hr_d', 'l_lr_adv', 'l_d'):
    assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name
  for name, before in state.method.params.items():  # all four optimisers stepped
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, new.method.params[name])
    assert any(jax.tree.leaves(changed)), name
  products = method.exports(new.method, new.ema)
  assert products['hr_discriminator'].spec.arch == 'PatchGANDiscriminator'
