"""LPIPS and DISTS against their reference packages (tests/fixtures/perceptual/lpips_dists.npz,
made by tests/fixtures/make_perceptual.py): the shipped learned parts with seeded random trunks
given as the torchvision and package files a user would name."""

import json
import pathlib

import jax
import numpy as np
import pytest
import safetensors.numpy

from condsr_jax import cli, evaluate, images, metrics, models, perceptual, train
from conftest import REPO, nhwc

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'perceptual' / 'lpips_dists.npz'


@pytest.fixture(scope='module')
def fixture():
  data = np.load(FIXTURE)
  return data, json.loads(str(data['meta']))


def draw_trunk(keys, seed: int) -> dict[str, np.ndarray]:
  """The fixture's trunk weights, by its `trunk_rule`."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in keys:
    x = rng.standard_normal(tuple(shape), dtype=np.float32)
    scale = np.sqrt(2.0 / np.prod(shape[1:])) if key.endswith('weight') else 0.1
    out[key] = (x * np.float32(scale)).astype(np.float32)
  return out


def weight_files(tmp_path, data, meta, metric: str) -> list[str]:
  """The two files a user names: a torchvision trunk and the package's learned part (stored as
  .safetensors: reading .pth files is tested with the converter)."""
  section = 'dists' if metric == 'dists' else metric
  trunk = draw_trunk(meta[section]['trunk_keys'], meta['seed'])
  trunk['classifier.0.weight'] = np.zeros((4, 4), np.float32)  # ignored, as in torchvision's
  learned = {k[len(section) + 1:]: data[k] for k in data.files if k.startswith(f'{section}/')}
  paths = [tmp_path / f'{metric}_trunk.safetensors', tmp_path / f'{metric}_learned.safetensors']
  safetensors.numpy.save_file(trunk, str(paths[0]))
  safetensors.numpy.save_file(learned, str(paths[1]))
  return [str(p) for p in paths]


def cases(data):
  return sorted({k.split('/')[1] for k in data.files if k.startswith('in/')})


@pytest.mark.parametrize('metric', ['lpips_alex', 'lpips_vgg', 'dists'])
def test_matches_the_reference_package(fixture, tmp_path, metric):
  data, meta = fixture
  m = perceptual.load(metric, weight_files(tmp_path, data, meta, metric))
  per_layer = jax.jit(lambda v, x, y: m.spec.build().apply(v, x, y, per_layer=True))
  for case in cases(data):
    x, y = nhwc(data[f'in/{case}/x']), nhwc(data[f'in/{case}/y'])
    ref = data[f'out/{metric}/{case}']
    np.testing.assert_allclose(m(x, y), ref, rtol=1e-4, atol=1e-6, err_msg=case)
    if metric.startswith('lpips'):
      _, layers = per_layer(m.variables, x, y)
      np.testing.assert_allclose(layers, data[f'out/{metric}/{case}/layers'], rtol=1e-4,
                                 atol=1e-7, err_msg=case)


def test_is_a_differentiable_loss(fixture, tmp_path):
  data, meta = fixture
  m = perceptual.load('lpips_alex', weight_files(tmp_path, data, meta, 'lpips_alex'))
  x, y = nhwc(data['in/square/x']), nhwc(data['in/square/y'])
  grad = jax.grad(lambda a: m.distance(a, y).sum())(x)
  assert grad.shape == x.shape and np.isfinite(grad).all() and np.abs(grad).max() > 0
  assert float(m.distance(x, x).max()) == pytest.approx(0.0, abs=1e-7)


def test_missing_weights_name_the_files_to_get(tmp_path, fixture):
  with pytest.raises(FileNotFoundError, match=r'alexnet-owt-7be5be79\.pth .*alex\.pth'):
    perceptual.load('lpips_alex', [str(tmp_path / 'nope.pth')])
  data, meta = fixture
  trunk_only = weight_files(tmp_path, data, meta, 'dists')[:1]
  with pytest.raises(ValueError, match=r'not the weights of dists.*weights\.pt'):
    perceptual.load('dists', trunk_only)
  alex_files = weight_files(tmp_path, data, meta, 'lpips_alex')
  with pytest.raises(ValueError, match='not the weights of lpips_vgg'):
    perceptual.load('lpips_vgg', alex_files)


def test_evaluate_prints_perceptual_metrics_next_to_the_baselines(fixture, tmp_path, capsys):
  data, meta = fixture
  spec = models.ModelSpec('SRVGGNetCompact', {'num_feat': 4, 'num_conv': 1, 'upscale': 4})
  models.save_model(tmp_path / 'tiny.msgpack', spec, spec.build().init(
      jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32)))
  files = weight_files(tmp_path, data, meta, 'lpips_alex')
  val = str(REPO / 'data' / 'demo' / 'val')
  assert cli.main(['evaluate', val, '-m', str(tmp_path / 'tiny.msgpack'), '--max-images', '1',
                   '--lpips-alex', *files, '--niqe', '--panels', str(tmp_path / 'panels'),
                   '--panel-size', '64']) == 0
  lines = capsys.readouterr().out.splitlines()[:-1]  # less the panels line
  assert lines[0].split() == ['image', 'PSNR', 'SSIM', 'PSNR-Y', 'SSIM-Y', 'LPIPS-alex', 'NIQE']
  bicubic_row = lines[2].split()
  assert bicubic_row[0] == 'bicubic' and len(lines) == 7  # SR, bicubic, lanczos; and the mean
  pair = evaluate.load_pairs(val, 4, max_images=1)[0]
  bicubic = images.from_float(evaluate.bicubic_upsample(pair.lq, 4))
  expected = perceptual.load('lpips_alex', files)(bicubic, images.from_float(pair.gt))[0]
  assert float(bicubic_row[5]) == pytest.approx(expected, abs=1e-4)
  assert float(bicubic_row[6]) == pytest.approx(metrics.niqe(bicubic, 4), abs=1e-4)
  panel = images.read_image(tmp_path / 'panels' / f'{pair.name}.png')
  assert panel.shape == (64, 4 * 64, 3)  # LR | bicubic | SR | HR, centre crops
  top, left = (pair.gt.shape[0] - 64) // 2 // 4 * 4, (pair.gt.shape[1] - 64) // 2 // 4 * 4
  hr = images.from_float(pair.gt[top:top + 64, left:left + 64])
  np.testing.assert_array_equal(panel[24:, 192:], hr[24:])  # below the label


def test_evaluate_names_the_weight_files_to_get(tmp_path, capsys):
  val = str(REPO / 'data' / 'demo' / 'val')
  code = cli.main(['evaluate', val, '-m', str(tmp_path), '--dists', str(tmp_path / 'x.pth')])
  assert code == 2
  assert 'vgg16-397923af.pth' in capsys.readouterr().err


def test_training_validation_reports_them(fixture, tmp_path, smoke_config):
  data, meta = fixture
  files = ','.join(weight_files(tmp_path, data, meta, 'lpips_alex'))
  config = smoke_config(**{'eval.perceptual.lpips_alex': files, 'eval.niqe': True,
                           'train.num_steps': 3})
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  for name in ('lpips_alex', 'niqe', 'psnr_y', 'ssim_rgb'):
    assert {f'val/{name}', f'val/{name}_bicubic', f'val/{name}_lanczos'} <= set(summary.metrics)
  assert 'LPIPS-alex' in summary.reports[0] and 'NIQE' in summary.reports[0]
