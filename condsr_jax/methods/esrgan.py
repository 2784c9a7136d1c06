"""Real-ESRGAN stage 2 (and any GAN-on-a-pixel-recipe): L1 + VGG19 perceptual + adversarial.

The generator step comes first, then the discriminator step, as BasicSR's `RealESRGANModel`:
the discriminator's "real" is the plain GT (`loss.gan_target`), the L1 and perceptual targets
are the USM-sharpened crop (`loss.pixel_target`, `loss.perceptual_target`), and spectral norm
runs one power iteration per discriminator forward (three per iteration), as PyTorch in
train mode. VGG19 weights are constants passed to the step, not state (never checkpointed).
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from condsr_jax import losses, models
from condsr_jax.degrade import pipelines
from condsr_jax.methods import api, common, optimizers, sr

GAN_TYPES = ('vanilla', 'lsgan', 'hinge', 'wgan_softplus')


def gan_loss_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'gan_type': 'vanilla', 'gan_weight': 0.1,
                                    'gan_target': 'gt'})  # what D sees as real: gt | usm


@api.register('esrgan')
class ESRGANMethod(api.MethodBase):
  """Generator + U-Net discriminator; pixel, perceptual and adversarial generator losses."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = common.network_config('RRDBNet', num_feat=64, num_block=23, num_grow_ch=32)
    c.discriminator = common.network_config('UNetDiscriminatorSN', num_feat=64,
                                            skip_connection=True)
    c.degradation = pipelines.default_config('bicubic', 4)
    c.pool = sr.pool_config()
    c.loss = common.pixel_loss_config()
    c.loss.update(common.perceptual_loss_config())
    c.loss.update(gan_loss_config())
    c.optim = ml_collections.ConfigDict({'generator': optimizers.optimizer_config(1e-4),
                                         'discriminator': optimizers.optimizer_config(1e-4)})
    c.init = ml_collections.ConfigDict({'generator': '', 'discriminator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    common.validate_network(config.model, 'model')
    common.validate_network(config.discriminator, 'discriminator')
    common.validate_degradation(config)
    sr.validate_pool(config)
    lo = config.loss
    common.validate_pixel_loss(lo)
    common.validate_perceptual_loss(lo)
    common.check(lo.gan_type in GAN_TYPES, 'loss.gan_type', f'one of {GAN_TYPES}', lo.gan_type)
    common.check(lo.gan_target in ('gt', 'usm'), 'loss.gan_target', "'gt' or 'usm'",
                 lo.gan_target)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec = common.generator_spec(config)
    self.net = common.build_network(config, self.spec, config.model)
    d = config.discriminator
    self.d_spec = models.ModelSpec(d.arch, {'num_in_ch': config.data.channels, **d.kwargs})
    self.disc = common.build_network(config, self.d_spec, d)
    self.degradation = common.make_degradation(config)
    self.tx = optimizers.build_all(config.optim)
    self.vgg = (common.load_vgg(config.loss, common.compute_dtype(config))
                if config.loss.perceptual_weight > 0 else None)

  def streams(self):
    return {'train': common.pair_stream(self.config, self.degradation)}

  def networks(self):
    return {'generator': self.spec, 'discriminator': self.d_spec}

  def constants(self) -> dict[str, Any]:
    return {'vgg': self.vgg[1]} if self.vgg else {}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    gt, s, c = self.config.degradation.gt_size, self.config.scale, self.config.data.channels
    k_g, k_d = jax.random.split(key)
    g = initial.get('generator') or self.net.init(k_g, jnp.zeros((1, gt // s, gt // s, c)))
    d = initial.get('discriminator') or self.disc.init(k_d, jnp.zeros((1, gt, gt, c)))
    params = {'generator': g['params'], 'discriminator': d['params']}
    return api.TrainState(
        params=params, opt={name: self.tx[name].init(p) for name, p in params.items()},
        extra={'pool': sr.init_pool(self.config, gt),
               'd_stats': {k: v for k, v in d.items() if k != 'params'}})

  def _disc(self, d_params: Any, d_stats: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    """A train-mode D forward: one power iteration per spectral-norm conv, new u/v returned."""
    out, mutated = self.disc.apply({'params': d_params, **d_stats}, x, update_stats=True,
                                   mutable=list(d_stats))
    return out, dict(mutated)

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    cfg = self.config.loss
    k_deg, k_pool = jax.random.split(ctx.key)
    pair = common.training_pair(self.degradation, batch['train'], k_deg)
    # The plain GT goes through the pool (as the reference's queue), then USM of the GT crop.
    pool, pair = sr.exchange(self.config, state.extra['pool'],
                             {'lq': pair['lq'], 'gt': pair['gt']}, k_pool)
    usm = sr.usm_target(self.config, pair['gt'])
    target = {t: usm if cfg[f'{t}_target'] == 'usm' else pair['gt']
              for t in ('pixel', 'perceptual', 'gan')}
    percep = (common.perceptual_term(cfg, self.vgg[0], ctx.consts['vgg']) if self.vgg
              else None)
    g_params, d_params = state.params['generator'], state.params['discriminator']

    def g_loss(params):
      out = self.net.apply({'params': params}, pair['lq'])
      terms = common.pixel_losses(cfg, out, target['pixel'])
      if percep is not None:
        terms['l_percep'] = percep(out, target['perceptual'])
      logits, stats = self._disc(d_params, state.extra['d_stats'], out)
      terms['l_g_gan'] = cfg.gan_weight * losses.gan_loss(logits, True, cfg.gan_type,
                                                          for_discriminator=False)
      return sum(terms.values()), (out, stats, terms)

    (g_total, (out, d_stats, terms)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        g_params)
    updates, g_opt = self.tx['generator'].update(g_grads, state.opt['generator'], g_params)
    g_params = optax.apply_updates(g_params, updates)
    fake = jax.lax.stop_gradient(out)  # the pre-update generator's output, as the reference

    def d_loss(params):
      real_logits, stats = self._disc(params, d_stats, target['gan'])
      fake_logits, stats = self._disc(params, stats, fake)
      l_real = losses.gan_loss(real_logits, True, cfg.gan_type)
      l_fake = losses.gan_loss(fake_logits, False, cfg.gan_type)
      return l_real + l_fake, (stats, {'l_d_real': l_real, 'l_d_fake': l_fake,
                                       'out_d_real': jnp.mean(real_logits),
                                       'out_d_fake': jnp.mean(fake_logits)})

    (d_total, (d_stats, d_terms)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d_params)
    d_updates, d_opt = self.tx['discriminator'].update(d_grads, state.opt['discriminator'],
                                                       d_params)
    d_params = optax.apply_updates(d_params, d_updates)
    new = api.TrainState(params={'generator': g_params, 'discriminator': d_params},
                         opt={'generator': g_opt, 'discriminator': d_opt},
                         extra={'pool': pool, 'd_stats': d_stats})
    finite = api.all_finite(g_total, d_total, g_grads, d_grads, g_params, d_params)
    return new, {'loss': g_total, 'l_d': d_total, **terms, **d_terms}, finite

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['generator']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    return {'generator': api.Product(self.spec, {'params': ema}),
            'discriminator': api.Product(self.d_spec, {'params': state.params['discriminator'],
                                                       **state.extra['d_stats']})}

  def evaluators(self) -> dict[str, api.Evaluator]:
    return common.sr_validation(self.config, self.degradation)
