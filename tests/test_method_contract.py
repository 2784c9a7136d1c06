"""The method contract from the outside: the worked example of docs/adding_a_method.md trains as
written, and a method with two streams, three optimisers and two products gets from the loop
what the page promises (one iterator state per stream, exact resume, best-model keeping)."""

import json
import os
import pathlib
import re
import types
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import linen

from condsr_jax import config as config_lib
from condsr_jax import losses, models, train
from condsr_jax.data import streams
from condsr_jax.degrade import matlab
from condsr_jax.methods import api, common, optimizers
from condsr_jax.nn import registry
from conftest import evaluate_command_psnr

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO_TRAIN, DEMO_VAL = str(REPO / 'data' / 'demo' / 'train'), str(REPO / 'data' / 'demo' / 'val')


def _doc_blocks() -> list[str]:
  text = (REPO / 'docs' / 'adding_a_method.md').read_text()
  return re.findall(r'^```python\n(.*?)^```', text, flags=re.S | re.M)


def _exec(source: str, name: str) -> types.ModuleType:
  module = types.ModuleType(name)
  code = compile(source, f'docs/adding_a_method.md:{name}', 'exec')
  exec(code, module.__dict__)  # pylint: disable=exec-used
  return module


@pytest.fixture(scope='module')
def baseline_recipe() -> types.ModuleType:
  """The page's method module and recipe, as a user would save them."""
  method_source, recipe_source = _doc_blocks()[:2]
  if 'bicubic_baseline' not in api.registered():
    _exec(method_source, 'condsr_jax.methods.bicubic_baseline')
  return _exec(recipe_source, 'bicubic_baseline_x4')


def test_the_worked_example_trains_validates_and_exports(baseline_recipe, tmp_path, capsys):
  config = baseline_recipe.get_config('smoke')
  config.data.train, config.eval.val = DEMO_TRAIN, DEMO_VAL
  summary = train.train_and_evaluate(config, str(tmp_path))
  spec, _, meta = models.load_model_file(tmp_path / 'model.msgpack')
  assert spec.arch == 'EDSR' and meta['product'] == 'generator' and meta['step'] == 6
  assert (tmp_path / 'best_model.msgpack').is_file()
  assert json.loads((tmp_path / 'best.json').read_text())['metric'] == 'val/psnr'
  assert evaluate_command_psnr(capsys, config, tmp_path) == f'{summary.metrics["val/psnr"]:.3f}'


def test_the_worked_example_names_a_wrong_field(baseline_recipe, tmp_path):
  config = baseline_recipe.get_config('smoke')
  config.baseline.gt_size = 30
  message = 'config.baseline.gt_size = 30: must be a positive multiple of the scale 4'
  assert message in (REPO / 'docs' / 'adding_a_method.md').read_text()
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    train.train_and_evaluate(config, str(tmp_path))


# A method of the page's second shape: it learns to degrade HR crops towards an unpaired stream
# of "real" LR crops (a discriminator tells them apart) and an SR network on the generated pairs.


def _register_once(module: type[linen.Module]) -> type[linen.Module]:
  if module.__name__ not in registry.ARCHITECTURES:
    registry.register()(module)
  return module


@_register_once
class ToyDownsampler(linen.Module):
  """HR -> LR: bicubic down-sampling plus a learned residual."""
  scale: int = 4
  features: int = 8

  @linen.compact
  def __call__(self, hr: jax.Array) -> jax.Array:
    lr = matlab.imresize_matlab(hr, 1.0 / self.scale)
    x = linen.relu(linen.Conv(self.features, (3, 3))(lr))
    return lr + linen.Conv(hr.shape[-1], (3, 3))(x)


@_register_once
class ToyCritic(linen.Module):
  """One logit per image: real LR or generated."""
  features: int = 8

  @linen.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = linen.leaky_relu(linen.Conv(self.features, (3, 3), strides=2)(x), 0.2)
    return linen.Dense(1)(x.mean(axis=(1, 2)))


