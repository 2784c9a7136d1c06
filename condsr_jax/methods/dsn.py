"""DASR-Wei stage 1 (Wei et al., CVPR 2021): the DSN, a down-sampling network that turns clean HR
images into LR images of a real source domain, learnt from unpaired real LR.

Two independent streams: clean HR crops (`data.train`, the target domain) and real-LR crops
(`data.real_lr`, the source domain, `dsn.hr_crop / scale` pixels). Each step, as the official
`codes/DSN`:

1. the generator (`DSNGenerator`) maps HR to fake LR; `bic` is the MATLAB bicubic of the HR
   (antialiased, as `imresize`). Its loss is `dsn.color_weight` x L1(Low(fake), Low(bic)),
   Low the discriminator filter's low-pass without padding (Gaussian or box 5 x 5; half the Haar
   LL band for the wavelet filters), plus `dsn.perceptual_weight` x a perceptual distance of
   fake and bic (`dsn.perceptual`: LPIPS from the weight files in `dsn.lpips_weights`, or the
   project's VGG19 loss of `dsn.vgg`; with weight 0 nothing is built), plus
   `dsn.texture_weight` x the generator GAN loss of the frequency-separated discriminator on the
   fake LR;
2. the discriminator (`FSDiscriminator`, which sees only the high frequencies) is updated on the
   real LR crops vs the (stopped) fake LR: BCE on logits (the official sigmoid + BCE), or RaGAN
   with `dsn.gan_type = 'ragan'` (the official `wgan` path).

Diagnostics per step (TensorBoard scalars 'train/...'): `bicubic_distance` = mean |fake - bic|
and `color_shift` = |mean Low(fake) - mean Low(bic)|, both on [0, 1] images. From step
`dsn.collapse_warmup` on (an untrained generator is neither collapsed nor calibrated), one
warning is logged the first time

- `bicubic_distance` < `dsn.collapse_distance` (default 1/255): the DSN has collapsed to bicubic,
  a reported failure; a mean difference under one grey level is below the 8-bit rounding the
  generated LR gets when saved, so no degradation is learnt (real noise of sigma 8/255 alone gives
  a mean |difference| of about 6/255);
- `color_shift` > `dsn.color_shift_limit` (default 2/255): the texture GAN outweighs the colour
  loss; a uniform shift of two grey levels is about the smallest visible one and far above what
  a colour-preserving DSN shows (its low-pass matches bicubic's).

Products: the generator (`model.msgpack`, HR -> LR) and the discriminator
(`discriminator.msgpack`, for domain-distance maps). With `eval.val` set, the evaluator 'val'
runs the generator on the validation HR images: the same two diagnostics, and per image an LR |
bicubic | fake panel (LR: the folder's `lq/` when paired, else the 8-bit bicubic).
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import losses, models
from condsr_jax.degrade import frequency, matlab
from condsr_jax.methods import api, common, optimizers
from condsr_jax.nn import dasr_wei

GAN_TYPES = ('vanilla', 'ragan')


def dsn_config() -> ml_collections.ConfigDict:
  """The method's own section: crop, loss weights, perceptual loss, the two warnings."""
  c = common.perceptual_distance_config(0.01)  # LPIPS-alex, the official loss
  c.update({
      'hr_crop': 256,  # HR crop; real-LR crops are hr_crop / scale
      'color_weight': 1.0,
      'texture_weight': 0.005,
      'gan_type': 'vanilla',  # vanilla (sigmoid + BCE) | ragan
      'collapse_distance': 1 / 255,  # mean |fake - bicubic| under which the DSN collapsed
      'color_shift_limit': 2 / 255,  # |mean Low(fake) - mean Low(bicubic)| over which colours drift
      'collapse_warmup': 1000,  # steps before both checks start
  })
  return c


def low_pass(filter_kind: str, kernel_size: int) -> Callable[[jax.Array], jax.Array]:
  """The colour loss's low-pass for a discriminator filter: the unpadded Gaussian or box
  `filter_low` (Gaussian for 'gau' and 'none', as the official `--no_highpass`), or half the
  Haar LL band for the wavelet filters."""
  if filter_kind.startswith('wavelet_'):
    return frequency.wavelet_low_half
  kind = 'avg' if filter_kind == 'avg_pool' else 'gau'
  return lambda x: frequency.filter_low(x, kind, kernel_size, padding=False)


