"""Pieces several methods build from config: network specs, the training stream, pixel and
perceptual losses."""

import dataclasses
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from condsr_jax import config as config_lib
from condsr_jax import losses, models
from condsr_jax import nn as cnn
from condsr_jax.data import streams

check = config_lib.check


def network_config(arch: str, dtype: str = '', **kwargs) -> ml_collections.ConfigDict:
  """A network section: architecture name, constructor arguments, compute dtype ('' follows
  `train.precision`; 'float32' or 'bfloat16' sets this network's alone)."""
  return ml_collections.ConfigDict({'arch': arch, 'kwargs': kwargs, 'dtype': dtype})


def validate_network(section: ml_collections.ConfigDict, field: str) -> None:
  check(section.arch in cnn.ARCHITECTURES, f'{field}.arch',
        f'unknown; known: {sorted(cnn.ARCHITECTURES)}', section.arch)
  check(section.dtype in ('', *config_lib.PRECISIONS), f'{field}.dtype',
        "'' (train.precision), 'float32' or 'bfloat16'", section.dtype)
  module = cnn.ARCHITECTURES[section.arch].module
  unknown = sorted(set(section.kwargs) - set(module.__dataclass_fields__))
  check(not unknown, f'{field}.kwargs', f'{section.arch} has no arguments {unknown}',
        dict(section.kwargs))


def compute_dtype(config: ml_collections.ConfigDict,
                  section: ml_collections.ConfigDict | None = None) -> jnp.dtype:
  """The dtype a network computes in: its section's `dtype` if set, else `train.precision`.

  Mixed precision ('bfloat16') is the same for every method: activations and convolutions in
  bfloat16, parameters float32 (flax's `param_dtype`, so gradients, optimiser states and the EMA
  are float32), and every network returns float32, so losses and metrics reduce in float32.
  Spectral norm's power iteration and BatchNorm's statistics stay float32 inside the networks.
  """
  name = (section.get('dtype', '') if section is not None else '') or config.train.precision
  return jnp.dtype(name)


def build_network(config: ml_collections.ConfigDict, spec: models.ModelSpec,
                  section: ml_collections.ConfigDict | None = None) -> Any:
  """The flax module of `spec` computing in `compute_dtype(config, section)`."""
  return spec.build(dtype=compute_dtype(config, section))


def generator_spec(config: ml_collections.ConfigDict, section: str = 'model') -> models.ModelSpec:
  """An SR network's spec: `config.SECTION.kwargs` plus the run's scale and channel count."""
  net = config[section]
  arch = cnn.ARCHITECTURES[net.arch]
  kwargs = dict(net.kwargs)
  if arch.scale_arg:
    kwargs[arch.scale_arg] = config.scale
  constructor_args = {f.name for f in dataclasses.fields(arch.module)}  # not ClassVars
  for name in ('num_in_ch', 'num_out_ch'):
    if name in constructor_args:
      kwargs.setdefault(name, config.data.channels)
  return models.ModelSpec(net.arch, kwargs)


def train_stream(config: ml_collections.ConfigDict, *, crop_size: int,
                 arrays: tuple[tuple[str, int], ...] = (('gt', 1),),
                 param_sampler: streams.ParamSampler | None = None,
                 folder: str = 'train') -> streams.StreamSpec:
  """The stream of `config.data.FOLDER` (`data.train` unless a method reads a second source,
  e.g. unpaired real LR in `data.real_lr`) with the shared `config.data` options."""
  d = config.data
  return streams.StreamSpec(
      source=d[folder], field=f'data.{folder}', batch_size=d.batch_size, crop_size=crop_size,
      arrays=arrays, root=d.root, channels=d.channels, hflip=d.hflip, vflip=d.vflip,
      rot90=d.rot90, on_bad_image=d.on_bad_image, validate_files=d.validate_files,
      num_workers=d.num_workers, keep_decoded=d.keep_decoded, param_sampler=param_sampler)


def pixel_loss_config() -> ml_collections.ConfigDict:
  """Pixel and edge loss weights (terms with weight 0 are left out)."""
  return ml_collections.ConfigDict({
      'pixel_weight': 1.0,
      'pixel_criterion': 'l1',  # l1 | l2
      'pixel_target': 'gt',  # gt | usm (Real-ESRGAN sharpens its L1 / perceptual targets)
      'edge_sobel_weight': 0.0,
      'edge_canny_weight': 0.0,
  })


