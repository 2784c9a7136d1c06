"""The learned degradation kind: LR synthesised by a DegModel file, per-sample codes, per-task
codes in task batches, config errors, and a Real-ESRNet run that trains on it."""

import argparse

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from PIL import Image

from condsr_jax import config as config_lib
from condsr_jax import images, models, train
from condsr_jax.degrade import gallery, learned, noise, pipelines, tasks
from conftest import REPO

SPEC = models.ModelSpec('DegModel', dict(scale=4, kernel_nf=8, kernel_nb=1, ksize=11,
                                         noise_nf=8, noise_nb=1))


def _variables(spec: models.ModelSpec) -> dict:
  """Initial variables moved off the zero-init start, with non-trivial running statistics (so
  kernels depend on their code and BatchNorm's eval mode shows)."""
  module = spec.build()
  variables = module.init({'params': jax.random.key(0), 'latent': jax.random.key(1)},
                          *models.example_inputs(module))
  leaves, tree = jax.tree.flatten_with_path(variables)
  keys = jax.random.split(jax.random.key(2), len(leaves))

  def move(path, x, key):
    step = 0.3 * jax.random.normal(key, x.shape)
    return 0.5 + jnp.abs(step) if jax.tree_util.keystr(path).endswith("['var']") else x + step

  return jax.tree.unflatten(tree, [move(p, x, k) for (p, x), k in zip(leaves, keys)])


@pytest.fixture
def model_file(tmp_path):
  path = tmp_path / 'deg.msgpack'
  models.save_model(path, SPEC, _variables(SPEC))
  return str(path)


def _config(path: str, gt_size: int = 32, crop_pad: int = 48) -> ml_collections.ConfigDict:
  c = pipelines.default_config('learned', 4)
  c.model, c.gt_size, c.crop_pad = path, gt_size, crop_pad
  return c