def discriminator_loss(real: jax.Array, fake: jax.Array, gan_type: str) -> jax.Array:
  """-log D(real) - log(1 - D(fake)) on logits; RaGAN's relativistic form, halved, for 'ragan'."""
  if gan_type == 'ragan':
    real, fake = dasr_wei.relativistic(real, fake), dasr_wei.relativistic(fake, real)
    return (losses.gan_loss(real, True, 'vanilla') + losses.gan_loss(fake, False, 'vanilla')) / 2
  return losses.gan_loss(real, True, 'vanilla') + losses.gan_loss(fake, False, 'vanilla')


def generator_gan_loss(fake: jax.Array, real: jax.Array | None, gan_type: str) -> jax.Array:
  """-log D(fake); for 'ragan' the relativistic loss with the roles swapped (needs `real`)."""
  if gan_type == 'ragan':
    rel_real, rel_fake = dasr_wei.relativistic(real, fake), dasr_wei.relativistic(fake, real)
    return (losses.gan_loss(rel_real, False, 'vanilla')
            + losses.gan_loss(rel_fake, True, 'vanilla')) / 2
  return losses.gan_loss(fake, True, 'vanilla', for_discriminator=False)


def lr_diagnostics(fake: jax.Array, bic: jax.Array, low: Callable[[jax.Array], jax.Array]
                   ) -> dict[str, jax.Array]:
  """`bicubic_distance` (mean |fake - bic|) and `color_shift` (|mean Low(fake) - mean Low(bic)|)."""
  return {'bicubic_distance': jnp.mean(jnp.abs(fake - bic)),
          'color_shift': jnp.abs(jnp.mean(low(fake)) - jnp.mean(low(bic)))}


class DSNValidation:
  """The evaluator: the generator on the validation HR images, `lr_diagnostics` averaged over
  them and an LR | bicubic | fake panel per image ('panel0', ...). Deterministic."""

  def __init__(self, pairs: list[Any], scale: int, low: Callable[[jax.Array], jax.Array]):
    self.pairs = pairs
    self.bicubic = [np.asarray(matlab.imresize_matlab(p.gt[None], 1 / scale)) for p in pairs]
    self._diagnostics = jax.jit(lambda fake, bic: lr_diagnostics(fake, bic, low))
    self._apply: Callable[..., jax.Array] | None = None
    self._spec: models.ModelSpec | None = None

  def __call__(self, products: Mapping[str, api.Product]) -> api.EvalResult:
    spec, variables = products['generator']
    if spec != self._spec:  # compiled once per run and image shape
      self._spec, self._apply = spec, jax.jit(spec.build().apply)
    sums, panels = {'bicubic_distance': 0.0, 'color_shift': 0.0}, {}
    for i, (pair, bic) in enumerate(zip(self.pairs, self.bicubic)):
      fake = np.asarray(self._apply(variables, pair.gt[None]))
      for name, value in self._diagnostics(fake, bic).items():
        sums[name] += float(value) / len(self.pairs)
      panels[f'panel{i}'] = np.clip(np.concatenate([pair.lq, bic[0], fake[0]], axis=1), 0, 1)
    report = '  '.join(f'{k} {v:.4g}' for k, v in sums.items())
    return api.EvalResult(sums, panels, f'DSN on the validation HR: {report}')


