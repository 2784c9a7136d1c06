"""Supervised SR with a pixel loss: Real-ESRNet (stage 1 of Real-ESRGAN) and the bicubic baselines.

One jitted step degrades the batch on the device, passes it through the training-pair pool,
takes an Adam step on the pixel (+ optional edge) loss, updates the EMA generator, and skips
the whole update when the loss or a gradient is not finite.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import losses, models
from condsr_jax.degrade import pool as pool_lib
from condsr_jax.methods import base


@flax.struct.dataclass
class SRState:
  step: jax.Array
  rng: jax.Array  # raw uint32[2] run key
  params: Any
  opt_state: Any
  ema_params: Any
  nonfinite: jax.Array  # [total skipped updates, consecutive skipped updates]
  pool: Any


class SRMethod:
  """Generator-only training; subclasses add adversarial terms (see `esrgan.py`)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.spec = base.generator_spec(config)
    self.net = self.spec.build(dtype=jnp.dtype(config.model.dtype))
    self.degradation = base.make_degradation(config)
    self.tx = base.adam(config.optim)

  def param_sampler(self):
    return self.degradation.param_sampler()

  def constants(self) -> dict[str, Any]:
    return {}

  def example_lq(self) -> jax.Array:
    size = self.config.degradation.gt_size // self.config.scale
    return jnp.zeros((1, size, size, self.config.data.channels), jnp.float32)

  def init_state(self, rng: jax.Array, init_params: Any = None) -> SRState:
    key = jax.random.wrap_key_data(rng)
    params = init_params
    if params is None:
      params = self.net.init(jax.random.fold_in(key, 1), self.example_lq())['params']
    return SRState(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
                   opt_state=self.tx.init(params), ema_params=params,
                   nonfinite=jnp.zeros((2,), jnp.int32), pool=self._init_pool())

  def _init_pool(self) -> Any:
    size = self.config.degradation.pool_size
    if not size:
      return {}
    g, s, c = self.config.degradation.gt_size, self.config.scale, self.config.data.channels
    return pool_lib.init_pool(size, {'lq': jnp.zeros((1, g // s, g // s, c)),
                                     'gt': jnp.zeros((1, g, g, c))})

  def training_pair(self, state: SRState, batch: dict[str, jax.Array], key: jax.Array
                    ) -> tuple[Any, dict[str, jax.Array]]:
    """Degrades the batch and exchanges it with the pool; returns (new pool, {'lq', 'gt'}).

    `gt` is the pixel-loss target: the USM-sharpened crop when `loss.pixel_target == 'usm'`
    (Real-ESRNet), the plain crop otherwise.
    """
    k_deg, k_pool = jax.random.split(key)
    pair = self.degradation(batch, k_deg)
    gt = pair['gt_usm'] if self.config.loss.pixel_target == 'usm' else pair['gt']
    pair = {'lq': pair['lq'], 'gt': gt}
    if not self.config.degradation.pool_size:
      return state.pool, pair
    return pool_lib.exchange(state.pool, pair, k_pool)

  def generator_loss(self, params: Any, lq: jax.Array, target: jax.Array
                     ) -> tuple[jax.Array, tuple[jax.Array, dict[str, jax.Array]]]:
    sr = self.net.apply({'params': params}, lq)
    terms = base.pixel_losses(self.config.loss, sr, target)
    return sum(terms.values()), (sr, terms)

  def train_step(self, state: SRState, batch: dict[str, jax.Array],
                 consts: dict[str, Any] | None = None) -> tuple[SRState, dict[str, jax.Array]]:
    del consts
    key = base.step_key(state.rng, state.step)
    pool, pair = self.training_pair(state, batch, jax.random.fold_in(key, 0))
    grad_fn = jax.value_and_grad(self.generator_loss, has_aux=True)
    (loss, (_, terms)), grads = grad_fn(state.params, pair['lq'], pair['gt'])
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = base.apply_updates(state.params, updates)
    ok = base.all_finite(loss, grads, params)
    new = state.replace(params=params, opt_state=opt_state, pool=pool,
                        ema_params=base.ema_update(state.ema_params, params,
                                                   self.config.train.ema_decay))
    new = base.keep_if_finite(ok, new, state)
    new = new.replace(step=state.step + 1, nonfinite=base.count_nonfinite(state.nonfinite, ok))
    return new, {'loss': loss, **terms, 'skipped': 1.0 - ok.astype(jnp.float32)}

  def inference_params(self, state: SRState) -> Any:
    return state.ema_params

  def super_resolve(self, params: Any, lq: jax.Array) -> jax.Array:
    return self.net.apply({'params': params}, lq)

  def export(self, state: SRState) -> tuple[models.ModelSpec, dict[str, Any]]:
    """The EMA generator as (spec, variables) for a model file."""
    params = jax.device_get(self.inference_params(state))
    return self.spec, {'params': jax.tree.map(np.asarray, params)}