def validate_pixel_loss(loss: ml_collections.ConfigDict) -> None:
  check(loss.pixel_criterion in ('l1', 'l2'), 'loss.pixel_criterion', "'l1' or 'l2'",
        loss.pixel_criterion)
  check(loss.pixel_target in ('gt', 'usm'), 'loss.pixel_target', "'gt' or 'usm'",
        loss.pixel_target)
  for field in ('pixel_weight', 'edge_sobel_weight', 'edge_canny_weight'):
    check(loss[field] >= 0, f'loss.{field}', 'must be >= 0', loss[field])


def pixel_losses(loss: ml_collections.ConfigDict, sr: jax.Array, target: jax.Array
                 ) -> dict[str, jax.Array]:
  """Weighted pixel and edge terms (the terms with zero weight are left out)."""
  pixel = losses.l1_loss if loss.pixel_criterion == 'l1' else losses.mse_loss
  terms = {'l_pix': loss.pixel_weight * pixel(sr, target)}
  if loss.edge_sobel_weight:
    terms['l_sobel'] = loss.edge_sobel_weight * losses.sobel_edge_loss(sr, target)
  if loss.edge_canny_weight:
    terms['l_canny'] = loss.edge_canny_weight * losses.canny_edge_loss(sr, target)
  return terms


VGG19_WEIGHTS_HINT = ('the perceptual loss needs torchvision VGG19 weights: download '
                      'vgg19-dcbb9e9d.pth (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth) '
                      'and set --config.loss.vgg_weights=/path/to/vgg19-dcbb9e9d.pth')


def vgg_config() -> ml_collections.ConfigDict:
  """The VGG19 features of a perceptual loss: layers and their weights, where the weights are."""
  return ml_collections.ConfigDict({
      'perceptual_layers': {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0,
                            'conv5_4': 1.0},
      'vgg_weights': '',  # torchvision vgg19 .pth (vgg19-dcbb9e9d.pth)
      'vgg_widths': [64, 128, 256, 512, 512],  # the random-feature VGG of `allow_random_vgg`
      'allow_random_vgg': False,  # perceptual loss on random features (smoke runs, tests)
  })


def perceptual_loss_config() -> ml_collections.ConfigDict:
  """BasicSR's `PerceptualLoss` over VGG19 features (pre-ReLU, ImageNet-normalised input)."""
  c = ml_collections.ConfigDict({'perceptual_weight': 0.0, 'perceptual_target': 'gt'})  # gt | usm
  c.update(vgg_config())
  return c


def validate_vgg(section: ml_collections.ConfigDict, field: str) -> None:
  """A `vgg_config` section at `field` whose loss is used: known layers, an existing file."""
  from condsr_jax.nn import vgg  # pylint: disable=g-import-not-at-top
  bad = [k for k in section.perceptual_layers if k not in vgg.VGG19_LAYER_NAMES]
  check(not bad, f'{field}.perceptual_layers', f'unknown VGG19 layers {bad}', bad)
  check(bool(section.vgg_weights) or section.allow_random_vgg, f'{field}.vgg_weights',
        VGG19_WEIGHTS_HINT, section.vgg_weights)
  check(not section.vgg_weights or os.path.isfile(section.vgg_weights), f'{field}.vgg_weights',
        f'no such file; {VGG19_WEIGHTS_HINT}', section.vgg_weights)


def validate_perceptual_loss(loss: ml_collections.ConfigDict) -> None:
  check(loss.perceptual_weight >= 0, 'loss.perceptual_weight', 'must be >= 0',
        loss.perceptual_weight)
  check(loss.perceptual_target in ('gt', 'usm'), 'loss.perceptual_target', "'gt' or 'usm'",
        loss.perceptual_target)
  if loss.perceptual_weight > 0:
    validate_vgg(loss, 'loss')


