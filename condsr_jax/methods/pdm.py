"""PDM-SR training (Luo et al., CVPR 2022): a probabilistic degradation model learnt from
unpaired real LR images, and an SR network trained on the pairs it synthesises.

Two independent streams: clean HR crops (`data.train`, the target domain) and real-LR crops
(`data.real_lr`, the source domain), different images in different numbers. Each step, as the
official `DegSRModel`:

1. the degradation model (`DegModel`, train-mode BatchNorm, random codes drawn per sample from
   the step key) turns the HR crops into fake LR; it is updated with the LSGAN generator loss of
   the LR PatchGAN, `pdm.lr_adv_weight` x mean (D(fake) - 1)^2, plus `pdm.noise_weight` x
   mean(noise^2) (the official `noise_mean`); then the discriminator with
   [mean (D(real) - 1)^2 + mean D(fake)^2] / 2 on the same (stopped) fake LR;
2. the SR network is updated on (straight_through_quantize(fake LR), HR), the LR's gradient
   stopped, so the SR loss never reaches the degradation model: the pixel loss and, in the
   official perceptual configs (percep/*.yml), `loss.perceptual_weight` x the VGG19 perceptual
   loss (conv5_4, pre-ReLU, L1) and `pdm.sr_gan_weight` x the generator loss of a second
   PatchGAN on HR (`hr_discriminator`); that discriminator is then updated on HR vs the
   (stopped) SR output, as the esrgan method's. With both weights 0 (the psnr configs) neither
   the VGG19 nor the HR discriminator is built.

`pdm.train_degradation` and `pdm.train_sr` select the official modes: both (joint,
psnr/2020Track1), the degradation model alone (deg/*.yml), or SR on a frozen degradation model
(`init.degradation` a model file, train_degradation False: the model then runs with its running
BatchNorm statistics and no real-LR stream is read).

Diagnostics per step (TensorBoard scalars 'train/...'): `kernel_width` (the sampled
kernels' spread in HR pixels, see `kernel_width`), `kernel_offset` (their centre of mass from
the centre tap, HR pixels: a shift no LR discriminator sees, penalised by
`pdm.kernel_centre_weight`, off as in the reference), `noise_std`, `d_real`, `d_fake`. The
official noise branch often collapses to zero (issues #15, #36, #38): the first step from
`pdm.collapse_warmup` on whose `noise_std` is below `pdm.collapse_noise_std` logs one warning.
At each evaluation the evaluator 'deg' shows kernels and noise maps
sampled at fixed codes (TensorBoard images 'deg/kernels', 'deg/noise').
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import losses, models
from condsr_jax.degrade import kernels
from condsr_jax.methods import api, common, esrgan, optimizers
from condsr_jax.nn import pdm as pdm_nn

MILESTONES = (50_000, 100_000, 150_000)


def pdm_config() -> ml_collections.ConfigDict:
  """The method's own section: crops, loss weights, modes, the noise-collapse check."""
  return ml_collections.ConfigDict({
      'hr_crop': 128,  # HR crop; real-LR crops are hr_crop / scale
      'lr_adv_weight': 1.0,
      'noise_weight': 100.0,
      # Not in the reference: weight of the squared distance (HR pixels) of each kernel's centre
      # of mass from its centre tap (KernelGAN's centralisation). An LR discriminator cannot see
      # a shift, so learned kernels drift; SR trained on the shifted pairs learns the shift.
      'kernel_centre_weight': 0.0,
      'train_degradation': True,
      'train_sr': True,
      'collapse_noise_std': 0.5 / 255,  # noise std (0..1 images) under which the branch collapsed
      'collapse_warmup': 1000,  # steps before the collapse check starts
      'sr_gan_weight': 0.0,  # the HR PatchGAN's generator loss on the SR output; 0: no HR D
      # The reference text does not name the SR GAN's type: BasicSR's (and esrgan's) vanilla.
      'sr_gan_type': 'vanilla',
  })


def kernel_width(kernel: jax.Array) -> jax.Array:
  """Per kernel [B, k, k]: sqrt((sigma_x^2 + sigma_y^2) / 2), in HR pixels (sigma for an
  isotropic Gaussian; sqrt((k^2 - 1) / 12) for a uniform k x k kernel)."""
  sigma_x, sigma_y = kernels.widths(kernel)
  return jnp.sqrt((jnp.square(sigma_x) + jnp.square(sigma_y)) / 2)


