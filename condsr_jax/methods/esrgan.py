"""Real-ESRGAN stage 2 (and any GAN-on-a-pixel-recipe): L1 + VGG19 perceptual + adversarial.

The generator step comes first, then the discriminator step, as BasicSR's `RealESRGANModel`:
the discriminator's "real" is the plain GT (`loss.gan_target`), the L1 and perceptual targets
are the USM-sharpened crop (`loss.pixel_target`, `loss.perceptual_target`), and spectral norm
runs one power iteration per discriminator forward (three per iteration), as PyTorch in
train mode. VGG19 weights are constants passed to the step, not state (never checkpointed).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from condsr_jax import convert, losses, models
from condsr_jax.degrade import filters, pool as pool_lib
from condsr_jax.methods import base, sr
from condsr_jax.nn import vgg


@flax.struct.dataclass
class GANState(sr.SRState):
  d_params: Any
  d_stats: Any  # non-parameter discriminator variables (spectral-norm u, v)
  d_opt_state: Any


def load_vgg(config: ml_collections.ConfigDict) -> tuple[vgg.VGG19Features, Any]:
  """VGG19 features for the perceptual layers: torchvision weights, or random if allowed."""
  layers = tuple(config.loss.perceptual_layers)
  module = vgg.VGG19Features(layer_names=layers)
  if config.loss.vgg_weights:
    _, variables = convert.convert_file(config.loss.vgg_weights, arch='VGG19Features',
                                        overrides={'layer_names': layers})
    return module, variables
  if not config.loss.allow_random_vgg:
    raise ValueError('config.loss.vgg_weights is not set (see config.validate)')
  x = jnp.zeros((1, 32, 32, 3))
  return module, jax.jit(module.init)(jax.random.key(12345), x)


class ESRGANMethod(sr.SRMethod):
  """Generator + discriminator training; the generator part is `SRMethod`'s."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    d = config.discriminator
    self.d_spec = models.ModelSpec(d.arch, {'num_in_ch': config.data.channels, **d.kwargs})
    self.disc = self.d_spec.build(dtype=jnp.dtype(config.model.dtype))
    self.d_tx = base.adam(config.optim_d)
    self.use_perceptual = config.loss.perceptual_weight > 0
    self.vgg = load_vgg(config) if self.use_perceptual else None

  def constants(self) -> dict[str, Any]:
    return {'vgg': self.vgg[1]} if self.use_perceptual else {}

  def init_state(self, rng: jax.Array, init_params: Any = None,
                 init_disc: Any = None) -> GANState:
    g = super().init_state(rng, init_params)
    key = jax.random.wrap_key_data(rng)
    gt = self.config.degradation.gt_size
    x = jnp.zeros((1, gt, gt, self.config.data.channels))
    d_vars = init_disc or self.disc.init(jax.random.fold_in(key, 2), x)
    d_params = d_vars['params']
    d_stats = {k: v for k, v in d_vars.items() if k != 'params'}
    return GANState(**{f: getattr(g, f) for f in g.__dataclass_fields__},
                    d_params=d_params, d_stats=d_stats, d_opt_state=self.d_tx.init(d_params))

  def training_pair(self, state, batch, key):
    """Plain GT through the pool (as the reference's queue), then USM of the GT crop."""
    k_deg, k_pool = jax.random.split(key)
    pair = self.degradation(batch, k_deg)
    pair = {'lq': pair['lq'], 'gt': pair['gt']}
    pool = state.pool
    if self.config.degradation.pool_size:
      pool, pair = pool_lib.exchange(state.pool, pair, k_pool)
    pair['usm'] = filters.usm_sharp(pair['gt'])
    return pool, pair

  def _disc(self, d_params, d_stats, x):
    out, mutated = self.disc.apply({'params': d_params, **d_stats}, x, update_stats=True,
                                   mutable=list(d_stats))
    return out, dict(mutated)

  def train_step(self, state: GANState, batch: dict[str, jax.Array],
                 consts: dict[str, Any] | None = None) -> tuple[GANState, dict[str, jax.Array]]:
    cfg = self.config.loss
    key = base.step_key(state.rng, state.step)
    pool, pair = self.training_pair(state, batch, jax.random.fold_in(key, 0))
    target = {t: pair['usm'] if cfg[f'{t}_target'] == 'usm' else pair['gt']
              for t in ('pixel', 'perceptual', 'gan')}
    features = None
    if self.use_perceptual:
      module = self.vgg[0]
      features = lambda im: module.apply(consts['vgg'], im)  # pylint: disable=unnecessary-lambda-assignment

    def g_loss(params):
      out = self.net.apply({'params': params}, pair['lq'])
      terms = base.pixel_losses(cfg, out, target['pixel'])
      if self.use_perceptual:
        percep, style = losses.perceptual_loss(features, out, target['perceptual'],
                                               dict(cfg.perceptual_layers))
        terms['l_percep'] = cfg.perceptual_weight * percep
        del style
      logits, stats = self._disc(state.d_params, state.d_stats, out)
      terms['l_g_gan'] = cfg.gan_weight * losses.gan_loss(logits, True, cfg.gan_type,
                                                          for_discriminator=False)
      return sum(terms.values()), (out, stats, terms)

    (g_total, (out, d_stats, terms)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
        state.params)
    updates, opt_state = self.tx.update(g_grads, state.opt_state, state.params)
    params = base.apply_updates(state.params, updates)

    fake = jax.lax.stop_gradient(out)

    def d_loss(d_params):
      real_logits, stats = self._disc(d_params, d_stats, target['gan'])
      fake_logits, stats = self._disc(d_params, stats, fake)
      l_real = losses.gan_loss(real_logits, True, cfg.gan_type)
      l_fake = losses.gan_loss(fake_logits, False, cfg.gan_type)
      return l_real + l_fake, (stats, {'l_d_real': l_real, 'l_d_fake': l_fake,
                                       'out_d_real': jnp.mean(real_logits),
                                       'out_d_fake': jnp.mean(fake_logits)})

    (d_total, (d_stats, d_terms)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        state.d_params)
    d_updates, d_opt_state = self.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = base.apply_updates(state.d_params, d_updates)

    ok = base.all_finite(g_total, d_total, g_grads, d_grads, params, d_params)
    new = state.replace(
        params=params, opt_state=opt_state, pool=pool,
        ema_params=base.ema_update(state.ema_params, params, self.config.train.ema_decay),
        d_params=d_params, d_stats=d_stats, d_opt_state=d_opt_state)
    new = base.keep_if_finite(ok, new, state)
    new = new.replace(step=state.step + 1, nonfinite=base.count_nonfinite(state.nonfinite, ok))
    return new, {'loss': g_total, 'l_d': d_total, **terms, **d_terms,
                 'skipped': 1.0 - ok.astype(jnp.float32)}