class LowStatsDistance:
  """An evaluator of the degradation product: |mean and std of generated LR - real LR|, on
  fixed crops of the validation folder (lower is better)."""

  def __init__(self, hr: np.ndarray, real_lr: np.ndarray):
    self.hr, self.real_lr = hr, real_lr

  def __call__(self, products: Mapping[str, api.Product]) -> api.EvalResult:
    spec, variables = products['degradation_model']
    fake = np.asarray(spec.build().apply(variables, self.hr))
    distance = (abs(fake.mean() - self.real_lr.mean()) + abs(fake.std() - self.real_lr.std()))
    return api.EvalResult({'distance': float(distance)}, report=f'LR stats distance {distance:.4f}')


@api.register('toy_unpaired')
class ToyUnpaired(api.MethodBase):
  """Two streams ('hr', 'real_lr'), three optimisers, products 'sr' and 'degradation_model'."""

  key_metric = api.KeyMetric('deg/distance', higher_is_better=False)

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = common.network_config('EDSR', num_feat=8, num_block=1)
    c.data = ml_collections.ConfigDict({'real_lr': ''})
    c.toy = ml_collections.ConfigDict({'hr_crop': 32, 'lr_crop': 8, 'adv_weight': 0.1})
    c.optim = ml_collections.ConfigDict({
        'degradation': optimizers.optimizer_config(1e-3, milestones=[3]),
        'discriminator': optimizers.optimizer_config(1e-2, kind='sgd', momentum=0.9,
                                                     schedule='constant'),
        'sr': optimizers.optimizer_config(1e-3, kind='adamw', weight_decay=1e-4,
                                          schedule='cosine', decay_steps=8, warmup_steps=2),
    })
    c.init = ml_collections.ConfigDict({'degradation': '', 'sr': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    common.validate_network(config.model, 'model')
    config_lib.check(os.path.isdir(config.data.real_lr), 'data.real_lr', 'no such folder',
                     config.data.real_lr)
    config_lib.check(config.toy.lr_crop * config.scale == config.toy.hr_crop, 'toy.lr_crop',
                     f'must be toy.hr_crop / scale = {config.toy.hr_crop // config.scale}',
                     config.toy.lr_crop)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.specs = {'sr': common.generator_spec(config),
                  'degradation': models.ModelSpec('ToyDownsampler', {'scale': config.scale}),
                  'discriminator': models.ModelSpec('ToyCritic', {})}
    self.nets = {name: spec.build() for name, spec in self.specs.items()}
    self.txs = optimizers.build_all(config.optim)

  def streams(self) -> dict[str, streams.StreamSpec]:
    d, t = self.config.data, self.config.toy
    return {'hr': common.train_stream(self.config, crop_size=t.hr_crop),
            'real_lr': streams.StreamSpec(d.real_lr, 'data.real_lr', d.batch_size, t.lr_crop,
                                          arrays=(('lq', 1),), channels=d.channels)}

  def networks(self) -> dict[str, models.ModelSpec]:
    return {'degradation': self.specs['degradation'], 'sr': self.specs['sr']}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    t, c = self.config.toy, self.config.data.channels
    inputs = {'sr': jnp.zeros((1, t.lr_crop, t.lr_crop, c)),
              'degradation': jnp.zeros((1, t.hr_crop, t.hr_crop, c)),
              'discriminator': jnp.zeros((1, t.lr_crop, t.lr_crop, c))}
    params = {}
    for (name, net), k in zip(sorted(self.nets.items()), jax.random.split(key, 3)):
      params[name] = (initial[name]['params'] if name in initial
                      else net.init(k, inputs[name])['params'])
    return api.TrainState(params=params, extra={},
                          opt={name: self.txs[name].init(params[name]) for name in params})

  def _update(self, name: str, state: api.TrainState, loss_fn):
    loss, grads = jax.value_and_grad(loss_fn)(state.params[name])
    updates, opt = self.txs[name].update(grads, state.opt[name], state.params[name])
    return loss, grads, optax.apply_updates(state.params[name], updates), opt

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext):
    hr, real = batch['hr']['gt'], batch['real_lr']['lq']

    def apply(name: str, params: Any, x: jax.Array) -> jax.Array:
      return self.nets[name].apply({'params': params}, x)

    noise = 0.01 * jax.random.normal(ctx.key, real.shape)
    fake = apply('degradation', state.params['degradation'], hr) + noise

    def critic_loss(p):
      return (losses.gan_loss(apply('discriminator', p, real), True, 'vanilla') +
              losses.gan_loss(apply('discriminator', p, jax.lax.stop_gradient(fake)), False,
                              'vanilla'))

    def degradation_loss(p):
      lr = apply('degradation', p, hr) + noise
      return self.config.toy.adv_weight * losses.gan_loss(
          apply('discriminator', state.params['discriminator'], lr), True, 'vanilla')

    def sr_loss(p):
      return losses.l1_loss(apply('sr', p, jax.lax.stop_gradient(fake)), hr)

    l_d, g_d, p_d, o_d = self._update('discriminator', state, critic_loss)
    l_g, g_g, p_g, o_g = self._update('degradation', state, degradation_loss)
    l_s, g_s, p_s, o_s = self._update('sr', state, sr_loss)
    params = {'discriminator': p_d, 'degradation': p_g, 'sr': p_s}
    new = state.replace(params=params,
                        opt={'discriminator': o_d, 'degradation': o_g, 'sr': o_s})
    metrics = {'l_critic': l_d, 'l_degradation': l_g, 'l_sr': l_s}
    return new, metrics, api.all_finite(metrics, g_d, g_g, g_s, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return {name: state.params[name] for name in ('sr', 'degradation')}

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    return {'sr': api.Product(self.specs['sr'], {'params': ema['sr']}),
            'degradation_model': api.Product(self.specs['degradation'],
                                             {'params': ema['degradation']})}

  def evaluators(self) -> dict[str, api.Evaluator]:
    rng = np.random.default_rng(0)
    t = self.config.toy
    hr = rng.random((2, t.hr_crop, t.hr_crop, self.config.data.channels), np.float32)
    real = 0.5 * rng.random((2, t.lr_crop, t.lr_crop, self.config.data.channels), np.float32)
    return {'deg': LowStatsDistance(hr, real)}


def toy_config(**overrides) -> ml_collections.ConfigDict:
  c = config_lib.default_config('toy_unpaired')
  config_lib.shrink_to_smoke(c)
  c.data.train, c.data.real_lr, c.eval.val = DEMO_TRAIN, DEMO_VAL, ''
  c.eval.every = 2
  c.update_from_flattened_dict(overrides)
  return c


def _checkpoint_params(workdir: pathlib.Path, step: int) -> Any:
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(workdir / 'checkpoints' / str(step) / 'state')['method']['params']


def test_two_streams_three_optimisers_checkpoint_resume_and_best_products(tmp_path):
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  summary = train.train_and_evaluate(toy_config(), str(straight))
  train.train_and_evaluate(toy_config(**{'train.num_steps': 4}), str(split))
  train.train_and_evaluate(toy_config(), str(split))

  # One iterator state per stream beside the method state.
  items = {n for n in os.listdir(straight / 'checkpoints' / '6') if not n.startswith('_')}
  assert items - {'commit_success.txt'} == {'data_hr', 'data_real_lr', 'state'}
  # Resuming mid-run (both streams, all three optimiser schedules) is exact.
  jax.tree.map(np.testing.assert_array_equal, _checkpoint_params(straight, 6),
               _checkpoint_params(split, 6))
  assert set(_checkpoint_params(straight, 6)) == {'degradation', 'discriminator', 'sr'}
  # Both products are exported; the best ones are kept by the lower-is-better key metric.
  assert models.load_model_file(straight / 'model.msgpack')[2]['product'] == 'sr'
  assert models.load_model_file(straight / 'degradation_model.msgpack')[0].arch == 'ToyDownsampler'
  best = json.loads((straight / 'best.json').read_text())
  assert best['metric'] == 'deg/distance' and best['value'] <= summary.metrics['deg/distance']
  meta = models.load_model_file(straight / 'best_degradation_model.msgpack')[2]
  assert meta['step'] == best['step'] and meta['deg/distance'] == best['value']
  assert models.load_model_file(straight / 'best_model.msgpack')[2]['step'] == best['step']


def test_streams_draw_independently():
  # Adding or renaming a stream leaves the seeds (and so the batches) of the others as they were.
  assert streams.stream_seed(0, 'hr') == streams.stream_seed(0, 'hr')
  assert len({streams.stream_seed(s, n) for s in (0, 1) for n in ('hr', 'real_lr', 'train')}) == 6


def test_a_wrong_field_of_a_new_method_is_named(tmp_path):
  with pytest.raises(config_lib.ConfigError, match=r'config.toy.lr_crop = 6: must be .* = 8'):
    train.train_and_evaluate(toy_config(**{'toy.lr_crop': 6}), str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match=r"config.optim.sr.schedule = 'cos': one of"):
    train.train_and_evaluate(toy_config(**{'optim.sr.schedule': 'cos'}), str(tmp_path))


# The named optimisers: BasicSR's schedules and torch's update rules.


def test_schedules_follow_basicsr_iterations():
  def lr(**kwargs) -> optax.Schedule:
    return optimizers.learning_rate(optimizers.optimizer_config(1.0, **kwargs))

  # BasicSR steps its schedulers before each update: milestone m applies from update m - 1 on.
  multistep = lr(milestones=[2, 4], gamma=0.5)
  assert [float(multistep(t)) for t in range(6)] == [1, 0.5, 0.5, 0.25, 0.25, 0.25]
  cosine = lr(schedule='cosine', decay_steps=4, min_lr=0.2)
  expected = [0.2 + 0.4 * (1 + np.cos(np.pi * i / 4)) for i in (1, 2, 4)] + [0.2]
  np.testing.assert_allclose([cosine(t) for t in (0, 1, 3, 9)], expected, rtol=1e-6)
  # The DSN's LambdaLR: full rate until decay_start, then linearly to min_lr over decay_steps.
  linear = lr(schedule='linear', decay_start=2, decay_steps=4)
  np.testing.assert_allclose([linear(t) for t in range(8)], [1, 1, 0.75, 0.5, 0.25, 0, 0, 0],
                             atol=1e-7)
  warm = lr(schedule='constant', warmup_steps=4)
  np.testing.assert_allclose([warm(t) for t in range(6)], [0.25, 0.5, 0.75, 1, 1, 1])


def _one_update(spec: ml_collections.ConfigDict, param: float, grad: float) -> float:
  tx = optimizers.build(spec)
  p, g = jnp.array([param]), jnp.array([grad])
  updates, _ = tx.update(g, tx.init(p), p)
  return float(optax.apply_updates(p, updates)[0])


def test_adam_adamw_sgd_follow_torch():
  config = optimizers.optimizer_config
  # Adam's first step moves by lr (bias-corrected m / sqrt(v)); torch's Adam adds L2 decay to the
  # gradient, so a zero gradient still moves the weight by lr; AdamW decays it by lr x wd x p.
  assert _one_update(config(0.1, schedule='constant'), 1.0, 3.0) == pytest.approx(0.9)
  assert _one_update(config(0.1, weight_decay=0.5), 2.0, 0.0) == pytest.approx(1.9)
  assert _one_update(config(0.1, kind='adamw', weight_decay=0.5), 2.0, 0.0) == pytest.approx(1.9)
  assert _one_update(config(0.1, kind='sgd'), 2.0, 3.0) == pytest.approx(1.7)
  assert _one_update(config(0.1, kind='sgd', weight_decay=0.5), 2.0, 3.0) == pytest.approx(1.6)
  assert _one_update(config(0.1, kind='sgd', clip_norm=1.0), 2.0, 3.0) == pytest.approx(1.9)


@pytest.mark.parametrize('field, value, message', [
    ('kind', 'adagrad', 'one of'),
    ('lr', 0.0, 'must be positive'),
    ('milestones', [0, 5], 'positive step counts'),
    ('decay_steps', 0, "must be positive for 'cosine'"),
])
def test_a_wrong_optimiser_field_is_named(field, value, message):
  spec = optimizers.optimizer_config(1e-3, schedule='cosine', decay_steps=10)
  spec[field] = value
  with pytest.raises(config_lib.ConfigError, match=f'config.optim.d.{field} = .*{message}'):
    optimizers.validate(spec, 'optim.d')
