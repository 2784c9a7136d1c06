"""CMDSR networks and task contrastive loss against the official PyTorch outputs, and the
ConditionNet grafted onto RRDBNet."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from condsr_jax import convert, losses, models
from condsr_jax.nn import cmdsr


def nhwc(a: np.ndarray) -> jax.Array:
  return jnp.asarray(a.transpose(0, 2, 3, 1))


def rel_err(actual, ref) -> float:
  actual, ref = np.asarray(actual), np.asarray(ref)
  assert actual.shape == ref.shape
  return float(np.abs(actual - ref).max() / np.abs(ref).max())


@pytest.fixture(scope='module')
def cmdsr_fixture(request):
  path = request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'methods' / 'cmdsr.npz'
  data = np.load(path)
  spec, variables = convert.convert_state_dict(convert.read_state_dict(path))
  return data, spec, variables


@pytest.fixture(scope='module')
def contrastive_fixture(request):
  return np.load(request.config.rootpath / 'tests' / 'fixtures' / 'reference' / 'methods'
                 / 'cmdsr_task_contrastive.npz')


def test_state_dict_is_detected_and_converted(cmdsr_fixture):
  data, spec, variables = cmdsr_fixture
  args = json.loads(str(data['meta']))['constructor']['args']
  assert spec.arch == 'CMDSRNet'
  assert spec.kwargs == dict(num_in_ch=3, num_feat=args['channels'], num_block=args['n_block'],
                             support_size=args['support_size'], scale=args['scale_factor'],
                             cond_feat=64)
  assert spec.scale == 4
  assert set(variables['params']) == {'condition_net', 'sr_net'}
  # equalised-LR parameters are stored unscaled: the kernel is the torch weight, transposed
  kernel = variables['params']['sr_net']['modulations']['modulations_0']['kernel']
  np.testing.assert_array_equal(kernel, data['sd/sr_net.modulations.modulations.0.weight'].T)


def test_condition_and_modulations_match_pytorch(cmdsr_fixture):
  data, spec, variables = cmdsr_fixture
  cond = spec.build().apply(variables, nhwc(data['in/support']), method='condition')
  assert rel_err(cond, data['out/cond'][:, :, 0, 0]) < 1e-4
  mods = cmdsr.Modulations((64,) * 4).apply(
      {'params': variables['params']['sr_net']['modulations']}, cond)
  ref = data['out/modulations'][:, :, :, 0, :, 0, 0]  # [n_block, 2, k, 64]
  assert rel_err(jnp.stack(mods).reshape(ref.shape), ref) < 1e-4


def test_left_square_pool_reproduces_nonsquare_reference(cmdsr_fixture):
  data, spec, variables = cmdsr_fixture
  wide = nhwc(data['in/support_nonsquare'])  # features 4x6 after the pool
  ref = data['out/cond_nonsquare'][:, :, 0, 0]
  quirk = spec.build(left_square_pool=True).apply(variables, wide, method='condition')
  assert rel_err(quirk, ref) < 1e-4
  default = spec.build().apply(variables, wide, method='condition')
  assert rel_err(default, ref) > 1e-2  # the default averages all 4x6 positions
  square = nhwc(data['in/support'])
  np.testing.assert_allclose(
      spec.build(left_square_pool=True).apply(variables, square, method='condition'),
      spec.build().apply(variables, square, method='condition'), rtol=1e-6)
  with pytest.raises(ValueError, match='wide'):
    spec.build(left_square_pool=True).apply(variables, wide.transpose(0, 2, 1, 3),
                                            method='condition')


def test_batched_forward_with_bias_bug_matches_pytorch(cmdsr_fixture):
  data, spec, variables = cmdsr_fixture
  net = spec.build(bias_repeat_bug=True)
  support = nhwc(data['in/support'])
  assert rel_err(net.apply(variables, nhwc(data['in/lr']), support), nhwc(data['out/sr'])) < 1e-4
  lr_support = cmdsr.unstack_support(support)
  np.testing.assert_array_equal(lr_support, nhwc(data['out/lr_support']))
  assert rel_err(net.apply(variables, lr_support, support), nhwc(data['out/sr_support'])) < 1e-4


def test_single_image_and_per_sample_bias_match_pytorch(cmdsr_fixture):
  data, spec, variables = cmdsr_fixture
  support = nhwc(data['in/support'])
  for bug in (False, True):  # with one image the bias quirk is invisible
    y = spec.build(bias_repeat_bug=bug).apply(variables, nhwc(data['in/lr_single']), support[:1])
    assert rel_err(y, nhwc(data['out/sr_single'])) < 1e-4
  # Without the bug a batch equals its images run one at a time with their task's condition.
  net = spec.build()
  lr = nhwc(data['in/lr'])
  cond = net.apply(variables, support, method='condition')
  batched = net.apply(variables, lr, cond, method='super_resolve')
  single = [net.apply(variables, lr[j:j + 1], cond[j // 2:j // 2 + 1], method='super_resolve')
            for j in range(lr.shape[0])]
  np.testing.assert_allclose(batched, jnp.concatenate(single), rtol=1e-5, atol=1e-3)
  assert rel_err(batched, nhwc(data['out/sr'])) > 1e-4  # the reference's batch has the bug


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
  assert rel_err(d_in, t['out/d_in'][:, :, 0, 0]) < 1e-6
  assert rel_err(d_cross, t['out/d_cross'][:, :, 0, 0]) < 1e-6


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
  supports = jax.random.uniform(jax.random.key(1), (2, 1, 8, 10, 6))
  for support in supports:
    np.testing.assert_allclose(net.apply(variables, lr, support), plain, rtol=0, atol=1e-6)
  assert rel_err(plain, nhwc(data['out/y'])) < 1e-4

  # Once the modulations move, the output depends on the support set (the initial condition
  # is small, ~0.05, as in CMDSR: ConditionNet convs start at 0.1 x kaiming).
  flat = traverse_util.flatten_dict(variables)
  flat = {k: (100 * jax.random.normal(jax.random.key(2), v.shape) if k[-1] == 'kernel'
              and k[1] == 'modulations' else v) for k, v in flat.items()}
  moved = traverse_util.unflatten_dict(flat)
  y0, y1 = (net.apply(moved, lr, s) for s in supports)
  assert rel_err(y0, y1) > 1e-3


def test_rrdb_graft_rejects_mismatched_rrdbnet(rrdbnet_fixture):
  _, spec, rrdb_vars = rrdbnet_fixture
  net = cmdsr.CMDSRRRDBNet(**{**spec.kwargs, 'num_block': 3}, support_size=2)
  with pytest.raises(ValueError, match='do not fit'):
    cmdsr.init_from_rrdbnet(net, rrdb_vars, jax.random.key(0))


def test_parameter_groups_split_condition_net_from_the_rest(cmdsr_fixture):
  _, _, variables = cmdsr_fixture
  labels = cmdsr.parameter_groups(variables['params'])
  flat = traverse_util.flatten_dict(labels)
  assert {v for k, v in flat.items() if k[0] == 'condition_net'} == {'condition'}
  assert {v for k, v in flat.items() if k[0] == 'sr_net'} == {'sr'}
  assert ('sr_net', 'modulations', 'modulations_3', 'kernel') in flat
