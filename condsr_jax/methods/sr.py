"""Supervised SR with a pixel loss: Real-ESRNet (stage 1 of Real-ESRGAN) and the bicubic baselines.

One jitted step degrades the batch on the device (or reads paired LR), passes it through the
training-pair pool, and takes an optimiser step on the pixel (+ optional edge) loss; the loop
keeps the EMA generator and skips non-finite updates. BasicSR's `SRModel` step.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from condsr_jax.degrade import filters, pipelines
from condsr_jax.methods import api, common, optimizers, pool as pool_lib


def pool_config() -> ml_collections.ConfigDict:
  """Real-ESRGAN's training-pair pool (`queue_size`); `reference`: its exact shuffle."""
  return ml_collections.ConfigDict({'size': 0, 'reference': False})


def validate_pool(config: ml_collections.ConfigDict) -> None:
  size, batch = config.pool.size, config.data.batch_size
  common.check(size == 0 or size >= batch, 'pool.size', f'0 or at least the batch size {batch}',
               size)
  common.check(not (size and config.pool.reference) or size % batch == 0, 'pool.size',
               f'the reference pool needs a multiple of the batch size {batch}', size)


def init_pool(config: ml_collections.ConfigDict, gt_size: int) -> Any:
  """An empty pool of (LQ, GT) crops, or {} without one."""
  if not config.pool.size:
    return {}
  s, c = config.scale, config.data.channels
  return pool_lib.init_pool(config.pool.size, {
      'lq': jnp.zeros((1, gt_size // s, gt_size // s, c)),
      'gt': jnp.zeros((1, gt_size, gt_size, c))})


def usm_target(config: ml_collections.ConfigDict, gt: jax.Array) -> jax.Array:
  """BasicSR's `USMSharp` of GT crops, with the degradation's `usm_*` settings where it has them
  (the Real-ESRGAN pipeline's), else USMSharp's defaults."""
  d = config.degradation
  return filters.usm_sharp(gt, d.get('usm_weight', 0.5), d.get('usm_threshold', 10.0),
                           d.get('usm_radius', 50))


def exchange(config: ml_collections.ConfigDict, pool: Any, pair: dict[str, jax.Array],
             key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
  """This step's pair after the pool (unchanged without one)."""
  if not config.pool.size:
    return pool, pair
  return pool_lib.exchange(pool, pair, key, reference=config.pool.reference)


@api.register('sr')
class SRMethod(api.MethodBase):
  """One generator trained with pixel losses on synthesised or paired LR."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = common.network_config('RRDBNet', num_feat=64, num_block=23, num_grow_ch=32)
    c.degradation = pipelines.default_config('bicubic', 4)
    c.pool = pool_config()
    c.loss = common.pixel_loss_config()
    c.optim = ml_collections.ConfigDict({'generator': optimizers.optimizer_config(2e-4)})
    c.init = ml_collections.ConfigDict({'generator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    common.validate_network(config.model, 'model')
    common.validate_degradation(config)
    validate_pool(config)
    common.validate_pixel_loss(config.loss)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec = common.generator_spec(config)
    self.net = common.build_network(config, self.spec, config.model)
    self.degradation = common.make_degradation(config)
    self.tx = optimizers.build(config.optim.generator)

  def streams(self):
    return {'train': common.pair_stream(self.config, self.degradation)}

  def networks(self):
    return {'generator': self.spec}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    gt = self.config.degradation.gt_size
    if 'generator' in initial:
      params = initial['generator']['params']
    else:
      lq = jnp.zeros((1, gt // self.config.scale, gt // self.config.scale,
                            self.config.data.channels))
      params = self.net.init(key, lq)['params']
    return api.TrainState(params={'generator': params}, opt={'generator': self.tx.init(params)},
                          extra={'pool': init_pool(self.config, gt)})

  def pixel_target(self, pair: dict[str, jax.Array]) -> jax.Array:
    """The L1 target: the USM-sharpened crop when `loss.pixel_target == 'usm'` (Real-ESRNet).
    Paired data brings no `gt_usm` and trains against its GT, as Real-ESRNet on paired data."""
    if self.config.loss.pixel_target == 'usm' and 'gt_usm' in pair:
      return pair['gt_usm']
    return pair['gt']

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    k_deg, k_pool = jax.random.split(ctx.key)
    pair = common.training_pair(self.degradation, batch['train'], k_deg)
    pool, pair = exchange(self.config, state.extra['pool'],
                          {'lq': pair['lq'], 'gt': self.pixel_target(pair)}, k_pool)
    params = state.params['generator']

    def loss_fn(p):
      terms = common.pixel_losses(self.config.loss, self.net.apply({'params': p}, pair['lq']),
                                  pair['gt'])
      return sum(terms.values()), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = self.tx.update(grads, state.opt['generator'], params)
    params = optax.apply_updates(params, updates)
    new = state.replace(params={'generator': params}, opt={'generator': opt},
                        extra={'pool': pool})
    return new, {'loss': loss, **terms}, api.all_finite(loss, grads, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['generator']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    return {'generator': api.Product(self.spec, {'params': ema})}

  def evaluators(self) -> dict[str, api.Evaluator]:
    return common.sr_validation(self.config, self.degradation)