def _batch(n: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {'gt': rng.random((n, size, size, 3), np.float32),
          'crop/top': np.array([0, 4, 2][:n], np.int32), 'crop/left': np.array([3, 0, 1][:n],
                                                                                np.int32)}


def test_lr_is_the_model_under_per_sample_codes(model_file):
  degradation = pipelines.make(_config(model_file), 4)
  batch, key = _batch(3, 48), jax.random.key(7)
  out = jax.jit(degradation)(batch, key)
  gt = np.stack([batch['gt'][i, 4 * t:4 * t + 32, 4 * l:4 * l + 32]
                 for i, (t, l) in enumerate(zip(batch['crop/top'], batch['crop/left']))])
  np.testing.assert_array_equal(out['gt'], gt)
  k_kernel, k_noise = jax.random.split(key)
  zk, zn = (jax.random.normal(k, (3, 1, 1, 3)) for k in (k_kernel, k_noise))
  spec, variables, _ = models.load_model_file(model_file)
  lr, kernel, noise_map = spec.build().apply(variables, gt, zk, zn, train=False)
  np.testing.assert_allclose(out['lq'], noise.quantize(lr), atol=1e-6)
  np.testing.assert_allclose(out['record']['kernel'], kernel, rtol=1e-5, atol=1e-7)
  assert out['lq'].shape == (3, 8, 8, 3) and out['gt_usm'].shape == gt.shape
  # Each sample has its own kernel and noise; their summaries are recorded per sample.
  widths = np.asarray(out['record']['kernel/sigma_x'])
  assert widths.shape == (3,) and np.all(widths > 0) and np.ptp(widths) > 1e-3
  assert np.abs(np.diff(np.asarray(kernel), axis=0)).max() > 1e-4
  rms = np.sqrt(np.mean(np.square(noise_map), (1, 2, 3))) * 255
  np.testing.assert_allclose(out['record']['noise/sigma'], rms, rtol=1e-5)
  # The same key gives the same LR; another key other codes.
  np.testing.assert_array_equal(jax.jit(degradation)(batch, key)['lq'], out['lq'])
  assert np.abs(jax.jit(degradation)(batch, jax.random.key(8))['lq'] - out['lq']).max() > 0


def test_fixed_draws_are_the_same_for_every_image(model_file):
  degradation = pipelines.make(_config(model_file, crop_pad=32), 4)
  hr = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
  lq = pipelines.fixed_draws(degradation, hr, draws=2, seed=3)
  assert lq.shape == (2, 2, 8, 8, 3)
  np.testing.assert_array_equal(pipelines.fixed_draws(degradation, hr[1:], 2, 3)[0], lq[1])
  # Draw j applies one kernel code to every image: the same image gives the same LR.
  same = pipelines.fixed_draws(degradation, np.stack([hr[0], hr[0]]), 2, 3)
  np.testing.assert_array_equal(same[0], same[1])
  assert np.abs(lq[0, 0] - lq[0, 1]).max() > 0


def test_task_patches_share_their_task_codes(model_file):
  config = tasks.default_config('learned', 4, 'dasr')
  config.update(model=model_file, gt_size=32, crop_pad=48)
  config.tasks.crops, config.tasks.different_images = ((8, 2),), True
  degradation = tasks.TaskDegradation(config, 4)
  assert not degradation.patchwise
  sampler, rng = degradation.param_sampler(), np.random.default_rng(0)
  elems = [sampler(rng) for _ in range(3)]
  batch = {k: np.stack([e[k] for e in elems]) for k in elems[0]}
  batch['gt'] = rng.random((3, 48, 48, 3), np.float32)
  key = jax.random.key(5)
  out = jax.jit(degradation)(batch, key)
  record = out['record']
  assert record['kernel'].shape == (3, 11, 11)  # one kernel per task
  # Patch 1 of task t is cut from image t + 1, degraded under task t's codes.
  base = degradation.base
  for t in range(3):
    codes = {k: record[k][t:t + 1] for k in learned.CODES}
    source = int(record['patches0/image'][t, 1])
    assert source == (t + 1) % 3
    lq, _ = base.synthesize(jnp.asarray(batch['gt'][source:source + 1]), codes)
    top, left = (int(record[f'patches0/{a}'][t, 1]) for a in ('top', 'left'))
    np.testing.assert_allclose(out['lq'][0][t, 1], lq[0, top:top + 8, left:left + 8],
                               atol=1e-6)
  assert len(out['gt_usm']) == 1 and out['gt_usm'][0].shape == (3, 2, 32, 32, 3)


@pytest.mark.parametrize('case, message', [
    ('missing', 'no such file'),
    ('garbage', 'unreadable as a model file'),
    ('arch', 'a EDSR model file, not a DegModel'),
    ('scale', 'a x4 degradation model; the run is x2'),
])
def test_bad_model_names_the_field(case, message, model_file, tmp_path):
  scale, path = 4, model_file
  if case == 'missing':
    path = str(tmp_path / 'nowhere.msgpack')
  elif case == 'garbage':
    path = str(tmp_path / 'garbage.msgpack')
    (tmp_path / 'garbage.msgpack').write_bytes(b'not a model')
  elif case == 'arch':
    path = str(tmp_path / 'edsr.msgpack')
    spec = models.ModelSpec('EDSR', {'num_feat': 4, 'num_block': 1, 'upscale': 4})
    module = spec.build()
    models.save_model(path, spec, module.init(jax.random.key(0), *models.example_inputs(module)))
  else:
    scale = 2
  config = _config(path, 32, 32)
  with pytest.raises(config_lib.ConfigError, match='degradation.model') as e:
    pipelines.validate(config, scale)
  assert message in str(e.value) and path in str(e.value)


def test_realesrnet_trains_and_resumes_on_a_learned_model(model_file, tmp_path, smoke_config):
  degradation = _config(model_file, 32, 32)
  overrides = {'eval.max_images': 1, 'eval.every': 2, 'train.log_every': 2}
  workdir = str(tmp_path / 'esrnet')
  config = smoke_config('realesrnet_x4plus', **overrides, **{'train.num_steps': 2})
  config.degradation = degradation
  train.train_and_evaluate(config, workdir)
  config = smoke_config('realesrnet_x4plus', **overrides, **{'train.num_steps': 4})
  config.degradation = degradation
  summary = train.train_and_evaluate(config, workdir)  # resumes 2 -> 4
  assert np.isfinite(summary.metrics['val/psnr'])
  _, _, meta = models.load_model_file(tmp_path / 'esrnet' / 'model.msgpack')
  assert meta['step'] == 4


@pytest.mark.parametrize('recipe', ['realesrnet_x4plus', 'edsr_bicubic_x4', 'dasr_x4'])
def test_learned_recipe_wraps_any_recipe(recipe, model_file):
  path = str(REPO / 'configs' / 'learned_degradation.py')
  config = config_lib.sibling_recipe(path, 'learned_degradation').get_config(f'{recipe},smoke')
  base = config_lib.sibling_recipe(path, recipe).get_config('smoke')
  assert config.degradation.kind == 'learned'
  assert (config.degradation.gt_size, config.degradation.crop_pad) == (
      base.degradation.gt_size, base.degradation.crop_pad)
  assert ('tasks' in config.degradation) == ('tasks' in base.degradation)
  with pytest.raises(config_lib.ConfigError, match='degradation.model'):
    config_lib.validate(config)
  config.degradation.model = model_file
  config_lib.validate(config)


def test_gallery_shows_a_learned_model(model_file, tmp_path, capsys):
  src, out = tmp_path / 'photo.png', tmp_path / 'grid.png'
  images.write_image(src, images.from_float(np.random.default_rng(0).random((88, 96, 3))))
  parser = argparse.ArgumentParser()
  gallery.add_cli_arguments(parser)
  assert gallery.cli_main(parser.parse_args(
      [str(src), '-o', str(out), '--config', 'learned', '--model', model_file, '-n', '2'])) == 0
  assert np.asarray(Image.open(out)).shape[1] == 2 * (22 * 11 + 4) + 4  # 88 // 4 LR, 11x
  lq, captions = gallery.synthesize(images.to_float(images.read_image(src)), 'learned', 2, 4, 0,
                                    model_file)
  assert lq.shape == (2, 22, 22, 3) and captions[0][0] != captions[1][0]  # one kernel each
  assert captions[0][0].startswith('kernel s=') and captions[0][1].startswith('noise ')
  assert gallery.cli_main(parser.parse_args([str(src), '-o', str(out), '--config',
                                             'learned'])) == 2
  assert '--model goes with --config learned' in capsys.readouterr().err
