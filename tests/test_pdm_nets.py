"""PDM-SR's kernel, noise and degradation models and its PatchGAN discriminator against the
official PyTorch outputs. Every size is read from the fixture (its state dict, shapes or meta)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, nhwc
from condsr_jax import convert, export
from condsr_jax.nn import pdm

_METHODS = ('tests', 'fixtures', 'reference', 'methods')


def _path(request, name):
  return request.config.rootpath.joinpath(*_METHODS, f'{name}.npz')


def _fixture(request, name):
  data = np.load(_path(request, name))
  return data, json.loads(str(data['meta']))


def _state_dict(data, prefix=''):
  """The fixture's state dict, its keys under `prefix`."""
  return {prefix + k[len('sd/'):]: data[k] for k in data.files if k.startswith('sd/')}


@pytest.fixture(scope='module')
def kernel_fixture(request):
  return _fixture(request, 'pdm_kernel_model')


@pytest.fixture(scope='module', params=['pdm_deg_model', 'pdm_deg_model_quant'])
def deg_fixture(request):
  """(data, meta, spec, converted variables) of a netDeg fixture; the scale, which a state dict
  does not hold, from its meta."""
  data, meta = _fixture(request, request.param)
  sd = convert.read_state_dict(_path(request, request.param))
  spec, variables = convert.convert_state_dict(sd,
                                               overrides={'scale': meta['constructor']['scale']})
  return data, meta, spec, variables


def _call(branch):
  """An `apply` method running one branch of the DegModel."""
  return lambda module, *args, **kwargs: getattr(module, branch)(*args, **kwargs)


def test_kernel_application_is_the_official_unfold(request):
  data, _ = _fixture(request, 'pdm_kernel_apply')
  x, kernel, y = nhwc(data['in/x']), data['in/kernel'], nhwc(data['out/y'])
  # A kernel that is its own transpose or flip would not tell the orientation apart.
  assert not np.allclose(kernel, kernel.transpose(0, 2, 1))
  assert not np.allclose(kernel, kernel[:, ::-1, ::-1])
  assert x.shape[1] != x.shape[2]
  scale = x.shape[1] // y.shape[1]
  assert_close(pdm.apply_kernel(x, kernel, scale), y)
  with pytest.raises(ValueError, match='multiple of the scale'):
    pdm.apply_kernel(x[:, 1:], kernel, scale)


