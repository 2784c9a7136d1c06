"""DASR-Wei stage 3 (Wei et al., CVPR 2021): domain-distance aware SR training.

Streams, as the official `DASR_Model` with `LRHR_wavelet_unpairEq_fake_w_dataset`:

- 'train': generated pairs. By default an aligned folder (`data.train`) with `gt/` (clean HR),
  `lq/` (the DSN's LR of it) and, with `dasr_dd.domain_distance`, `dist/` (the LR-sized
  domain-distance map, `condsr_jax.adapt` writes all three); or any synthesising
  `degradation.kind` (bicubic pairs, a learned PDM-SR model), whose pairs get weight 1;
- with `dasr_dd.gan_weight` > 0, 'real_lr' (`data.real_lr`, LR crops of the real source domain)
  and 'hr' (`data.unpaired_hr`, clean HR crops drawn independently of the LR; by default the
  HR of `data.train`, its `gt/` for generated pairs).

Generator loss on the generated pairs: `pixel_weight` x mean(map x |SR - HR|) (the map
bilinearly upsampled to HR size; high where the DSN's discriminator took the LR for real, so
pairs that look like the real domain teach more) + `low_weight` x L1 of the low-frequency bands
(half the Haar LL, or the Gaussian low-pass) + `perceptual_weight` x a perceptual distance (the
official LPIPS). On the real LR: `gan_weight` x the GAN loss of the discriminator (an
`NLayerPatchGAN`) on the high-frequency bands of SR(real LR), which it learns to tell from those
of the unpaired HR ("domain-gap aware training"). Each loss weight is applied once; the official
code multiplies the pixel weight (and RaGAN's GAN weight) in twice, the same at its weight 1.
"""

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from condsr_jax import losses, models
from condsr_jax.degrade import frequency
from condsr_jax.methods import api, common, dsn, optimizers

FILTERS = ('wavelet', 'gau')
GAN_TYPES = dsn.GAN_TYPES
MILESTONES = (35_000, 80_000, 100_000, 150_000)


def dasr_dd_config() -> ml_collections.ConfigDict:
  """The method's own section: loss weights, band filter, what the real-LR half trains."""
  c = common.perceptual_distance_config(1.0)  # LPIPS-alex, weight 1, as the official
  c.update({
      'domain_distance': True,  # weight the pixel L1 by the maps in dist/ of data.train
      'pixel_weight': 1.0,
      'low_weight': 1.0,  # L1 of the low-frequency bands (the official sup_LL)
      'gan_weight': 0.005,  # the HF GAN on SR(real LR) (gan_H_target); 0: no real LR read
      'gan_type': 'vanilla',  # vanilla | ragan
      'filter': 'wavelet',  # wavelet (Haar LL / 2 and detail bands) | gau (Gaussian low/high)
      'kernel_size': 9,  # the 'gau' filter's (train_DASR.json)
  })
  return c


def frequency_bands(x: jax.Array, kind: str, kernel_size: int) -> tuple[jax.Array, jax.Array]:
  """(low, high) bands of [B, H, W, C] as the official `DASR_Model.fs(x, norm=True)`.

  'wavelet': LL / 2 and the 3C normalised detail bands, both at half size. 'gau': the padded
  Gaussian low-pass and FilterHigh's output normalised a second time (0.75 + 0.25 (x - low)),
  as the official code does.
  """
  if kind == 'wavelet':
    return frequency.wavelet_low_half(x), frequency.wavelet_high(x, 'cat')
  low = frequency.filter_low(x, 'gau', kernel_size, padding=True)
  return low, 0.5 + 0.5 * frequency.filter_high(x, 'gau', kernel_size)


def band_channels(kind: str, channels: int) -> int:
  """Channels of the high band the discriminator reads."""
  return 3 * channels if kind == 'wavelet' else channels


