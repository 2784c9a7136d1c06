"""Real-ESRGAN's two stages at smoke size: ESRNet trains, validates and exports; the GAN stage
starts from the ESRNet workdir and trains its discriminator. (Resuming is the loop's, tested
for every method in test_train.py and the method tests.)"""

import numpy as np

from condsr_jax import models, train


def test_realesrnet_then_realesrgan(tmp_path, smoke_config):
  esrnet, esrgan = tmp_path / 'esrnet', tmp_path / 'esrgan'
  summary = train.train_and_evaluate(smoke_config('realesrnet_x4plus', **{'eval.every': 0}),
                                     str(esrnet))
  assert np.isfinite(summary.metrics['val/psnr']) and summary.metrics['val/psnr_bicubic'] > 0
  spec, stage1, meta = models.load_model_file(esrnet / 'model.msgpack')
  assert spec.arch == 'RRDBNet' and meta['step'] == 6
  config = smoke_config('realesrgan_x4plus', **{'init.generator': str(esrnet),
                                                'train.num_steps': 2, 'eval.every': 0})
  train.train_and_evaluate(config, str(esrgan))
  _, stage2, meta = models.load_model_file(esrgan / 'model.msgpack')
  assert meta['step'] == 2
  d_spec, _, d_meta = models.load_model_file(esrgan / 'discriminator.msgpack')
  assert d_spec.arch == 'UNetDiscriminatorSN' and d_meta['product'] == 'discriminator'
  # The GAN stage started from the ESRNet weights and moved away from them.
  a = np.asarray(stage1['params']['conv_first']['kernel'])
  b = np.asarray(stage2['params']['conv_first']['kernel'])
  assert 0 < np.abs(a - b).max() < 0.1 * np.abs(a).max()


def test_esrnet_on_paired_data_trains_against_the_read_gt(smoke_config):
  """Paired data brings no gt_usm: Real-ESRNet's model then trains against the plain GT (its
  USM target exists only for synthesised pairs); this used to be a KeyError when traced."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from condsr_jax import methods  # pylint: disable=g-import-not-at-top
  config = smoke_config('realesrnet_x4plus', **{'degradation.kind': 'paired'})
  assert config.loss.pixel_target == 'usm'
  method = methods.build(config)
  gt = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3), np.float32))
  np.testing.assert_array_equal(method.pixel_target({'gt': gt, 'lq': gt[:, ::4, ::4]}), gt)
