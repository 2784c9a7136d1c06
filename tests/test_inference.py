"""Upscaling: PyTorch-checkpoint parity end to end, tiles vs whole image, formats, bad inputs."""

import numpy as np
import pytest

import condsr_jax
from condsr_jax import cli, images, metrics, models


@pytest.fixture(scope='module')
def torch_dir(request):
  return request.config.rootpath / 'tests' / 'fixtures' / 'torch_rrdbnet'


@pytest.fixture(scope='module')
def upscaler(torch_dir):
  return condsr_jax.load_model(torch_dir / 'rrdbnet_x4_nf16_nb2.pth')


def test_pytorch_checkpoint_upscales_png_like_pytorch(torch_dir, tmp_path):
  """A .pth written by PyTorch, converted on the fly, reproduces PyTorch's PNG within 1 level."""
  out = tmp_path / 'out'
  assert cli.main(['upscale', str(torch_dir / 'input.png'), '-m',
                   str(torch_dir / 'rrdbnet_x4_nf16_nb2.pth'), '-o', str(out)]) == 0
  ours = images.read_image(out / 'input_out.png').astype(int)
  ref = images.read_image(torch_dir / 'output_pytorch.png').astype(int)
  assert ours.shape == ref.shape == (192, 176, 3)
  assert np.abs(ours - ref).max() <= 1
  assert (ours != ref).mean() < 1e-3


def test_exported_model_file_gives_the_same_output(torch_dir, tmp_path, upscaler):
  dst = tmp_path / 'model.msgpack'
  assert cli.main(['convert', str(torch_dir / 'rrdbnet_x4_nf16_nb2.pth'), str(dst)]) == 0
  lr = images.read_image(torch_dir / 'input.png')
  np.testing.assert_array_equal(condsr_jax.load_model(dst).upscale(lr), upscaler.upscale(lr))


def test_tiled_output_agrees_with_whole_image(upscaler, capsys):
  img = images.read_image(images.list_images('data/demo/val')[1])[:100, :92]
  whole = upscaler.upscale_float(images.to_float(img))
  tiled = upscaler.upscale_float(images.to_float(img), tile=40, tile_overlap=12)
  assert upscaler.num_tiles(100, 92, 40, 12) == 12
  to255 = lambda x: np.clip(x, 0, 1) * 255.0
  db = metrics.psnr(to255(tiled), to255(whole), crop_border=0)
  with capsys.disabled():
    print(f'\nPSNR tiled (40 px, overlap 12, blended) vs whole image: {db:.2f} dB')
  assert db > 45.0


def test_gray_rgba_and_16bit_keep_their_format(upscaler, tmp_path):
  rng = np.random.default_rng(0)
  base = images.read_image('tests/fixtures/torch_rrdbnet/input.png')[:20, :24]
  gray = base[:, :, :1]
  rgba = np.concatenate([base, rng.integers(0, 256, (20, 24, 1), np.uint8)], axis=2)
  deep = (base.astype(np.uint16) * 257 + rng.integers(0, 257, base.shape)).astype(np.uint16)
  for name, img in [('gray.png', gray[:, :, 0]), ('rgba.png', rgba), ('deep.png', deep)]:
    images.write_image(tmp_path / 'in' / name, img)
  assert cli.main(['upscale', str(tmp_path / 'in'), '-m',
                   'tests/fixtures/torch_rrdbnet/rrdbnet_x4_nf16_nb2.pth', '-o',
                   str(tmp_path / 'out'), '--suffix', '']) == 0
  g = images.read_image(tmp_path / 'out' / 'gray.png')
  a = images.read_image(tmp_path / 'out' / 'rgba.png')
  d = images.read_image(tmp_path / 'out' / 'deep.png')
  assert g.shape == (80, 96, 1) and g.dtype == np.uint8
  assert a.shape == (80, 96, 4) and a.dtype == np.uint8
  assert d.shape == (80, 96, 3) and d.dtype == np.uint16
  assert len(np.unique(d)) > 256  # really 16-bit, not 8-bit scaled up
  np.testing.assert_allclose(d / 65535.0, upscaler.upscale(deep) / 65535.0, atol=1 / 65535)


def test_outscale_and_image_smaller_than_tile(upscaler):
  img = images.read_image('tests/fixtures/torch_rrdbnet/input.png')[:10, :30]
  out = upscaler.upscale(img, tile=16, tile_overlap=4, outscale=2.5)
  assert out.shape == (25, 75, 3)
  small = upscaler.upscale(img[:8, :8], tile=16)
  np.testing.assert_array_equal(small, upscaler.upscale(img[:8, :8]))