@api.register('dsn')
class DSNMethod(api.MethodBase):
  """DSNGenerator (clean HR -> source-domain LR) against a frequency-separated discriminator on
  unpaired real LR, with a low-pass colour loss and a perceptual loss to bicubic."""

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({'real_lr': ''})
    c.model = common.network_config('DSNGenerator', num_feat=64, num_block=8)
    c.discriminator = common.network_config('FSDiscriminator', filter='wavelet_cat',
                                            num_feat=64)
    c.dsn = dsn_config()
    c.optim = ml_collections.ConfigDict({
        name: optimizers.optimizer_config(1e-4, b1=0.5, b2=0.999)
        for name in ('generator', 'discriminator')})
    c.init = ml_collections.ConfigDict({'generator': '', 'discriminator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    check, d = common.check, config.dsn
    common.validate_network(config.model, 'model')
    common.validate_network(config.discriminator, 'discriminator')
    check(config.model.arch == 'DSNGenerator', 'model.arch', 'the DSN trains a DSNGenerator',
          config.model.arch)
    check(config.discriminator.arch == 'FSDiscriminator', 'discriminator.arch',
          'the DSN trains an FSDiscriminator', config.discriminator.arch)
    check(config.scale >= 2 and config.scale & (config.scale - 1) == 0, 'scale',
          'the DSNGenerator downscales by a power of two', config.scale)
    kwargs = config.discriminator.kwargs
    filter_kind, k = kwargs.get('filter', 'gau'), kwargs.get('kernel_size', 5)
    check(filter_kind in dasr_wei.FSD_FILTERS, 'discriminator.kwargs.filter',
          f'one of {dasr_wei.FSD_FILTERS}', filter_kind)
    check(k % 2 == 1, 'discriminator.kwargs.kernel_size', 'must be odd', k)
    lr = d.hr_crop // config.scale
    check(d.hr_crop % config.scale == 0 and lr >= k, 'dsn.hr_crop',
          f'must be a multiple of the scale {config.scale}, its LR crop at least the low-pass '
          f'filter ({k})', d.hr_crop)
    check(bool(config.data.real_lr), 'data.real_lr', 'the DSN needs a folder of real LR images',
          config.data.real_lr)
    for field in ('color_weight', 'texture_weight', 'collapse_distance', 'color_shift_limit',
                  'collapse_warmup'):
      check(d[field] >= 0, f'dsn.{field}', 'must be >= 0', d[field])
    check(d.gan_type in GAN_TYPES, 'dsn.gan_type', f'one of {GAN_TYPES}', d.gan_type)
    common.validate_perceptual_distance(d, 'dsn')

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    c, g, d = config.data.channels, config.model, config.discriminator
    self.spec = models.ModelSpec('DSNGenerator', {**g.kwargs, 'scale': config.scale,
                                                  'in_channels': c, 'out_channels': c})
    self.gen = common.build_network(config, self.spec, g)
    self.d_spec = models.ModelSpec('FSDiscriminator', {**d.kwargs, 'in_channels': c})
    self.disc = common.build_network(config, self.d_spec, d)
    self.low = low_pass(self.disc.filter, self.disc.kernel_size)
    self.lr_crop = config.dsn.hr_crop // config.scale
    self.perceptual = (common.load_perceptual_distance(config.dsn, common.compute_dtype(config))
                       if config.dsn.perceptual_weight > 0 else None)
    self.tx = optimizers.build_all(config.optim)
    limits = config.dsn
    self.collapse_warning = common.OnceWarning(
        'step %d: mean |fake LR - bicubic| = %.2e is below dsn.collapse_distance = '
        f'{limits.collapse_distance:.2e}: the DSN collapsed to bicubic and learns no '
        'degradation; consider a higher dsn.texture_weight')
    self.color_warning = common.OnceWarning(
        'step %d: the colour shift |mean Low(fake LR) - mean Low(bicubic)| = %.2e exceeds '
        f'dsn.color_shift_limit = {limits.color_shift_limit:.2e}: the texture GAN outweighs the '
        'colour loss; consider a lower dsn.texture_weight')

  def streams(self):
    return {'hr': common.train_stream(self.config, crop_size=self.config.dsn.hr_crop),
            'real_lr': common.train_stream(self.config, crop_size=self.lr_crop,
                                           arrays=(('lq', 1),), folder='real_lr')}

  def networks(self):
    return {'generator': self.spec, 'discriminator': self.d_spec}

  def constants(self) -> dict[str, Any]:
    return {'perceptual': self.perceptual[1]} if self.perceptual else {}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    k_g, k_d = jax.random.split(key)
    c, hr, lr = self.config.data.channels, self.config.dsn.hr_crop, self.lr_crop
    gen = initial.get('generator') or self.gen.init(k_g, jnp.zeros((1, hr, hr, c)))
    disc = initial.get('discriminator') or self.disc.init(k_d, jnp.zeros((1, lr, lr, c)))
    params = {'generator': gen['params'], 'discriminator': disc['params']}
    return api.TrainState(params=params,
                          opt={name: self.tx[name].init(p) for name, p in params.items()},
                          extra={})

  def _check_warnings(self, step: jax.Array, diagnostics: Mapping[str, jax.Array]) -> None:
    d = self.config.dsn
    started = step >= d.collapse_warmup
    distance, shift = diagnostics['bicubic_distance'], diagnostics['color_shift']
    self.collapse_warning.warn_if(jnp.logical_and(started, distance < d.collapse_distance),
                                  step, distance)
    self.color_warning.warn_if(jnp.logical_and(started, shift > d.color_shift_limit), step, shift)

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    d = self.config.dsn
    hr, real = batch['hr']['gt'], batch['real_lr']['lq']
    bic = matlab.imresize_matlab(hr, 1 / self.config.scale)
    low_bic = self.low(bic)
    d_params = state.params['discriminator']
    ragan = d.gan_type == 'ragan'
    real_logits = self.disc.apply({'params': d_params}, real) if ragan else None

    def generator_loss(params):
      fake = self.gen.apply({'params': params}, hr)
      terms = {'l_color': d.color_weight * losses.l1_loss(self.low(fake), low_bic)}
      if self.perceptual:
        distance, variables = self.perceptual[0], ctx.consts['perceptual']
        terms['l_percep'] = d.perceptual_weight * distance(variables, fake, bic)
      fake_logits = self.disc.apply({'params': d_params}, fake)
      terms['l_texture'] = d.texture_weight * generator_gan_loss(fake_logits, real_logits,
                                                                 d.gan_type)
      return sum(terms.values()), (fake, terms)

    l_g, (fake, terms), g_grads, g_params, g_opt = common.optimizer_step(
        self.tx['generator'], state.params['generator'], state.opt['generator'], generator_loss)
    fake = jax.lax.stop_gradient(fake)  # the pre-update generator's output, as the reference

    def disc_loss(params):
      real_out, fake_out = (self.disc.apply({'params': params}, x) for x in (real, fake))
      return discriminator_loss(real_out, fake_out, d.gan_type), {
          'd_real': jnp.mean(jax.nn.sigmoid(real_out)),
          'd_fake': jnp.mean(jax.nn.sigmoid(fake_out))}

    l_d, d_terms, d_grads, d_params, d_opt = common.optimizer_step(
        self.tx['discriminator'], d_params, state.opt['discriminator'], disc_loss)
    diagnostics = lr_diagnostics(fake, bic, self.low)
    self._check_warnings(ctx.step, diagnostics)
    params = {'generator': g_params, 'discriminator': d_params}
    new = api.TrainState(params=params, opt={'generator': g_opt, 'discriminator': d_opt},
                         extra={})
    metrics = {'loss': l_g, 'l_d': l_d, **terms, **d_terms, **diagnostics}
    return new, metrics, api.all_finite(metrics, g_grads, d_grads, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['generator']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    """The generator (`model.msgpack`, HR -> LR) and the discriminator."""
    return {'generator': api.Product(self.spec, {'params': ema}),
            'discriminator': api.Product(self.d_spec,
                                         {'params': state.params['discriminator']})}

  def evaluators(self) -> dict[str, api.Evaluator]:
    """'val' (`DSNValidation`) when `eval.val` is set."""
    from condsr_jax import evaluate  # pylint: disable=g-import-not-at-top
    e = self.config.eval
    if not e.val:
      return {}
    pairs = evaluate.load_pairs(e.val, self.config.scale, 'bicubic', self.config.data.channels,
                                e.max_images)
    return {'val': DSNValidation(pairs, self.config.scale, self.low)}