def lsgan_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
  """The official LR discriminator loss: [mean (D(real) - 1)^2 + mean D(fake)^2] / 2."""
  return (losses.gan_loss(real, True, 'lsgan') + losses.gan_loss(fake, False, 'lsgan')) / 2


class DegradationSamples:
  """What the degradation product samples at fixed codes on a flat grey HR image, for
  TensorBoard: images 'kernels' (each scaled to its peak, 4x nearest) and 'noise' (0.5 + 10 x
  noise), scalars 'kernel_width' and 'noise_std'. Deterministic, so runs and resumes compare."""

  def __init__(self, hr_size: int, count: int = 4, seed: int = 0):
    self.hr = np.full((count, hr_size, hr_size, 3), 0.5, np.float32)
    self.seed = seed

  def __call__(self, products: Mapping[str, api.Product]) -> api.EvalResult:
    spec, variables = products['degradation']
    _, kernel, noise = spec.build().apply(variables, self.hr,
                                          rngs={'latent': jax.random.key(self.seed)})
    kernel = np.asarray(kernel)
    peaks = kernel / kernel.max(axis=(1, 2), keepdims=True)
    scalars = {'kernel_width': float(np.mean(kernel_width(jnp.asarray(kernel))))}
    shown = {'kernels': np.repeat(np.repeat(peaks, 4, axis=1), 4, axis=2)[..., None]}
    if noise is not None:
      scalars['noise_std'] = float(np.std(noise))
      shown['noise'] = np.clip(0.5 + 10 * np.asarray(noise), 0, 1)
    report = '  '.join(f'{k} {v:.4g}' for k, v in scalars.items())
    return api.EvalResult(scalars, shown, f'sampled degradations: {report}')