@api.register('dasr_dd')
class DomainDistanceSRMethod(api.MethodBase):
  """An SR generator on generated pairs weighted by domain-distance maps, with an adversarial
  loss on the high frequencies of its output on real LR."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({'real_lr': '', 'unpaired_hr': ''})
    c.model = common.network_config('RRDBNet', num_feat=64, num_block=23, num_grow_ch=32)
    c.discriminator = common.network_config('NLayerPatchGAN', num_feat=64, n_layers=2)
    c.degradation = common.paired_config(128)
    c.dasr_dd = dasr_dd_config()
    c.optim = ml_collections.ConfigDict({
        name: optimizers.optimizer_config(1e-4, b2=0.999, milestones=MILESTONES)
        for name in ('generator', 'discriminator')})
    c.init = ml_collections.ConfigDict({'generator': '', 'discriminator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    check, d = common.check, config.dasr_dd
    common.validate_network(config.model, 'model')
    common.validate_network(config.discriminator, 'discriminator')
    common.validate_degradation(config)
    check(config.discriminator.arch == 'NLayerPatchGAN', 'discriminator.arch',
          'the SRN discriminator is an NLayerPatchGAN', config.discriminator.arch)
    check(not d.domain_distance or config.degradation.kind == common.PAIRED,
          'dasr_dd.domain_distance', "the maps are read from dist/ of a 'paired' data.train; "
          'synthesised pairs have none (set it False)', d.domain_distance)
    for field in ('pixel_weight', 'low_weight', 'gan_weight'):
      check(d[field] >= 0, f'dasr_dd.{field}', 'must be >= 0', d[field])
    check(d.gan_type in GAN_TYPES, 'dasr_dd.gan_type', f'one of {GAN_TYPES}', d.gan_type)
    check(d.filter in FILTERS, 'dasr_dd.filter', f'one of {FILTERS}', d.filter)
    check(d.kernel_size % 2 == 1, 'dasr_dd.kernel_size', 'must be odd', d.kernel_size)
    common.validate_perceptual_distance(d, 'dasr_dd')
    if d.gan_weight > 0:
      check(bool(config.data.real_lr), 'data.real_lr',
            'the GAN on real LR needs a folder of real LR images (or set dasr_dd.gan_weight 0)',
            config.data.real_lr)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    d, c = config.dasr_dd, config.data.channels
    self.spec = common.generator_spec(config)
    self.net = common.build_network(config, self.spec, config.model)
    self.d_spec = models.ModelSpec(
        'NLayerPatchGAN', {**config.discriminator.kwargs,
                           'in_channels': band_channels(d.filter, c)})
    self.disc = common.build_network(config, self.d_spec, config.discriminator)
    self.degradation = common.make_degradation(config)
    self.gt_size = config.degradation.gt_size
    self.perceptual = (common.load_perceptual_distance(d, common.compute_dtype(config))
                       if d.perceptual_weight > 0 else None)
    self.tx = optimizers.build_all(config.optim)

  def bands(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    d = self.config.dasr_dd
    return frequency_bands(x, d.filter, d.kernel_size)

  def streams(self):
    c, d = self.config, self.config.dasr_dd
    if self.degradation is None:
      lr = ('lq', 'dist') if d.domain_distance else ('lq',)
      out = {'train': common.train_stream(
          c, crop_size=self.gt_size, arrays=(('gt', 1), *((n, c.scale) for n in lr)))}
    else:
      out = {'train': common.pair_stream(c, self.degradation)}
    if d.gan_weight > 0:
      out['real_lr'] = common.train_stream(c, crop_size=self.gt_size // c.scale,
                                           arrays=(('lq', 1),), folder='real_lr')
      hr = common.train_stream(c, crop_size=self.gt_size,
                               folder='unpaired_hr' if c.data.unpaired_hr else 'train')
      if not c.data.unpaired_hr and self.degradation is None:  # the pairs' HR, drawn apart
        hr = dataclasses.replace(hr, source=f'{c.data.train}/gt', field='data.train (its gt/)')
      out['hr'] = hr
    return out

  def networks(self):
    return {'generator': self.spec, 'discriminator': self.d_spec}

  def constants(self) -> dict[str, Any]:
    return {'perceptual': self.perceptual[1]} if self.perceptual else {}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    k_g, k_d = jax.random.split(key)
    c, s, gt = self.config.data.channels, self.config.scale, self.gt_size
    gen = initial.get('generator') or self.net.init(k_g, jnp.zeros((1, gt // s, gt // s, c)))
    params = {'generator': gen['params']}
    if self.config.dasr_dd.gan_weight > 0:
      high = self.bands(jnp.zeros((1, gt, gt, c)))[1]
      disc = initial.get('discriminator') or self.disc.init(k_d, high)
      params['discriminator'] = disc['params']
    return api.TrainState(params=params,
                          opt={name: self.tx[name].init(p) for name, p in params.items()},
                          extra={})

  def _pixel_weights(self, batch: Mapping[str, jax.Array], hr_shape: tuple[int, ...]
                     ) -> jax.Array:
    """The domain-distance map of each pair at HR size (bilinear, as the official
    `F.interpolate(..., align_corners=False)`), or 1."""
    if not self.config.dasr_dd.domain_distance:
      return jnp.ones((), jnp.float32)
    dist = batch['dist'][..., :1]  # grey maps read as as many equal channels as the images
    return jax.image.resize(dist, (*hr_shape[:3], 1), 'linear')

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    d = self.config.dasr_dd
    pair = common.training_pair(self.degradation, batch['train'], ctx.key)
    lq, gt = pair['lq'], pair['gt']
    weights = self._pixel_weights(batch['train'], gt.shape)
    low_gt = self.bands(gt)[0]
    use_gan, n = d.gan_weight > 0, lq.shape[0]
    d_params = state.params.get('discriminator')
    high_hr = real_logits = None
    if use_gan:  # SR of the generated and the real LR in one pass
      lq = jnp.concatenate([lq, batch['real_lr']['lq']])
      high_hr = self.bands(batch['hr']['gt'])[1]
      real_logits = self.disc.apply({'params': d_params}, high_hr)

    def generator_loss(params):
      sr = self.net.apply({'params': params}, lq)
      sr_pair = sr[:n]
      terms = {'l_pix': d.pixel_weight * jnp.mean(weights * jnp.abs(sr_pair - gt)),
               'l_low': d.low_weight * losses.l1_loss(self.bands(sr_pair)[0], low_gt)}
      if self.perceptual:
        distance, variables = self.perceptual[0], ctx.consts['perceptual']
        terms['l_percep'] = d.perceptual_weight * distance(variables, sr_pair, gt)
      high_real_sr = None
      if use_gan:
        high_real_sr = self.bands(sr[n:])[1]
        fake_logits = self.disc.apply({'params': d_params}, high_real_sr)
        terms['l_gan'] = d.gan_weight * dsn.generator_gan_loss(fake_logits, real_logits,
                                                               d.gan_type)
      return sum(terms.values()), (high_real_sr, terms)

    l_g, (high_real_sr, terms), g_grads, g_params, g_opt = common.optimizer_step(
        self.tx['generator'], state.params['generator'], state.opt['generator'], generator_loss)
    params, opt = {'generator': g_params}, {'generator': g_opt}
    metrics, grads = {'loss': l_g, **terms}, [g_grads]
    if use_gan:
      fake = jax.lax.stop_gradient(high_real_sr)  # the pre-update generator's, as the reference

      def disc_loss(p):
        real_out, fake_out = (self.disc.apply({'params': p}, x) for x in (high_hr, fake))
        loss = dsn.discriminator_loss(real_out, fake_out, d.gan_type)
        return loss if d.gan_type == 'ragan' else loss / 2, {
            'd_real': jnp.mean(jax.nn.sigmoid(real_out)),
            'd_fake': jnp.mean(jax.nn.sigmoid(fake_out))}

      l_d, d_terms, d_grads, params['discriminator'], opt['discriminator'] = (
          common.optimizer_step(self.tx['discriminator'], d_params,
                                state.opt['discriminator'], disc_loss))
      metrics.update(l_d=l_d, **d_terms)
      grads.append(d_grads)
    new = api.TrainState(params=params, opt=opt, extra={})
    return new, metrics, api.all_finite(metrics, *grads, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['generator']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    """The SR generator (`model.msgpack`) and, when trained, the discriminator."""
    out = {'generator': api.Product(self.spec, {'params': ema})}
    if 'discriminator' in state.params:
      out['discriminator'] = api.Product(self.d_spec,
                                         {'params': state.params['discriminator']})
    return out

  def evaluators(self) -> dict[str, api.Evaluator]:
    return common.sr_validation(self.config, self.degradation)

