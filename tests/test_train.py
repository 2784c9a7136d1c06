"""The shared training loop: smoke run, exact resume, sharding, signals, kill -9, bad configs."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from condsr_jax import config as config_lib, models, train
from conftest import evaluate_command_psnr, start_training, training_batch

REPO = pathlib.Path(__file__).resolve().parent.parent
SMOKE = 'configs/edsr_bicubic_x4.py:smoke'


def checkpoint_params(workdir, step):
  path = pathlib.Path(workdir) / 'checkpoints' / str(step) / 'state'
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path)['method']['params']


def run_main(workdir, *flags, config=SMOKE, env=None, wait=True):
  cmd = [sys.executable, '-m', 'condsr_jax.main', f'--config={config}', f'--workdir={workdir}',
         f'--config.data.train={REPO}/data/demo/train', f'--config.eval.val={REPO}/data/demo/val',
         *flags]
  full_env = {**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


def test_smoke_run_checkpoints_evaluates_and_exports(tmp_path, smoke_config, capsys):
  config = smoke_config(**{'train.keep_checkpoints': 2})
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert {'val/psnr', 'val/ssim', 'val/psnr_bicubic'} <= set(summary.metrics)
  assert 'bicubic' in summary.reports[0]
  names = set(os.listdir(tmp_path))
  assert {'config.json', 'checkpoints', 'model.msgpack', 'best_model.msgpack', 'best.json',
          'metrics.jsonl', 'curves.png'} <= names
  assert any(n.startswith('events.out.tfevents') for n in names)
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()) == [4, 6]
  items = {n for n in os.listdir(tmp_path / 'checkpoints' / '6') if not n.startswith('_')}
  assert items - {'commit_success.txt'} == {'data_train', 'state'}
  spec, _, meta = models.load_model_file(tmp_path / 'model.msgpack')
  assert spec.arch == 'EDSR' and meta['step'] == 6 and meta['product'] == 'generator'
  # The run's last validation and `condsr-jax evaluate` on its export give the same number.
  assert evaluate_command_psnr(capsys, config, tmp_path) == f'{summary.metrics["val/psnr"]:.3f}'


def test_draws_validation_on_larger_crops_matches_evaluate(tmp_path, smoke_config, capsys):
  """The compact recipe validates on fixed draws of its own degradation on crops larger than
  its training canvas; `evaluate --grid draws` on the workdir reads that degradation back."""
  config = smoke_config('compact_x4', **{'eval.draw_size': 64})
  assert config.eval.grid == 'draws' and config.degradation.crop_pad < 64
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert evaluate_command_psnr(capsys, config, tmp_path) == f'{summary.metrics["val/psnr"]:.3f}'
  config.eval.draw_size = 30
  with pytest.raises(config_lib.ConfigError, match=r'eval.draw_size = 30: must be 0 or a '):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_resume_is_exact(tmp_path, smoke_config):
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  train.train_and_evaluate(smoke_config(**{'train.num_steps': 4}), str(straight))
  train.train_and_evaluate(smoke_config(**{'train.num_steps': 2}), str(split))
  train.train_and_evaluate(smoke_config(**{'train.num_steps': 4}), str(split))
  a, b = checkpoint_params(straight, 4), checkpoint_params(split, 4)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  ema_a = models.load_model_file(straight / 'model.msgpack')[1]
  ema_b = models.load_model_file(split / 'model.msgpack')[1]
  jax.tree.map(np.testing.assert_array_equal, ema_a, ema_b)


def test_sharded_step_equals_single_device_step(smoke_config):
  assert jax.device_count() == 4
  config = smoke_config()
  results = []
  for devices in (jax.devices(), jax.devices()[:1]):
    method, state, step = start_training(config, devices)
    batch = training_batch(method, config)
    for _ in range(2):
      state, metrics = step(state, batch, {})
    results.append((jax.device_get(state.method.params), float(metrics['loss'])))
  (p4, l4), (p1, l1) = results
  assert abs(l4 - l1) < 1e-6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p4, p1)


@pytest.mark.parametrize('recipe, field, value, message', [
    ('edsr_bicubic_x4', 'data.batch_size', 6, 'must be a positive multiple of the 4 devices'),
    ('edsr_bicubic_x4', 'data.train', '/no/such/folder', 'no such'),
    ('edsr_bicubic_x4', 'model.arch', 'RRDBNett', 'unknown'),
    ('edsr_bicubic_x4', 'degradation.gt_size', 30, 'multiple of the scale 4'),
    ('edsr_bicubic_x4', 'optim.generator.kind', 'adamx', 'one of'),
    ('edsr_bicubic_x4', 'eval.perceptual.dists', '/no/vgg16.pth,/no/weights.pt',
     'no such file .*vgg16-397923af.pth'),
    ('realesrgan_x4plus', 'loss.gan_type', 'wgan', 'one of'),
    ('realesrnet_x4plus', 'degradation.mode', 'per_batch', 'one of'),
    ('cmdsr_srresnet_x4', 'cmdsr.schedule', 'alternate', 'one of'),
    ('cmdsr_srresnet_x4', 'cmdsr.condition', 'oracl', 'one of'),
])
def test_bad_config_names_the_field(tmp_path, recipe, field, value, message, smoke_config):
  with pytest.raises(config_lib.ConfigError, match=f'config.{field}.* = .*{message}'):
    train.train_and_evaluate(smoke_config(recipe, **{field: value}), str(tmp_path))


def test_a_wrong_method_field_is_one_line_not_a_traceback(tmp_path):
  code, out = run_main(tmp_path, '--config.cmdsr.schedule=alternate',
                       config='configs/cmdsr_srresnet_x4.py:smoke')
  assert code == 2, out
  assert "error: config.cmdsr.schedule = 'alternate': one of ('alternating', 'joint')" in out
  assert 'Traceback' not in out


def test_perceptual_loss_without_vgg_weights_says_what_to_get(tmp_path, smoke_config):
  config = smoke_config('realesrgan_x4plus', **{'loss.allow_random_vgg': False})
  with pytest.raises(config_lib.ConfigError, match='vgg19-dcbb9e9d.pth'):
    train.train_and_evaluate(config, str(tmp_path))


def test_non_finite_updates_are_skipped_then_stop(tmp_path, smoke_config):
  train.train_and_evaluate(smoke_config(**{'train.num_steps': 4}), str(tmp_path))
  good = checkpoint_params(tmp_path, 4)
  # Resume with a learning rate that overflows float32: every update is non-finite.
  config = smoke_config(**{'optim.generator.lr': 1e39, 'train.max_consecutive_nonfinite': 2,
                           'train.num_steps': 20})
  with pytest.raises(train.TrainingStopped, match='2 consecutive steps had a non-finite'):
    train.train_and_evaluate(config, str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  assert steps[-1] == 4
  jax.tree.map(np.testing.assert_array_equal, checkpoint_params(tmp_path, 4), good)


def test_skip_bookkeeping():
  counts = np.zeros(2, np.int32)
  for ok in (True, False, False, True, False):
    counts = np.asarray(train.count_nonfinite(counts, np.bool_(ok)))
  assert counts.tolist() == [3, 1]


def _wait_for(proc, text, timeout=240):
  lines, t0 = [], time.time()
  while time.time() - t0 < timeout:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return ''.join(lines)
  raise AssertionError(f'never saw {text!r}:\n' + ''.join(lines[-30:]))


def test_sigterm_saves_then_resume_continues(tmp_path):
  proc = run_main(tmp_path, '--config.train.num_steps=100000', '--config.train.log_every=1',
                  '--config.train.checkpoint_every=1000', '--config.eval.every=0',
                  wait=False)
  _wait_for(proc, 'step 3/100000')
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, out  # stops `main ... && next` chains
  assert 'stopped: SIGTERM at step' in out
  steps = [int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()]
  assert len(steps) == 1 and 3 <= steps[0] < 1000
  code, out = run_main(tmp_path, f'--config.train.num_steps={steps[0] + 2}',
                       '--config.eval.every=0')
  assert code == 0, out
  assert f'training steps {steps[0]} -> {steps[0] + 2}' in out


def test_kill_9_resumes_from_last_complete_checkpoint(tmp_path):
  proc = run_main(tmp_path, '--config.train.num_steps=100000', '--config.train.log_every=1',
                  '--config.train.checkpoint_every=2', '--config.eval.every=0', wait=False)
  _wait_for(proc, 'step 7/100000')
  proc.kill()
  proc.wait()
  code, out = run_main(tmp_path, '--config.train.num_steps=10', '--config.eval.every=0')
  assert code == 0, out
  resumed = int(out.split('training steps ')[1].split(' ')[0])
  assert resumed >= 4 and resumed % 2 == 0


def test_checkpoint_from_4_devices_resumes_on_1(tmp_path, smoke_config):
  train.train_and_evaluate(smoke_config(**{'train.num_steps': 2}), str(tmp_path))
  code, out = run_main(tmp_path, '--config.train.num_steps=4', '--config.data.batch_size=4',
                       env={'JAX_NUM_CPU_DEVICES': '1'})
  assert code == 0, out
  assert '1 local / 1 global devices' in out and 'training steps 2 -> 4' in out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_on_localhost(tmp_path):
  port = _free_port()
  procs = [run_main(tmp_path, '--config.distributed.enabled=True',
                    f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                    '--config.distributed.num_processes=2',
                    f'--config.distributed.process_id={i}', '--config.eval.every=0',
                    env={'JAX_NUM_CPU_DEVICES': '2'}, wait=False) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  assert 'process 0/2, 2 local / 4 global devices' in outs[0]
  assert 'process 1/2, 2 local / 4 global devices' in outs[1]
  assert 'finished at step 6' in outs[1]
  assert (tmp_path / 'model.msgpack').exists()
  data_states = sorted(n for n in os.listdir(tmp_path / 'checkpoints' / '6' / 'data_train')
                       if n.endswith('.json'))
  assert data_states == ['process_0-of-2.json', 'process_1-of-2.json']


def test_compact_recipe_smoke_run_validates_on_y_against_bicubic_and_lanczos(tmp_path,
                                                                              smoke_config):
  summary = train.train_and_evaluate(smoke_config('compact_x4'), str(tmp_path))
  assert summary.metrics['val/psnr'] == summary.metrics['val/psnr_y']
  assert {'val/psnr_y_bicubic', 'val/psnr_y_lanczos', 'val/psnr_rgb'} <= set(summary.metrics)
  spec = models.load_model_file(tmp_path / 'model.msgpack')[0]
  assert spec.arch == 'SRVGGNetCompact' and spec.kwargs['skip'] == 'bicubic'
