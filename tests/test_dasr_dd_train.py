"""DASR-Wei stages 2 and 3: domain-distance maps against the official back-projection loop, the
SRN method (train, exact resume, exports, the map weighting), and the `adapt` chain with the DSN
(one channel, resumed at the stage that failed) and with PDM-SR, ending in an upscaled image."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import adapt, cli, images, models, train
from condsr_jax.methods import common
from condsr_jax.nn import dasr_wei
from conftest import start_training, stopped_at


def official_domain_distance(scores: np.ndarray, size: tuple[int, int], convnet) -> np.ndarray:
  """The official `receptive_cal.py` (`outFromIn`, `weights_matrix`, `getWeights`) on NCHW
  scores, transcribed loop for loop."""
  def out_from_in(conv, layer):
    n_in, j_in, r_in, start_in = layer
    k, s, p = conv
    n_out = math.floor((n_in - k + 2 * p) / s) + 1
    actual_p = (n_out - 1) * s - n_in + k
    p_left = math.floor(actual_p / 2)
    return n_out, j_in * s, r_in + (k - 1) * j_in, start_in + ((k - 1) / 2 - p_left) * j_in

  def geometry(n):
    layer = [n, 1, 1, 0.5]
    for conv in convnet:
      layer = out_from_in(conv, layer)
    return layer

  (n_h, jump, rf, start), (n_w, *_) = geometry(size[0]), geometry(size[1])

  def weights_matrix(patch):
    wm = np.zeros(scores.shape[:2] + size)
    for i in range(n_h):
      for j in range(n_w):
        hf, ht = int(max(0, start + i * jump - rf // 2)), int(start + i * jump + rf - rf // 2)
        wf, wt = int(max(0, start + j * jump - rf // 2)), int(start + j * jump + rf - rf // 2)
        wm[:, :, hf:ht, wf:wt] += patch[:, :, i, j][..., None, None]
    return wm
  return weights_matrix(scores) / weights_matrix(np.ones_like(scores))


@pytest.mark.parametrize('convnet, size', [
    (dasr_wei.FSD_REFERENCE_LAYERS, (20, 13)),  # the official FSD set-up, RF 17
    (dasr_wei.FSD_LAYERS, (9, 30)),  # the network's own, RF 13
    (((4, 2, 1), (4, 2, 1), (4, 1, 1), (4, 1, 1)), (40, 36)),  # the official nld_s2 strides
])
def test_domain_distance_maps_match_the_official_back_projection(convnet, size):
  n_h = dasr_wei.receptive_windows(size[0], convnet).shape[0]
  n_w = dasr_wei.receptive_windows(size[1], convnet).shape[0]
  scores = np.random.default_rng(0).random((2, 1, n_h, n_w))
  ours = dasr_wei.domain_distance_map(jnp.asarray(scores.transpose(0, 2, 3, 1)), convnet, size)
  np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2),
                             official_domain_distance(scores, size, convnet), atol=1e-6)


def _method_state(workdir: pathlib.Path, step: int):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(workdir / 'checkpoints' / str(step) / 'state')['method']


def test_srn_trains_resumes_exactly_and_exports(tmp_path, smoke_config):
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  summary = train.train_and_evaluate(smoke_config('dasr_dd_x4', **{'eval.max_images': 1}),
                                     str(straight))
  assert np.isfinite(summary.metrics['val/psnr'])
  stopped_at(straight, 4, split)  # a run stopped at step 4 ...
  train.train_and_evaluate(smoke_config('dasr_dd_x4', **{'eval.val': ''}), str(split))  # -> 6
  items = {p.name for p in (straight / 'checkpoints' / '6').iterdir()
           if not p.name.startswith('_')}
  assert items - {'commit_success.txt'} == {'data_train', 'data_real_lr', 'data_hr', 'state'}
  a, b = _method_state(straight, 6), _method_state(split, 6)
  assert set(a['params']) == {'generator', 'discriminator'}
  jax.tree.map(np.testing.assert_array_equal, a, b)
  spec, variables, _ = models.load_model_file(straight / 'model.msgpack')
  assert spec.arch == 'RRDBNet'
  assert spec.build().apply(variables, np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 32, 32, 3)
  spec, _, _ = models.load_model_file(straight / 'discriminator.msgpack')
  assert spec.arch == 'NLayerPatchGAN' and spec.kwargs['in_channels'] == 9


def test_the_pixel_loss_is_weighted_by_the_upsampled_map(smoke_config, tmp_path):
  config = smoke_config('dasr_dd_x4', **{'dasr_dd.gan_weight': 0.0, 'eval.val': ''})
  config.degradation = common.paired_config(32)  # generated pairs, with their maps
  config.dasr_dd.domain_distance = True
  method, state, step = start_training(config)
  rng = np.random.default_rng(0)
  gt, lq = rng.random((4, 32, 32, 3), np.float32), rng.random((4, 8, 8, 3), np.float32)
  metrics = {}
  for weight in (1.0, 0.0, 0.25):
    batch = {'train': {'gt': gt, 'lq': lq, 'dist': np.full((4, 8, 8, 3), weight, np.float32)}}
    metrics[weight] = float(step(state, batch, method.constants())[1]['l_pix'])
  assert metrics[0.0] == 0 and metrics[1.0] > 0
  np.testing.assert_allclose(metrics[0.25], metrics[1.0] / 4, rtol=1e-5)


def _folder(path: pathlib.Path, count: int, side: int, channels: int, seed: int) -> str:
  path.mkdir()
  rng = np.random.default_rng(seed)
  for i in range(count):
    shape = (side, side + 4 * i) + ((channels,) if channels == 3 else ())
    images.write_image(path / f'im{i}.png', rng.integers(0, 256, shape, np.uint8))
  return str(path)


def _adapt(capsys, *argv: str) -> tuple[int, str, str]:
  code = cli.main(['adapt', '--size', 'smoke', *argv])
  return code, *capsys.readouterr()


def test_adapt_chain_with_the_dsn_resumes_where_it_failed_and_upscales(tmp_path, capsys):
  hr = _folder(tmp_path / 'hr', 3, 40, 1, 0)
  real_lr = _folder(tmp_path / 'real_lr', 2, 12, 1, 1)
  w = str(tmp_path / 'w')
  short = ['--set', 'degradation.train.num_steps=2', '--set', 'sr.train.num_steps=2']
  base = ['--hr', hr, '--real-lr', real_lr, '--workdir', w, '--channels', '1', *short]
  code, _, err = _adapt(capsys, *base, '--set', 'sr.dasr_dd.gan_type=bogus')  # fails at stage 3
  assert code == 2 and 'dasr_dd.gan_type' in err
  generated = pathlib.Path(w) / 'generated'
  for name in ('gt', 'lq', 'dist'):
    assert len(list((generated / name).iterdir())) == 3, name
  dist = images.read_image(generated / 'dist' / 'im1.png')
  lq = images.read_image(generated / 'lq' / 'im1.png')
  assert dist.dtype == np.uint16 and dist.shape == lq.shape == (10, 11, 1)
  stamp = (generated / 'dist' / 'im1.png').stat().st_mtime_ns

  code, out, err = _adapt(capsys, *base)
  assert code == 0, err
  assert 'is done' in out and (generated / 'dist' / 'im1.png').stat().st_mtime_ns == stamp
  model = pathlib.Path(w) / 'model.msgpack'
  assert models.load_model_file(model)[0].arch == 'RRDBNet'
  assert cli.main(['upscale', str(tmp_path / 'real_lr'), '-m', str(model),
                   '-o', str(tmp_path / 'out')]) == 0
  out_img = images.read_image(tmp_path / 'out' / 'im0_out.png')
  assert out_img.shape[:2] == (48, 48)


def test_adapt_chain_with_pdm_trains_sr_on_the_learned_degradation(tmp_path, capsys):
  hr = _folder(tmp_path / 'hr', 2, 48, 3, 0)
  real_lr = _folder(tmp_path / 'real_lr', 2, 16, 3, 1)
  w = tmp_path / 'w'
  code, out, err = _adapt(capsys, '--hr', hr, '--real-lr', real_lr, '--workdir', str(w),
                     '--degradation', 'pdm', '--set', 'degradation.train.num_steps=2',
                     '--set', 'sr.train.num_steps=2')
  assert code == 0, err
  assert not (w / 'generated').exists()
  config = (w / 'sr' / 'config.json').read_text()
  assert '"learned"' in config and 'degradation.msgpack' in config
  assert models.load_model_file(w / 'model.msgpack')[0].arch == 'RRDBNet'
