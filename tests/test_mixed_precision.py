"""Mixed precision: `train.precision = 'bfloat16'` makes every network a method builds compute in
bfloat16, while parameters, optimiser states, the EMA, losses and metrics stay float32.

Every registered architecture with a compute dtype returns float32 from bfloat16 convolutions;
one bfloat16 step of every registered method (its ':smoke' recipe) leaves float32 state; a small
SR network's L1 curve and Real-ESRGAN's GAN stage in bfloat16 track their float32 runs (same
seed, same batches).
"""

import dataclasses
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen

from condsr_jax import config as config_lib
from condsr_jax import methods, models, train
from condsr_jax import nn as cnn
from condsr_jax.data import streams
from condsr_jax.degrade import pipelines
from condsr_jax.methods import common
from conftest import start_training

# Every method of the package and the recipe whose ':smoke' variant trains it.
RECIPES = {'sr': 'edsr_bicubic_x4', 'esrgan': 'realesrgan_x4plus', 'cmdsr': 'cmdsr_srresnet_x4',
           'dasr': 'dasr_x4', 'dasr_dd': 'dasr_dd_x4', 'dsn': 'dsn_x4', 'pdm_sr': 'pdm_sr_x4'}
# Learning rates at which 30-40 steps of the tiny networks move the losses (the GAN's too).
FAST = {'sr': {'optim.generator.lr': 1e-3},
        'esrgan': {'optim.generator.lr': 1e-3, 'optim.discriminator.lr': 1e-3}}


def _config(smoke_config, name: str, precision: str):
  """The ':smoke' recipe of method `name` in `precision`, with the faster learning rates of the
  curve tests. The GAN stage trains on bicubic LR without the pair pool: the degradation is
  float32 in any precision, and Real-ESRGAN's second-order pipeline would double the compile
  time."""
  config = smoke_config(RECIPES[name], **{'train.precision': precision,
                                          'data.keep_decoded': True, **FAST.get(name, {})})
  if name == 'esrgan':
    config.degradation = pipelines.default_config('bicubic', config.scale)
    config.degradation.gt_size = config.degradation.crop_pad = 32
    config.loss.pixel_target = config.loss.perceptual_target = 'gt'  # no USM of bicubic pairs
    config.pool.size = 0
  return config


def _package_methods() -> set[str]:
  """The methods the modules of `condsr_jax.methods` register (not those tests define)."""
  return {name for name in methods.names() if methods.get(name).__module__ in sys.modules
          and methods.get(name).__module__.startswith('condsr_jax.methods.')}


def _floats(tree) -> list[jax.Array]:
  return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def _batches(method, count: int, seed: int = 0) -> list[dict]:
  """`count` batches of every stream of `method`, as the loop reads them."""
  its = {name: streams.make_iterator(spec, seed=streams.stream_seed(seed, name))
         for name, spec in method.streams().items()}
  out = []
  for _ in range(count):
    out.append({name: {k: v for k, v in next(it).items()
                       if isinstance(v, np.ndarray) and v.dtype.kind in 'fiub'
                       and k != 'bad_images'} for name, it in its.items()})
  for it in its.values():
    if hasattr(it, 'close'):
      it.close()
  return out


def _run(config, batches: list[dict], state=None) -> tuple[object, dict[str, np.ndarray]]:
  """(initial loop state, {metric: per-step values}) of training on `batches`, from `state`
  (the initial state of the same seed in another precision: parameters are float32 in both)."""
  if state is None:
    method, state, step = start_training(config)
  else:  # the same step as `start_training`'s, without compiling the initialisation again
    method = methods.build(config)
    step = jax.jit(train.make_train_step(method, config.train.ema_decay))
  initial = state
  consts, history = method.constants(), []
  for batch in batches:
    state, metrics = step(state, batch, consts)
    history.append(metrics)
  return initial, {k: np.array([float(m[k]) for m in history]) for k in history[0]}


def _networks(method) -> list[linen.Module]:
  """The flax modules a method object holds (its networks, the VGG19 of a perceptual loss)."""
  found = []
  for value in vars(method).values():
    for v in value if isinstance(value, tuple) else (value,):
      if isinstance(v, linen.Module) and 'dtype' in {f.name for f in dataclasses.fields(v)}:
        found.append(v)
  return found


def test_every_architecture_returns_float32_from_bfloat16_convolutions():
  for name, arch in sorted(cnn.ARCHITECTURES.items()):
    if not arch.module.__module__.startswith('condsr_jax.'):
      continue  # registered by another test
    if 'dtype' not in {f.name for f in dataclasses.fields(arch.module)}:
      assert name in ('DISTS', 'OracleCondition'), f'{name} has no compute dtype'
      continue
    small = {k: v for k, v in {'num_feat': 8, 'num_block': 1}.items()
             if k in {f.name for f in dataclasses.fields(arch.module)}}
    m16 = arch.module(**small, dtype=jnp.bfloat16)
    inputs = models.example_inputs(m16)
    rngs = {'params': jax.random.key(0), 'latent': jax.random.key(1)}
    variables = jax.eval_shape(lambda: m16.init(rngs, *inputs))  # pylint: disable=cell-var-from-loop
    assert {str(x.dtype) for x in _floats(variables)} == {'float32'}, name
    apply = lambda v, *a: m16.apply(v, *a, rngs={'latent': jax.random.key(1)})  # pylint: disable=cell-var-from-loop
    outputs = jax.eval_shape(apply, variables, *inputs)
    assert {str(x.dtype) for x in _floats(outputs)} == {'float32'}, name
    convs = [e for e in jax.make_jaxpr(apply)(variables, *inputs).jaxpr.eqns
             if e.primitive.name == 'conv_general_dilated']
    assert any(e.invars[0].aval.dtype == jnp.bfloat16 for e in convs), name