def load_vgg(loss: ml_collections.ConfigDict, dtype: Any = jnp.float32) -> tuple[Any, Any]:
  """(VGG19 feature module, its variables) for `loss.perceptual_layers` (a `vgg_config`):
  torchvision weights from `loss.vgg_weights`, or random features when `loss.allow_random_vgg`.
  The convolutions compute in `dtype`; the features come out float32."""
  from condsr_jax import convert  # pylint: disable=g-import-not-at-top
  layers = tuple(loss.perceptual_layers)
  if loss.vgg_weights:
    spec, variables = convert.convert_file(loss.vgg_weights, arch='VGG19Features',
                                           overrides={'layer_names': layers})
    return spec.build(dtype=dtype), variables
  module = cnn.ARCHITECTURES['VGG19Features'].module(layer_names=layers,
                                                      widths=tuple(loss.vgg_widths), dtype=dtype)
  return module, jax.jit(module.init)(jax.random.key(12345), jnp.zeros((1, 32, 32, 3)))


def perceptual_term(loss: ml_collections.ConfigDict, module: Any, variables: Any
                    ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`(output, target) -> perceptual_weight x PerceptualLoss` with the given VGG19 features."""
  features = lambda im: module.apply(variables, im)  # pylint: disable=unnecessary-lambda-assignment
  layer_weights = dict(loss.perceptual_layers)

  def term(out: jax.Array, target: jax.Array) -> jax.Array:
    percep, _ = losses.perceptual_loss(features, out, target, layer_weights)
    return loss.perceptual_weight * percep
  return term


PERCEPTUAL_DISTANCES = ('lpips_alex', 'lpips_vgg', 'vgg19')


def perceptual_distance_config(weight: float) -> ml_collections.ConfigDict:
  """A perceptual distance term of its own kind: LPIPS (from weight files) or VGG19 features."""
  return ml_collections.ConfigDict({
      'perceptual_weight': weight,
      'perceptual': 'lpips_alex',  # lpips_alex | lpips_vgg | vgg19
      'lpips_weights': '',  # LPIPS: the trunk and linear-layer files, comma-separated
      'vgg': vgg_config(),  # the 'vgg19' distance
  })


def validate_perceptual_distance(section: ml_collections.ConfigDict, field: str) -> None:
  """A `perceptual_distance_config` at `field`; its files must exist when the weight is > 0."""
  from condsr_jax import perceptual  # pylint: disable=g-import-not-at-top
  check(section.perceptual_weight >= 0, f'{field}.perceptual_weight', 'must be >= 0',
        section.perceptual_weight)
  check(section.perceptual in PERCEPTUAL_DISTANCES, f'{field}.perceptual',
        f'one of {PERCEPTUAL_DISTANCES}', section.perceptual)
  if section.perceptual_weight == 0:
    return
  if section.perceptual == 'vgg19':
    validate_vgg(section.vgg, f'{field}.vgg')
    return
  hint = perceptual.weights_hint(section.perceptual)
  files = [f for f in section.lpips_weights.split(',') if f]
  check(bool(files), f'{field}.lpips_weights', f'the perceptual loss needs them: {hint}',
        section.lpips_weights)
  missing = [f for f in files if not os.path.isfile(f)]
  check(not missing, f'{field}.lpips_weights', f'no such file {missing}; {hint}',
        section.lpips_weights)


def as_rgb(x: jax.Array) -> jax.Array:
  """Grey images as three equal channels, for the RGB perceptual networks."""
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def load_perceptual_distance(section: ml_collections.ConfigDict, dtype: Any = jnp.float32
                             ) -> tuple[Callable[..., jax.Array], Any]:
  """(distance(variables, x, y) -> mean over the batch, its variables) of a
  `perceptual_distance_config`: LPIPS, or the VGG19 feature loss; grey images as RGB. The
  trunk's convolutions compute in `dtype`; the distance is reduced in float32."""
  from condsr_jax import perceptual  # pylint: disable=g-import-not-at-top
  if section.perceptual != 'vgg19':
    metric = perceptual.load(section.perceptual,
                             [f for f in section.lpips_weights.split(',') if f])
    apply = metric.spec.build(dtype=dtype).apply
    return (lambda v, x, y: jnp.mean(apply(v, as_rgb(x), as_rgb(y)))), metric.variables
  module, variables = load_vgg(section.vgg, dtype)
  layers = dict(section.vgg.perceptual_layers)

  def vgg_distance(v: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return losses.perceptual_loss(lambda im: module.apply(v, im), as_rgb(x), as_rgb(y),
                                  layers)[0]
  return vgg_distance, variables


def optimizer_step(tx: optax.GradientTransformation, params: Any, opt: Any,
                   loss_fn: Callable[[Any], tuple[jax.Array, Any]]) -> tuple[Any, ...]:
  """One update of `params` by `tx` on `loss_fn(params) -> (loss, aux)`: (loss, aux, grads,
  new params, new optimiser state)."""
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt = tx.update(grads, opt, params)
  return loss, aux, grads, optax.apply_updates(params, updates), opt


class OnceWarning:
  """A warning a jitted step logs at most once per run: `warn_if` runs inside the step, and the
  host callback is only taken while the condition holds, so a healthy run pays nothing."""

  def __init__(self, message: str):
    self.message = message  # an absl logging format for the values `warn_if` is given
    self.fired = False

  def _log(self, *values: Any) -> None:
    if not self.fired:
      self.fired = True
      logging.warning(self.message, *(np.asarray(v).item() for v in values))

  def warn_if(self, condition: jax.Array, *values: jax.Array) -> None:
    """Logs the warning with `values` the first time `condition` holds."""
    jax.lax.cond(condition, lambda: jax.debug.callback(self._log, *values), lambda: None)


def validate_oracle(config: ml_collections.ConfigDict) -> None:
  """An oracle condition (`nn.conditional.OracleCondition`) reads the true blur and noise
  parameters of the 'classic' degradation."""
  check(config.degradation.kind == 'classic', 'degradation.kind',
        "the oracle condition reads the 'classic' degradation's blur and noise parameters",
        config.degradation.kind)


def oracle_spec(features: int) -> models.ModelSpec:
  """The spec an oracle MLP of `features` outputs is exported with."""
  return models.ModelSpec('OracleCondition', {'features': features})


# A degradation kind of the pixel methods: the LR comes from the data (an aligned `gt/` + `lq/`
# folder, BasicSR's PairedImageDataset) instead of being synthesised.
PAIRED = 'paired'


def paired_config(gt_size: int = 128) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'kind': PAIRED, 'gt_size': gt_size})