def test_kernel_model_matches_official(kernel_fixture):
  data, meta = kernel_fixture
  opt = meta['constructor']['opt']
  spec, variables = convert.convert_state_dict(_state_dict(data, 'deg_kernel.'))
  assert spec.arch == 'DegModel' and not spec.kwargs['noise']
  assert (spec.kwargs['kernel_nc'], spec.kwargs['kernel_nf'], spec.kwargs['kernel_nb'],
          spec.kwargs['ksize']) == (opt['nc'], opt['nf'], opt['nb'], opt['ksize'])
  x, y = nhwc(data['in/x']), nhwc(data['out/y'])
  model = spec.build(scale=x.shape[1] // y.shape[1])
  lr, kernel = model.apply(variables, x, nhwc(data['in/zk']), method=_call('deg_kernel'))
  assert_close(lr, y)
  assert_close(kernel, data['out/kernel'].reshape(kernel.shape))


@pytest.mark.parametrize('name', ['pdm_noise_model', 'pdm_noise_model_nomix',
                                  'pdm_noise_model_spatial'])
def test_noise_model_is_detected_and_matches_official(request, kernel_fixture, name):
  """Each noise variant in a netDeg state dict (with the kernel fixture's branch): detection
  reads mix, spatial and sizes from the shapes, and the branch gives the official noise."""
  data, meta = _fixture(request, name)
  opt = meta['constructor']['opt']
  sd = {**_state_dict(kernel_fixture[0], 'deg_kernel.'), **_state_dict(data, 'deg_noise.')}
  spec, variables = convert.convert_state_dict(sd)
  detected = {k[len('noise_'):]: v for k, v in spec.kwargs.items() if k.startswith('noise_')}
  assert spec.kwargs['noise']
  assert detected.items() >= {k: opt[k] for k in ('mix', 'spatial', 'nc', 'nf', 'nb',
                                                   'dim')}.items()
  if opt['spatial']:
    assert (detected['head_k'], detected['body_k']) == (opt['head_k'], opt['body_k'])
  noise = spec.build().apply(variables, nhwc(data['in/x']), nhwc(data['in/zn']),
                             method=_call('deg_noise'))
  assert_close(noise, nhwc(data['out/noise']))


def _head_batch_stats(inp, params):
  """Batch mean and unbiased variance of a branch's head conv output, as PyTorch's BatchNorm
  moves its running statistics towards them."""
  kernel = jnp.asarray(params['kernel'])
  out = jax.lax.conv_general_dilated(jnp.asarray(inp), kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     precision=jax.lax.Precision.HIGHEST) + params['bias']
  n = out.size // out.shape[-1]
  return jnp.mean(out, (0, 1, 2)), jnp.var(out, (0, 1, 2)) * n / (n - 1)


def test_deg_model_matches_official_in_eval_and_train_mode(deg_fixture):
  data, meta, spec, variables = deg_fixture
  ctor = meta['constructor']
  kopt, nopt = ctor['kernel_opt'], ctor['noise_opt']
  assert spec.arch == 'DegModel' and spec.kwargs['noise'] == (nopt is not None)
  assert (spec.kwargs['kernel_nb'], spec.kwargs['ksize']) == (kopt['nb'], kopt['ksize'])
  if nopt is not None:
    assert (spec.kwargs['noise_nb'], spec.kwargs['noise_mix']) == (nopt['nb'], nopt['mix'])
  model = spec.build()
  hr, zk = nhwc(data['in/hr']), nhwc(data['in/zk'])
  zn = nhwc(data['in/zn']) if nopt is not None else None
  for suffix, train in (('', False), ('_train', True)):
    (fake_lr, kernel, noise), state = model.apply(variables, hr, zk, zn, train=train,
                                                  mutable=['batch_stats'])
    assert_close(fake_lr, nhwc(data[f'out/fake_lr{suffix}']))
    assert_close(kernel, data[f'out/kernel{suffix}'].reshape(kernel.shape))  # squeezed at B=1
    if nopt is None:
      assert noise is None and f'out/noise{suffix}' not in data.files
    else:
      assert_close(noise, nhwc(data[f'out/noise{suffix}']))
  # The fixture stores train-mode outputs only; the running statistics of each head BatchNorm
  # are checked against the batch statistics of its input, rebuilt from the official outputs.
  inputs = {'deg_kernel': zk}
  if nopt is not None:
    blurred = nhwc(data['out/fake_lr_train'] - data['out/noise_train'])
    inputs['deg_noise'] = np.concatenate(
        [blurred, np.broadcast_to(zn, (*blurred.shape[:3], zn.shape[-1]))], axis=-1
    ) if nopt['mix'] else zn
  for branch, inp in inputs.items():
    old = variables['batch_stats'][branch][f'{branch}_1']
    new = state['batch_stats'][branch][f'{branch}_1']
    mean, var = _head_batch_stats(inp, variables['params'][branch][f'{branch}_0'])
    assert_close((new['mean'] - 0.9 * old['mean']) / 0.1, mean)
    assert_close((new['var'] - 0.9 * old['var']) / 0.1, var)


def test_state_dict_round_trips_with_the_official_names(deg_fixture):
  data, _, spec, variables = deg_fixture
  sd = export.torch_state_dict(variables)
  assert set(sd) == set(_state_dict(data))  # num_batches_tracked included, as 0
  spec2, again = convert.convert_state_dict(sd, overrides={'scale': spec.kwargs['scale']})
  assert spec2 == spec
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_kernels_are_distributions_and_the_noise_branch_sees_a_detached_lr(deg_fixture):
  data, _, spec, variables = deg_fixture
  model, hr = spec.build(), jnp.asarray(nhwc(data['in/hr']))
  draws = [model.apply(variables, hr, rngs={'latent': jax.random.key(seed)}) for seed in (0, 0, 1)]
  kernel = np.asarray(draws[0][1])
  assert kernel.min() >= 0
  np.testing.assert_allclose(kernel.sum((1, 2)), 1.0, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, draws[0], draws[1])  # same key, same codes
  assert not np.allclose(draws[0][1], draws[2][1])
  if not spec.kwargs['noise']:
    return

  def outputs(params):
    fake_lr, _, noise = model.apply({**variables, 'params': params}, hr,
                                    rngs={'latent': jax.random.key(0)})
    return fake_lr, noise

  (fake_lr, noise), pullback = jax.vjp(outputs, variables['params'])
  on_noise = (jnp.zeros_like(fake_lr), jnp.ones_like(noise))
  on_lr = (jnp.ones_like(fake_lr), jnp.zeros_like(noise))
  for cotangent, reaches_kernel in ((on_noise, False), (on_lr, True)):
    grads = pullback(cotangent)[0]['deg_kernel']
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads)) == reaches_kernel