def test_every_method_has_a_recipe_here():
  assert _package_methods() == set(RECIPES)


def test_a_network_section_dtype_overrides_train_precision(smoke_config):
  config = smoke_config('edsr_bicubic_x4', **{'train.precision': 'bfloat16'})
  assert config.model.dtype == ''  # follows train.precision
  assert common.compute_dtype(config, config.model) == jnp.bfloat16
  assert common.compute_dtype(config) == jnp.bfloat16  # frozen loss networks (VGG19, LPIPS)
  config.model.dtype = 'float32'
  assert common.build_network(config, common.generator_spec(config), config.model).dtype == (
      jnp.float32)
  config.train.precision, config.model.dtype = 'float32', 'bfloat16'
  assert common.compute_dtype(config, config.model) == jnp.bfloat16
  for field, value in (('train.precision', 'float16'), ('model.dtype', 'half')):
    bad = smoke_config('edsr_bicubic_x4', **{field: value})
    with pytest.raises(config_lib.ConfigError, match=re.escape(f'config.{field} = {value!r}')):
      config_lib.validate(bad)


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_a_bfloat16_step_of_every_method_keeps_float32_state(name, smoke_config):
  """The networks compute in bfloat16; the new parameters, optimiser states, other state, EMA
  and metrics of the loop's step are float32. The step is traced, not compiled: dtypes are
  static, so these are the compiled step's (compiling the seven steps takes about 100 s of one
  core; the 'sr' and 'esrgan' steps run in bfloat16 in the curve tests below)."""
  config = _config(smoke_config, name, 'bfloat16')
  method = methods.build(config)
  networks = _networks(method)
  assert networks and all(m.dtype == jnp.bfloat16 for m in networks), networks
  rng = jax.random.key_data(jax.random.key(0))
  state = jax.eval_shape(lambda: train.init_loop_state(method, rng, {}))
  step = train.make_train_step(method, config.train.ema_decay)
  new, metrics = jax.eval_shape(step, state, _batches(method, 1)[0], method.constants())
  for part in ('params', 'opt', 'extra'):
    leaves = _floats(getattr(new.method, part))
    assert {str(x.dtype) for x in leaves} <= {'float32'}, part
  assert {str(x.dtype) for x in _floats(new.ema)} == {'float32'}
  assert {str(x.dtype) for x in _floats(metrics)} == {'float32'}


def _last(values: np.ndarray) -> float:
  return float(np.mean(values[-10:]))


def _relative(a: float, b: float) -> float:
  return abs(a - b) / abs(b)


def _both(smoke_config, name: str, steps: int) -> dict[str, dict[str, np.ndarray]]:
  """{precision: per-step metrics} of float32 and bfloat16 runs on the same batches and seed."""
  batches = _batches(methods.build(_config(smoke_config, name, 'float32')), steps)
  initial, f32 = _run(_config(smoke_config, name, 'float32'), batches)
  runs = {'float32': f32, 'bfloat16': _run(_config(smoke_config, name, 'bfloat16'), batches,
                                           initial)[1]}
  for history in runs.values():
    assert history['skipped'].sum() == 0
    assert all(np.isfinite(v).all() for v in history.values())
  return runs


def test_bfloat16_l1_curve_tracks_float32(smoke_config):
  """EDSR (8 features, 1 block), L1 on bicubic LR of 32 px demo crops, batch 4, Adam 1e-3, 40
  steps. Measured (XLA:CPU): the mean L1 of the first 5 steps 0.2220 in both precisions, of the
  last 10 0.11595 (float32) and 0.11594 (bfloat16), 1e-4 apart relatively; the largest per-step
  difference 0.16 %. Allowed: 1 % on the last-10 mean, 3 % on any step, and both at most 0.7x
  their first-5 mean (measured 0.52x)."""
  runs = _both(smoke_config, 'sr', 40)
  f32, bf16 = runs['float32']['loss'], runs['bfloat16']['loss']
  for loss in (f32, bf16):
    assert _last(loss) < 0.7 * np.mean(loss[:5])
  assert _relative(_last(bf16), _last(f32)) < 0.01
  assert np.max(np.abs(bf16 - f32) / f32) < 0.03


def test_bfloat16_gan_stage_tracks_float32(smoke_config):
  """Real-ESRGAN's stage 2 ('esrgan'): RRDBNet (8 features, 1 block) with L1 + random-VGG19
  perceptual + GAN 0.1 against a U-Net discriminator with spectral norm (4 features), Adam 1e-3
  for both, 30 steps. Measured (XLA:CPU), last-10 means float32 / bfloat16: generator loss
  0.22818 / 0.22765 (0.23 %; 0.5210 over the first 5), discriminator loss 1.38320 / 1.38336
  (0.01 %; on the way it falls to 1.350 and rises to 1.458), generator GAN term 0.06586 /
  0.06532 (0.8 %). Allowed: 2 % on the generator loss, 0.5 % on the discriminator loss, 5 % on
  the GAN term, and the generator loss at most 0.7x its first-5 mean in both runs (measured
  0.44x)."""
  runs = _both(smoke_config, 'esrgan', 30)
  f32, bf16 = runs['float32'], runs['bfloat16']
  for history in (f32, bf16):
    assert _last(history['loss']) < 0.7 * np.mean(history['loss'][:5])
  assert _relative(_last(bf16['loss']), _last(f32['loss'])) < 0.02
  assert _relative(_last(bf16['l_d']), _last(f32['l_d'])) < 0.005
  assert _relative(_last(bf16['l_g_gan']), _last(f32['l_g_gan'])) < 0.05