def validate_degradation(config: ml_collections.ConfigDict) -> None:
  """`config.degradation`: a synthesising kind (`degrade.pipelines`) or 'paired' data."""
  from condsr_jax.degrade import pipelines  # pylint: disable=g-import-not-at-top
  g = config.degradation
  if g.kind != PAIRED:
    check(g.kind in pipelines.KINDS, 'degradation.kind', f'one of {(*pipelines.KINDS, PAIRED)}',
          g.kind)
    pipelines.validate(g, config.scale)
    return
  check(g.gt_size > 0 and g.gt_size % config.scale == 0, 'degradation.gt_size',
        f'must be a positive multiple of the scale {config.scale}', g.gt_size)


def make_degradation(config: ml_collections.ConfigDict) -> Any:
  """The on-device degradation of `config.degradation`, or None for paired data."""
  from condsr_jax.degrade import pipelines  # pylint: disable=g-import-not-at-top
  if config.degradation.kind == PAIRED:
    return None
  return pipelines.make(config.degradation, config.scale)


def pair_stream(config: ml_collections.ConfigDict, degradation: Any) -> streams.StreamSpec:
  """The training stream of a pixel method: GT canvases plus the degradation's per-element
  draws, or aligned GT + LQ crops of paired data."""
  if degradation is None:
    return train_stream(config, crop_size=config.degradation.gt_size,
                        arrays=(('gt', 1), ('lq', config.scale)))
  return train_stream(config, crop_size=degradation.canvas,
                      param_sampler=degradation.param_sampler())


def sr_validation(config: ml_collections.ConfigDict, degradation: Any = None
                  ) -> dict[str, Any]:
  """{'val': PSNR/SSIM of the 'generator' product against bicubic} when `eval.val` is set."""
  from condsr_jax import evaluate  # pylint: disable=g-import-not-at-top
  if not config.eval.val:
    return {}
  return {'val': evaluate.SRValidation.from_config(config.eval, config.scale,
                                                   config.data.channels, degradation)}


def training_pair(degradation: Any, batch: Any, key: jax.Array) -> dict[str, jax.Array]:
  """{'lq', 'gt', ['gt_usm']} of one training stream batch: synthesised, or as read."""
  if degradation is None:
    return {'lq': batch['lq'], 'gt': batch['gt']}
  return degradation(batch, key)
