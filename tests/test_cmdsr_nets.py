"""CMDSR networks and task contrastive loss against the official PyTorch outputs, and the
ConditionNet grafted onto RRDBNet."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import assert_close, nhwc
from condsr_jax import convert, losses, models
from condsr_jax.nn import cmdsr, conditional


@pytest.fixture(scope='module')
def cmdsr_fixture(request):
  path = request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'methods' / 'cmdsr.npz'
  data = np.load(path)
  sd = convert.read_state_dict(path)
  spec, variables = convert.convert_state_dict(sd)
  return data, sd, spec, variables


@pytest.fixture(scope='module')
def contrastive_fixture(request):
  return np.load(request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'methods'
                 / 'cmdsr_task_contrastive.npz')


def _patches(support: np.ndarray, num_ch: int) -> np.ndarray:
  """Support set `[k, h, w, n*C]` -> its patches `[k, n, h, w, C]`."""
  k, h, w, nc = support.shape
  return np.asarray(cmdsr.unstack_support(support, num_ch)).reshape(k, nc // num_ch, h, w, num_ch)


def test_state_dict_is_detected_and_converted(cmdsr_fixture):
  data, sd, spec, variables = cmdsr_fixture
  args = json.loads(str(data['meta']))['constructor']['args']
  assert spec.arch == 'CMDSRNet'
  assert spec.kwargs == dict(num_in_ch=args['input_channels'], num_feat=args['channels'],
                             num_block=args['n_block'], support_size=args['support_size'],
                             scale=args['scale_factor'],
                             cond_feat=sd['condition_net.condition.0.weight'].shape[0])
  assert spec.scale == args['scale_factor']
  assert set(variables['params']) == {'condition_net', 'sr_net'}
  # equalised-LR parameters are stored unscaled: the kernel is the torch weight, transposed
  kernel = variables['params']['sr_net']['modulations']['modulations_0']['kernel']
  np.testing.assert_array_equal(kernel, sd['sr_net.modulations.modulations.0.weight'].T)


def test_condition_and_modulations_match_pytorch(cmdsr_fixture):
  data, sd, spec, variables = cmdsr_fixture
  cond = spec.build().apply(variables, nhwc(data['in/support']), method='condition')
  assert_close(cond, data['out/cond'][:, :, 0, 0])
  num_mods = len([k for k in sd if k.startswith('sr_net.modulations.') and k.endswith('.weight')])
  widths = [sd[f'sr_net.modulations.modulations.{i}.weight'].shape[0] for i in range(num_mods)]
  mods = cmdsr.Modulations(widths).apply(
      {'params': variables['params']['sr_net']['modulations']}, cond)
  ref = data['out/modulations'][:, :, :, 0, :, 0, 0]  # [n_block, convs per block, k, width]
  assert_close(jnp.stack(mods).reshape(ref.shape), ref)


def test_left_square_pool_reproduces_nonsquare_reference(cmdsr_fixture):
  data, _, spec, variables = cmdsr_fixture
  wide = nhwc(data['in/support_nonsquare'])  # wider than high after the pool, too
  assert wide.shape[2] > wide.shape[1]
  ref = data['out/cond_nonsquare'][:, :, 0, 0]
  quirk = spec.build(left_square_pool=True).apply(variables, wide, method='condition')
  assert_close(quirk, ref)
  default = spec.build().apply(variables, wide, method='condition')
  with pytest.raises(AssertionError):  # the default averages every position
    assert_close(default, ref, rtol=1e-2)
  square = nhwc(data['in/support'])
  np.testing.assert_allclose(
      spec.build(left_square_pool=True).apply(variables, square, method='condition'),
      spec.build().apply(variables, square, method='condition'), rtol=1e-6)
  with pytest.raises(ValueError, match='wide'):
    spec.build(left_square_pool=True).apply(variables, wide.transpose(0, 2, 1, 3),
                                            method='condition')


def test_batched_forward_with_bias_bug_matches_pytorch(cmdsr_fixture):
  data, _, spec, variables = cmdsr_fixture
  net = spec.build(bias_repeat_bug=True)
  support = nhwc(data['in/support'])
  assert_close(net.apply(variables, nhwc(data['in/lr']), support), nhwc(data['out/sr']))
  lr_support = cmdsr.unstack_support(support, spec.in_channels)
  np.testing.assert_array_equal(lr_support, nhwc(data['out/lr_support']))
  assert_close(net.apply(variables, lr_support, support), nhwc(data['out/sr_support']))


def test_single_image_and_per_sample_bias_match_pytorch(cmdsr_fixture):
  data, _, spec, variables = cmdsr_fixture
  support = nhwc(data['in/support'])
  for bug in (False, True):  # with one image the bias quirk is invisible
    y = spec.build(bias_repeat_bug=bug).apply(variables, nhwc(data['in/lr_single']), support[:1])
    assert_close(y, nhwc(data['out/sr_single']))
  # Without the bug a batch equals its images run one at a time with their task's condition.
  net = spec.build()
  lr = nhwc(data['in/lr'])
  per_task = lr.shape[0] // support.shape[0]
  cond = net.apply(variables, support, method='condition')
  batched = net.apply(variables, lr, cond, method='super_resolve')
  single = [net.apply(variables, lr[j:j + 1], cond[j // per_task:j // per_task + 1],
                      method='super_resolve') for j in range(lr.shape[0])]
  np.testing.assert_allclose(batched, jnp.concatenate(single), rtol=1e-5, atol=1e-3)
  with pytest.raises(AssertionError):  # the reference's batch has the bug
    assert_close(batched, nhwc(data['out/sr']))


def test_unit_range_interface_matches_pytorch(cmdsr_fixture):
  """`condition_from_support` and `upscale` take [0, 1] images; CMDSR reads 0..255."""
  data, _, spec, variables = cmdsr_fixture
  net = spec.build()
  patches = _patches(nhwc(data['in/support']), spec.in_channels) / 255.0
  cond = net.apply(variables, patches, method='condition_from_support')
  assert_close(cond, data['out/cond'][:, :, 0, 0])
  lr = nhwc(data['in/lr_single']) / 255.0
  sr = net.apply(variables, lr, cond[:1], method='upscale')
  assert_close(sr * 255.0, nhwc(data['out/sr_single']))
  np.testing.assert_allclose(
      sr * 255.0, net.apply(variables, lr * 255.0, cond[:1], method='super_resolve'), rtol=1e-6)


def test_mean_shift_option_shifts_the_reference_network(cmdsr_fixture):
  """`rgb_mean` runs the same weights on the image minus 255 x mean and adds it back."""
  data, _, spec, variables = cmdsr_fixture
  mean = (0.4, 0.5, 0.6)
  shifted = models.ModelSpec(spec.arch, {**spec.kwargs, 'rgb_mean': mean}).build()
  lr, cond = nhwc(data['in/lr_single']), data['out/cond'][:1, :, 0, 0]
  offset = 255.0 * np.asarray(mean, np.float32)
  want = spec.build().apply(variables, lr - offset, cond, method='super_resolve') + offset
  got = shifted.apply(variables, lr, cond, method='super_resolve')
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
  with pytest.raises(ValueError, match='rgb_mean has 2 values'):
    models.ModelSpec(spec.arch, {**spec.kwargs, 'rgb_mean': (0.4, 0.5)}).build().apply(
        variables, lr, cond, method='super_resolve')


def _small(arch: str, **kwargs) -> models.ModelSpec:
  base = dict(num_feat=8, num_block=1, support_size=3, support_patch=6, cond_feat=4, scale=2)
  if arch == 'CMDSRRRDBNet':
    base['num_grow_ch'] = 4
  return models.ModelSpec(arch, {**base, **kwargs})


@pytest.mark.parametrize('arch', ['CMDSRNet', 'CMDSRRRDBNet'])
def test_condition_from_lr_is_the_condition_of_its_own_crops(arch):
  net = _small(arch).build()
  variables = net.init(jax.random.key(0), *net.example_inputs())
  lr = jax.random.uniform(jax.random.key(1), (2, 10, 13, 3))
  cond = jax.jit(functools.partial(net.apply, method='condition_from_lr'))(variables, lr)
  assert cond.shape == (2, 2 * net.cond_feat)
  crops = conditional.lr_support_crops(lr, net.support_size, net.support_patch)
  np.testing.assert_allclose(
      cond, net.apply(variables, crops, method='condition_from_support'), rtol=1e-6)
  assert not np.allclose(cond[0], cond[1])  # each image its own condition
  # Images smaller than the support patch give crops of their own size.
  small = net.apply(variables, lr[:, :5, :4], method='condition_from_lr')
  np.testing.assert_allclose(
      small, net.apply(variables, conditional.lr_support_crops(lr[:, :5, :4], 3, 4),
                       method='condition_from_support'), rtol=1e-6)


@pytest.mark.parametrize('arch', ['CMDSRNet', 'CMDSRRRDBNet'])
def test_blind_model_has_no_condition_net_and_a_zero_condition(arch):
  spec = _small(arch, blind=True)
  net = spec.build()
  variables = net.init(jax.random.key(0), *net.example_inputs())
  assert 'condition_net' not in variables['params']
  assert 'condition_net' not in spec.init_shapes()['params']
  lr = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  cond = net.apply(variables, lr, method='condition_from_lr')
  np.testing.assert_array_equal(cond, np.zeros((2, 2 * net.cond_feat)))
  assert net.apply(variables, lr, cond, method='upscale').shape == (2, 16, 16, 3)


def test_support_stacking_round_trip():
  patches = jnp.arange(2 * 3 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 3, 4, 5, 3)
  support = cmdsr.stack_support(patches)
  assert support.shape == (2, 4, 5, 9)
  np.testing.assert_array_equal(support[1, ..., 3:6], patches[1, 1])  # channel patch*3 + rgb
  np.testing.assert_array_equal(cmdsr.unstack_support(support), patches.reshape(6, 4, 5, 3))


@pytest.mark.parametrize('scale,support_size,height,width',
                         [(2, 2, 6, 9), (3, 4, 7, 5), (8, 1, 4, 4)])
def test_other_scales_and_support_sizes(scale, support_size, height, width):
  net = cmdsr.CMDSRNet(num_feat=8, num_block=1, support_size=support_size, scale=scale,
                       cond_feat=4)
  support = jnp.ones((2, 10, 12, 3 * support_size))
  lr = jnp.ones((4, height, width, 3))
  variables = net.init(jax.random.key(0), lr, support)
  assert net.apply(variables, lr, support).shape == (4, height * scale, width * scale, 3)
  assert net.apply(variables, support, method='condition').shape == (2, 8)
  with pytest.raises(ValueError, match='multiple of the 2 tasks'):
    net.apply(variables, lr[:3], support)
  with pytest.raises(ValueError, match='patches'):
    net.apply(variables, lr, support[..., 3:])


def test_model_specs_build_and_have_example_inputs():
  for arch, kwargs in (('CMDSRNet', dict(num_feat=8, num_block=1, support_size=2, scale=3)),
                       ('CMDSRRRDBNet', dict(num_feat=8, num_block=1, num_grow_ch=4,
                                             support_size=2, scale=2))):
    spec = models.ModelSpec(arch, kwargs)
    shapes = spec.init_shapes()
    assert {'condition_net', 'sr_net'} <= set(shapes['params'])
    assert spec.scale == kwargs['scale']


def test_task_contrastive_loss_faithful(contrastive_fixture):
  t = contrastive_fixture
  loss, d_in_mean, d_cross_mean = losses.task_contrastive_loss(t['in/f1'], t['in/f2'], t['in/perm'])
  np.testing.assert_allclose(loss, t['out/loss'], rtol=1e-6)
  np.testing.assert_allclose(d_in_mean, t['out/d_in_mean'], rtol=1e-6)
  np.testing.assert_allclose(d_cross_mean, t['out/d_cross_mean'], rtol=1e-6)
  d_in, d_cross = losses.task_distances(t['in/f1'], t['in/f2'], t['in/perm'])
  assert_close(d_in, t['out/d_in'][:, :, 0, 0], rtol=1e-6)
  assert_close(d_cross, t['out/d_cross'][:, :, 0, 0], rtol=1e-6)


def test_task_contrastive_loss_per_vector(contrastive_fixture):
  t = contrastive_fixture
  loss, d_in_mean, d_cross_mean = losses.task_contrastive_loss(
      t['in/f1_flat'], t['in/f2_flat'], t['in/perm'], elementwise=False)
  np.testing.assert_allclose(loss, t['out/loss_flat'], rtol=1e-6)
  np.testing.assert_allclose(d_in_mean, t['out/d_in_flat_mean'], rtol=1e-6)
  np.testing.assert_allclose(d_cross_mean, t['out/d_cross_flat_mean'], rtol=1e-6)
  far = losses.task_contrastive_loss(t['in/f1_flat'] * 100, t['in/f2_flat'], t['in/perm'],
                                     elementwise=False)[0]
  assert np.isfinite(far)  # softplus, not log(1 + exp(.)), which overflows here
  grads = jax.grad(lambda f: losses.task_contrastive_loss(
      f, t['in/f2_flat'], t['in/perm'], elementwise=False)[0])(jnp.asarray(t['in/f1_flat']))
  assert np.isfinite(grads).all() and np.abs(grads).max() > 0


def test_random_derangement():
  sample = jax.jit(jax.vmap(lambda key: losses.random_derangement(key, 5)))
  perms = np.asarray(sample(jax.random.split(jax.random.key(0), 2000)))
  np.testing.assert_array_equal(np.sort(perms, axis=1), np.tile(np.arange(5), (2000, 1)))
  assert not (perms == np.arange(5)).any()
  # uniform over the 44 derangements of 5: each appears ~45 times in 2000 draws
  _, counts = np.unique(perms, axis=0, return_counts=True)
  assert len(counts) == 44 and counts.min() > 15 and counts.max() < 85
  np.testing.assert_array_equal(losses.random_derangement(jax.random.key(1), 2), [1, 0])
  with pytest.raises(ValueError):
    losses.random_derangement(jax.random.key(1), 1)


@pytest.fixture(scope='module')
def rrdbnet_fixture(request):
  path = request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'basicsr' / 'rrdbnet_x4.npz'
  spec, variables = convert.convert_state_dict(convert.read_state_dict(path))
  return np.load(path), spec, variables


def test_rrdb_graft_is_the_plain_rrdbnet_at_init(rrdbnet_fixture):
  data, spec, rrdb_vars = rrdbnet_fixture
  net = cmdsr.CMDSRRRDBNet(**spec.kwargs, support_size=2)
  variables = cmdsr.init_from_rrdbnet(net, rrdb_vars, jax.random.key(0))
  assert set(variables['params']) == {'condition_net', 'sr_net', 'modulations'}
  lr = nhwc(data['in/x'])
  plain = spec.build().apply(rrdb_vars, lr)
  supports = jax.random.uniform(jax.random.key(1),
                                (2, 1, 8, 10, net.support_size * net.num_in_ch))
  for support in supports:
    np.testing.assert_allclose(net.apply(variables, lr, support), plain, rtol=0, atol=1e-6)
  assert_close(plain, nhwc(data['out/y']))

  # Once the modulations move, the output depends on the support set (the initial condition
  # is small, ~0.05, as in CMDSR: ConditionNet convs start at 0.1 x kaiming).
  flat = traverse_util.flatten_dict(variables)
  flat = {k: (100 * jax.random.normal(jax.random.key(2), v.shape) if k[-1] == 'kernel'
              and k[1] == 'modulations' else v) for k, v in flat.items()}
  moved = traverse_util.unflatten_dict(flat)
  y0, y1 = (net.apply(moved, lr, s) for s in supports)
  with pytest.raises(AssertionError):
    assert_close(y0, y1, rtol=1e-3)


def test_rrdb_graft_rejects_mismatched_rrdbnet(rrdbnet_fixture):
  _, spec, rrdb_vars = rrdbnet_fixture
  net = cmdsr.CMDSRRRDBNet(**{**spec.kwargs, 'num_block': spec.kwargs['num_block'] + 1},
                           support_size=2)
  with pytest.raises(ValueError, match='do not fit'):
    cmdsr.init_from_rrdbnet(net, rrdb_vars, jax.random.key(0))


def test_parameter_groups_split_condition_net_from_the_rest(cmdsr_fixture):
  *_, variables = cmdsr_fixture
  labels = cmdsr.parameter_groups(variables['params'])
  flat = traverse_util.flatten_dict(labels)
  assert {v for k, v in flat.items() if k[0] == 'condition_net'} == {'condition'}
  assert {v for k, v in flat.items() if k[0] == 'sr_net'} == {'sr'}
  assert any(k[:2] == ('sr_net', 'modulations') for k in flat)