def test_zero_init_starts_near_uniform_and_noise_free(deg_fixture):
  """The official zero_init: centre logit 1, others 0, so the softmax kernel is e / (e + k^2 - 1)
  at the centre and 1 / (e + k^2 - 1) elsewhere (not a delta); zero-initialised noise is 0."""
  data, _, spec, _ = deg_fixture
  model, hr = spec.build(), jnp.asarray(nhwc(data['in/hr']))
  variables = model.init(jax.random.key(0), hr)
  lr, kernel, noise = model.apply(variables, hr, rngs={'latent': jax.random.key(1)})
  k = spec.kwargs['ksize']
  expected = np.full((k, k), 1.0 / (math.e + k * k - 1))
  expected[k // 2, k // 2] = math.e / (math.e + k * k - 1)
  np.testing.assert_allclose(kernel, np.broadcast_to(expected, kernel.shape), rtol=1e-5)
  blurred = pdm.apply_kernel(hr, kernel, model.scale)
  if noise is None:
    np.testing.assert_allclose(lr, pdm.sinusoidal_quantize(blurred), atol=1e-6)
  else:
    np.testing.assert_array_equal(noise, 0.0)
    np.testing.assert_allclose(lr, blurred, atol=1e-6)


def test_configurations_the_reference_cannot_run_are_refused(kernel_fixture):
  hr = jnp.zeros((1, 16, 16, 3))
  for flags in (dict(spatial=True), dict(mix=True)):
    with pytest.raises(ValueError, match='only spatial=False, mix=False'):
      pdm.KernelModel(nb=1, ksize=5, **flags).init(jax.random.key(0), hr)
  with pytest.raises(ValueError, match='nc must be positive'):
    pdm.NoiseModel(nc=0, mix=False).init(jax.random.key(0), hr)
  sd = _state_dict(kernel_fixture[0], 'deg_kernel.')
  head = sd['deg_kernel.deg_kernel.0.weight']
  sd['deg_kernel.deg_kernel.0.weight'] = np.zeros((*head.shape[:2], 3, 3), head.dtype)
  with pytest.raises(ValueError, match='spatial kernel branch'):
    convert.detect_architecture(sd)


def test_straight_through_quantize_rounds_forward_and_passes_gradients():
  x = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 1.5, (4, 5, 6, 3)), jnp.float32)
  expected = np.clip(np.round(np.asarray(x) * 255.0), 0, 255) / 255.0
  np.testing.assert_allclose(pdm.straight_through_quantize(x), expected, rtol=0, atol=1e-7)
  weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
  grad = jax.grad(lambda v: jnp.sum(weights * pdm.straight_through_quantize(v)))(x)
  np.testing.assert_array_equal(grad, weights)  # identity, outside [0, 1] too


def test_patchgan_matches_official_and_defaults_to_one_map(request):
  data, meta = _fixture(request, 'pdm_patchgan')
  ctor = meta['constructor']
  spec, variables = convert.convert_state_dict(convert.read_state_dict(_path(request,
                                                                              'pdm_patchgan')))
  assert spec.arch == 'PatchGANDiscriminator'
  assert spec.kwargs == dict(in_c=ctor['in_c'], nf=ctor['nf'], nb=ctor['nb'],
                             reference_nf_output=True)
  x = nhwc(data['in/x'])
  assert_close(spec.build(stride=ctor['stride']).apply(variables, x), nhwc(data['out/y']))
  sd = export.torch_state_dict(variables)
  assert set(sd) == set(_state_dict(data))
  jax.tree.map(np.testing.assert_array_equal, convert.convert_state_dict(sd)[1], variables)
  single = pdm.PatchGANDiscriminator(**{**spec.kwargs, 'reference_nf_output': False},
                                     stride=ctor['stride'])
  out = single.apply(single.init(jax.random.key(0), x), x)
  assert out.shape == (*data['out/y'].shape[:1], *data['out/y'].shape[2:], 1)


def test_kernel_model_without_a_code_learns_one_kernel():
  """nc = 0, the deterministic degradation: one kernel for every image, its logits a parameter
  that starts at the zero_init kernel and that a gradient moves."""
  model = pdm.KernelModel(nc=0, ksize=5, scale=2)
  hr = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3))
  variables = model.init(jax.random.key(1), hr)
  assert jax.tree.map(jnp.shape, variables['params']) == {'logits': (25,)}
  lr, kernel = model.apply(variables, hr)
  np.testing.assert_array_equal(kernel, jnp.broadcast_to(kernel[0], kernel.shape))
  assert kernel[0, 2, 2] == kernel.max() and lr.shape == (3, 4, 4, 3)
  grads = jax.grad(lambda p: model.apply({'params': p}, hr)[0].std())(variables['params'])
  assert np.abs(grads['logits']).max() > 0