def test_bfloat16_is_close_to_float32(torch_dir, upscaler):
  lr = images.read_image(torch_dir / 'input.png')
  bf16 = condsr_jax.load_model(torch_dir / 'rrdbnet_x4_nf16_nb2.pth', dtype='bfloat16')
  assert metrics.psnr(bf16.upscale(lr), upscaler.upscale(lr), crop_border=0) > 30.0


def test_bad_files_are_reported_and_the_rest_processed(tmp_path, capsys):
  src = tmp_path / 'in put'
  src.mkdir()
  images.write_image(src / 'good one.png', np.full((8, 8, 3), 128, np.uint8))
  (src / 'empty.png').write_bytes(b'')
  (src / 'text.png').write_text('not an image')
  good = (tmp_path / 'x.png')
  images.write_image(good, np.zeros((8, 8, 3), np.uint8))
  (src / 'truncated.png').write_bytes(good.read_bytes()[:40])
  code = cli.main(['upscale', str(src), str(tmp_path / 'missing.png'), '-m',
                   'tests/fixtures/torch_rrdbnet/rrdbnet_x4_nf16_nb2.pth', '-o',
                   str(tmp_path / 'out')])
  err = capsys.readouterr().err
  assert code == 1
  assert (tmp_path / 'out' / 'good one_out.png').exists()
  for name in ('empty.png', 'text.png', 'truncated.png', 'missing.png'):
    assert name in err


def test_model_spec_round_trip(tmp_path, upscaler):
  models.save_model(tmp_path / 'm.msgpack', upscaler.spec, upscaler.variables, {'step': 3})
  spec, variables, meta = models.load_model_file(tmp_path / 'm.msgpack')
  assert spec == upscaler.spec and meta == {'step': 3}


def test_conditional_model_uses_one_condition_per_image(tmp_path):
  fixture = 'tests/fixtures/reference/methods/cmdsr.npz'
  model = tmp_path / 'cmdsr.msgpack'
  assert cli.main(['convert', fixture, str(model)]) == 0
  up = condsr_jax.load_model(model)
  assert up.conditional and up.module.image_range == 255.0
  img = images.to_float(images.read_image('tests/fixtures/torch_rrdbnet/input.png'))
  whole = up.upscale_float(img)
  tiled = up.upscale_float(img, tile=24, tile_overlap=8)
  to255 = lambda x: np.clip(x, 0, 1) * 255.0
  # One condition for all tiles: tiles differ from the whole image only at their seams (the
  # fixture's random weights give a wide, strong receptive field, hence a modest figure).
  assert metrics.psnr(to255(tiled), to255(whole), crop_border=0) > 30.0
  np.testing.assert_array_equal(up.condition(img), up.condition(img))
  other = up.upscale_float(img, support=[img[::-1, ::-1] * 0.5])
  assert np.abs(other - whole).max() > 1e-3  # the support set matters
  images.write_image(tmp_path / 'sup' / 's.png', images.from_float(img[:30, :30] * 0.5))
  assert cli.main(['upscale', 'tests/fixtures/torch_rrdbnet/input.png', '-m', str(model), '-o',
                   str(tmp_path / 'out'), '--support', str(tmp_path / 'sup')]) == 0
  assert images.read_image(tmp_path / 'out' / 'input_out.png').shape == (192, 176, 3)


def test_compare_writes_bicubic_and_model_crops_side_by_side(upscaler, tmp_path):
  img = images.read_image('tests/fixtures/torch_rrdbnet/input.png')[:20, :24]
  images.write_image(tmp_path / 'in' / 'a.png', img)
  assert cli.main(['upscale', str(tmp_path / 'in'), '-m',
                   'tests/fixtures/torch_rrdbnet/rrdbnet_x4_nf16_nb2.pth', '-o',
                   str(tmp_path / 'out'), '--compare', '64']) == 0
  pair = images.read_image(tmp_path / 'out' / 'a_compare.png')
  out = images.read_image(tmp_path / 'out' / 'a_out.png')
  assert pair.shape == (64, 128, 3)
  # the right half is the centre of the output (below the label)
  np.testing.assert_array_equal(pair[24:, 64:], out[8 + 24:72, 16:80])