@api.register('pdm_sr')
class PDMSRMethod(api.MethodBase):
  """DegModel + LR PatchGAN (unpaired real LR) and an SR network on the synthesised pairs,
  optionally with a perceptual loss and an HR PatchGAN."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({'real_lr': ''})
    c.model = common.network_config('EDSR', num_feat=64, num_block=16)  # EDSR-baseline
    c.degradation_model = common.network_config(
        'DegModel', kernel_nc=3, kernel_nf=64, kernel_nb=8, ksize=11, noise=True, noise_nc=3,
        noise_nf=64, noise_nb=8, noise_dim=3, noise_mix=True)
    c.discriminator = common.network_config('PatchGANDiscriminator', nf=64, nb=3, stride=1)
    c.hr_discriminator = common.network_config('PatchGANDiscriminator', nf=64, nb=3, stride=1)
    c.pdm = pdm_config()
    c.loss = common.pixel_loss_config()
    c.loss.update(common.perceptual_loss_config())
    c.optim = ml_collections.ConfigDict({
        name: optimizers.optimizer_config(2e-4, b2=0.999, milestones=MILESTONES, gamma=0.5,
                                          clip_norm=50.0)
        for name in ('degradation', 'discriminator', 'sr', 'hr_discriminator')})
    c.init = ml_collections.ConfigDict({'degradation': '', 'sr': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    check, p = common.check, config.pdm
    common.validate_network(config.model, 'model')
    common.validate_network(config.degradation_model, 'degradation_model')
    common.validate_network(config.discriminator, 'discriminator')
    common.validate_network(config.hr_discriminator, 'hr_discriminator')
    check(config.degradation_model.arch == 'DegModel', 'degradation_model.arch',
          'PDM-SR trains a DegModel', config.degradation_model.arch)
    check(config.discriminator.arch == 'PatchGANDiscriminator', 'discriminator.arch',
          'PDM-SR trains a PatchGANDiscriminator', config.discriminator.arch)
    check(config.hr_discriminator.arch == 'PatchGANDiscriminator', 'hr_discriminator.arch',
          'PDM-SR trains a PatchGANDiscriminator', config.hr_discriminator.arch)
    check(config.data.channels == 3, 'data.channels', 'the DegModel degrades RGB images',
          config.data.channels)
    common.validate_pixel_loss(config.loss)
    check(config.loss.pixel_target == 'gt', 'loss.pixel_target', "PDM-SR's SR target is 'gt'",
          config.loss.pixel_target)
    common.validate_perceptual_loss(config.loss)
    check(config.loss.perceptual_target == 'gt', 'loss.perceptual_target',
          "PDM-SR's SR target is 'gt'", config.loss.perceptual_target)
    check(p.sr_gan_type in esrgan.GAN_TYPES, 'pdm.sr_gan_type', f'one of {esrgan.GAN_TYPES}',
          p.sr_gan_type)
    check(p.train_sr or not (p.sr_gan_weight or config.loss.perceptual_weight), 'pdm.train_sr',
          'the perceptual and SR GAN losses train the SR network', p.train_sr)
    ksize = config.degradation_model.kwargs.get('ksize', 21)
    check(p.hr_crop % config.scale == 0 and p.hr_crop > ksize, 'pdm.hr_crop',
          f'must be a multiple of the scale {config.scale} and larger than the kernel ({ksize})',
          p.hr_crop)
    check(p.train_degradation or p.train_sr, 'pdm.train_sr',
          'train_degradation and train_sr are both False: nothing to train', p.train_sr)
    if p.train_degradation:
      check(bool(config.data.real_lr), 'data.real_lr',
            'training the degradation model needs a folder of real LR images', config.data.real_lr)
    for field in ('lr_adv_weight', 'noise_weight', 'kernel_centre_weight', 'sr_gan_weight',
                  'collapse_noise_std', 'collapse_warmup'):
      check(p[field] >= 0, f'pdm.{field}', 'must be >= 0', p[field])

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.spec = common.generator_spec(config)
    self.net = common.build_network(config, self.spec, config.model)
    g, d = config.degradation_model, config.discriminator
    self.deg_spec = models.ModelSpec('DegModel', {**g.kwargs, 'scale': config.scale})
    self.deg = common.build_network(config, self.deg_spec, g)
    self.d_spec = models.ModelSpec('PatchGANDiscriminator',
                                   {**d.kwargs, 'in_c': config.data.channels})
    self.disc = common.build_network(config, self.d_spec, d)
    h = config.hr_discriminator
    self.hr_d_spec = (models.ModelSpec('PatchGANDiscriminator',
                                       {**h.kwargs, 'in_c': config.data.channels})
                      if config.pdm.sr_gan_weight > 0 else None)
    self.hr_disc = (common.build_network(config, self.hr_d_spec, h) if self.hr_d_spec
                    else None)
    self.vgg = (common.load_vgg(config.loss, common.compute_dtype(config))
                if config.loss.perceptual_weight > 0 else None)
    self.tx = optimizers.build_all(config.optim)
    self.lr_crop = config.pdm.hr_crop // config.scale
    self.collapse_warning = common.OnceWarning(
        'step %d: the generated noise std %.2e is below pdm.collapse_noise_std = '
        f"{config.pdm.collapse_noise_std:.2e}: the degradation model's noise branch collapsed "
        '(fake LR without noise, a known PDM-SR failure); consider a lower pdm.noise_weight')

  def streams(self):
    p = self.config.pdm
    out = {'hr': common.train_stream(self.config, crop_size=p.hr_crop)}
    if p.train_degradation:
      out['real_lr'] = common.train_stream(self.config, crop_size=self.lr_crop,
                                           arrays=(('lq', 1),), folder='real_lr')
    return out

  def networks(self):
    return {'degradation': self.deg_spec, 'sr': self.spec}

  def constants(self) -> dict[str, Any]:
    return {'vgg': self.vgg[1]} if self.vgg else {}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    k_deg, k_lat, k_d, k_sr = jax.random.split(key, 4)
    c, hr, lr = self.config.data.channels, self.config.pdm.hr_crop, self.lr_crop
    deg = initial.get('degradation') or self.deg.init(
        {'params': k_deg, 'latent': k_lat}, jnp.zeros((1, hr, hr, c)))
    sr = initial.get('sr') or self.net.init(k_sr, jnp.zeros((1, lr, lr, c)))
    disc = self.disc.init(k_d, jnp.zeros((1, lr, lr, c)))
    params = {'degradation': deg['params'], 'discriminator': disc['params'], 'sr': sr['params']}
    if self.hr_disc:  # its own key, so the other networks start as without it
      params['hr_discriminator'] = self.hr_disc.init(jax.random.fold_in(k_d, 1),
                                                     jnp.zeros((1, hr, hr, c)))['params']
    return api.TrainState(params=params,
                          opt={name: self.tx[name].init(p) for name, p in params.items()},
                          extra={'batch_stats': deg.get('batch_stats', {})})

  def _degrade(self, params: Any, batch_stats: Any, hr: jax.Array, key: jax.Array
               ) -> tuple[tuple[jax.Array, jax.Array, jax.Array | None], Any]:
    """(fake LR, kernels, noise), new BatchNorm statistics: train mode while the model trains,
    its running statistics (unchanged) when it is frozen."""
    variables = {'params': params, 'batch_stats': batch_stats}
    if not self.config.pdm.train_degradation:
      return self.deg.apply(variables, hr, rngs={'latent': key}), batch_stats
    out, mutated = self.deg.apply(variables, hr, train=True, rngs={'latent': key},
                                  mutable=['batch_stats'])
    return out, mutated.get('batch_stats', {})

  def _update(self, name: str, params: Any, opt: Any, loss_fn):
    """One optimiser step of network `name`: (loss, aux, grads, new params, new opt state)."""
    return common.optimizer_step(self.tx[name], params, opt, loss_fn)

  def _degradation_step(self, state: api.TrainState, hr: jax.Array, real: jax.Array,
                        key: jax.Array) -> tuple[dict[str, Any], ...]:
    """The degradation model's LSGAN + noise update, then the LR discriminator's."""
    p = self.config.pdm
    d_params = state.params['discriminator']

    def deg_loss(params):
      (fake, kernel, noise), stats = self._degrade(params, state.extra['batch_stats'], hr, key)
      terms = {'l_lr_adv': p.lr_adv_weight * losses.gan_loss(
          self.disc.apply({'params': d_params}, fake), True, 'lsgan', for_discriminator=False)}
      if noise is not None:
        terms['l_noise'] = p.noise_weight * jnp.mean(jnp.square(noise))
      if p.kernel_centre_weight:
        terms['l_kernel_centre'] = p.kernel_centre_weight * jnp.mean(
            sum(jnp.square(o) for o in kernels.offsets(kernel)))
      return sum(terms.values()), (fake, kernel, noise, stats, terms)

    l_deg, (fake, kernel, noise, stats, terms), g_deg, deg_params, deg_opt = self._update(
        'degradation', state.params['degradation'], state.opt['degradation'], deg_loss)
    fake = jax.lax.stop_gradient(fake)

    def disc_loss(params):
      d_real, d_fake = (self.disc.apply({'params': params}, x) for x in (real, fake))
      return lsgan_d_loss(d_real, d_fake), {'d_real': jnp.mean(d_real),
                                            'd_fake': jnp.mean(d_fake)}

    l_d, d_terms, g_d, d_params, d_opt = self._update('discriminator', d_params,
                                                      state.opt['discriminator'], disc_loss)
    params = {'degradation': deg_params, 'discriminator': d_params}
    opt = {'degradation': deg_opt, 'discriminator': d_opt}
    metrics = {'l_deg': l_deg, 'l_d': l_d, **terms, **d_terms}
    return params, opt, stats, (fake, kernel, noise), metrics, (g_deg, g_d)

  def _sr_step(self, state: api.TrainState, lq: jax.Array, hr: jax.Array, consts: Any
               ) -> tuple[dict[str, Any], ...]:
    """The SR network's update on a synthesised pair (the LR's gradient already stopped),
    then the HR discriminator's on HR vs the pre-update SR output, as the esrgan method's."""
    cfg, p = self.config.loss, self.config.pdm
    percep = common.perceptual_term(cfg, self.vgg[0], consts['vgg']) if self.vgg else None
    hd_params = state.params.get('hr_discriminator')

    def sr_loss(params):
      out = self.net.apply({'params': params}, lq)
      terms = common.pixel_losses(cfg, out, hr)
      if percep is not None:
        terms['l_percep'] = percep(out, hr)
      if self.hr_disc:
        terms['l_g_gan'] = p.sr_gan_weight * losses.gan_loss(
            self.hr_disc.apply({'params': hd_params}, out), True, p.sr_gan_type,
            for_discriminator=False)
      return sum(terms.values()), (out, terms)

    loss, (out, terms), grads, params, opt = self._update('sr', state.params['sr'],
                                                          state.opt['sr'], sr_loss)
    params, opt, metrics, grads = {'sr': params}, {'sr': opt}, {'l_sr': loss, **terms}, [grads]
    if self.hr_disc:
      fake = jax.lax.stop_gradient(out)

      def hr_disc_loss(params):
        real_logits, fake_logits = (self.hr_disc.apply({'params': params}, x) for x in (hr, fake))
        l_real = losses.gan_loss(real_logits, True, p.sr_gan_type)
        l_fake = losses.gan_loss(fake_logits, False, p.sr_gan_type)
        return l_real + l_fake, {'l_hr_d_real': l_real, 'l_hr_d_fake': l_fake}

      l_hd, hd_terms, hd_grads, params['hr_discriminator'], opt['hr_discriminator'] = (
          self._update('hr_discriminator', hd_params, state.opt['hr_discriminator'],
                       hr_disc_loss))
      metrics.update({'l_hr_d': l_hd, **hd_terms})
      grads.append(hd_grads)
    return params, opt, metrics, grads

  def _check_collapse(self, step: jax.Array, noise_std: jax.Array) -> None:
    p = self.config.pdm
    collapsed = jnp.logical_and(step >= p.collapse_warmup, noise_std < p.collapse_noise_std)
    self.collapse_warning.warn_if(collapsed, step, noise_std)

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    p = self.config.pdm
    hr = batch['hr']['gt']
    params, opt, extra = dict(state.params), dict(state.opt), dict(state.extra)
    metrics, grads = {}, []
    if p.train_degradation:
      new_params, new_opt, extra['batch_stats'], (fake, kernel, noise), metrics, grads = (
          self._degradation_step(state, hr, batch['real_lr']['lq'], ctx.key))
      params.update(new_params)
      opt.update(new_opt)
    else:
      (fake, kernel, noise), _ = self._degrade(params['degradation'], extra['batch_stats'], hr,
                                               ctx.key)
    metrics['kernel_width'] = jnp.mean(kernel_width(kernel))
    metrics['kernel_offset'] = jnp.mean(jnp.hypot(*kernels.offsets(kernel)))
    if noise is not None:
      metrics['noise_std'] = jnp.std(noise)
      self._check_collapse(ctx.step, metrics['noise_std'])
    if p.train_sr:
      lq = jax.lax.stop_gradient(pdm_nn.straight_through_quantize(fake))
      sr_params, sr_opt, sr_metrics, sr_grads = self._sr_step(state, lq, hr, ctx.consts)
      params.update(sr_params)
      opt.update(sr_opt)
      metrics.update(sr_metrics)
      grads = (*grads, *sr_grads)
    metrics['loss'] = metrics.get('l_sr', metrics.get('l_deg'))
    new = api.TrainState(params=params, opt=opt, extra=extra)
    return new, metrics, api.all_finite(metrics, grads, params, extra)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['sr']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    """The SR network (`model.msgpack`; untrained, as initialised, when `pdm.train_sr` is
    False), the degradation model with its BatchNorm statistics (`degradation.msgpack`: the same
    file name in every mode) and, when trained, the HR discriminator."""
    out = {'generator': api.Product(self.spec, {'params': ema}),
           'degradation': api.Product(self.deg_spec,
                                      {'params': state.params['degradation'],
                                       'batch_stats': state.extra['batch_stats']})}
    if self.hr_disc:
      out['hr_discriminator'] = api.Product(self.hr_d_spec,
                                            {'params': state.params['hr_discriminator']})
    return out

  def evaluators(self) -> dict[str, api.Evaluator]:
    """SR validation when `eval.val` is set and the SR network trains; the sampled kernels and
    noise always."""
    sr = common.sr_validation(self.config) if self.config.pdm.train_sr else {}
    return {**sr, 'deg': DegradationSamples(self.config.pdm.hr_crop)}
