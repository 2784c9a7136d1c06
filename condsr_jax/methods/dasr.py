"""DASR training (Wang et al., CVPR 2021): a degradation encoder learnt by contrast, then SR.

A batch holds k tasks: an HR image, one classic degradation and the task's LR patches (views),
all degraded alike (`degrade.tasks`, DASR's layout: 2 patches of 48 px). The reference schedule:
for the first `dasr.encoder_steps` steps only the encoder trains, on the contrastive loss
(optimiser 'encoder'); then the whole network trains on L1(SR, HR) on 0..255 plus
`con_weight` x the contrastive loss, the encoder included. The encoder's Adam runs through both
stages (its rate: `optim.encoder`'s schedule, then `optim.sr`'s from the stage boundary); SR
network's Adam starts at stage 2, as the reference's single torch Adam does for parameters that
had no gradient yet.

The contrastive loss (`dasr.objective`): MoCo's InfoNCE against a queue of earlier keys
('infonce'), BYOL's negative-free cosine loss through a predictor ('byol'), or none (the paper's
"Model 1": the encoder trained by the SR loss alone). Query views (`dasr.query_views`) go
through the encoder, key views (`dasr.key_views`) through its momentum copy; each query is
matched with the centroid of the other key views' normalised keys, so several positives
(seed 004: 5), multi-crop views (2 x 64 + 4 x 48) and positives from other images with the same
degradation (`degradation.tasks.different_images`) are config values. The SR branch reads view 0
and its HR patch. Under data parallelism the step sees the global batch: every task's key
enters the queue, in batch order, and BatchNorm statistics are those of the global batch.

`dasr.condition` 'none' gives the blind network of the same size (one learned representation),
'oracle' an MLP of the true degradation parameters: the bounds of the experiments.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from condsr_jax import losses, models
from condsr_jax.degrade import classic, tasks
from condsr_jax.methods import api, common, optimizers
from condsr_jax.nn import conditional
from condsr_jax.nn import dasr as dasr_nn

CONDITIONS = ('encoder', 'none', 'oracle')
OBJECTIVES = ('infonce', 'byol', 'none')
ENCODER_KEYS = ('E', 'predictor')  # what optimiser 'encoder' steps; 'sr' steps the rest
GENERATOR_KEYS = ('E', 'G', 'blind_rep')  # the exported BlindSR's parameters


def split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(encoder part, SR part) of the trainable parameters."""
  return ({k: v for k, v in params.items() if k in ENCODER_KEYS},
          {k: v for k, v in params.items() if k not in ENCODER_KEYS})


def centroid(keys: list[jax.Array]) -> jax.Array:
  """The normalised mean of normalised keys: one key for several positives."""
  return dasr_nn.normalize(sum(dasr_nn.normalize(k) for k in keys) / len(keys))


@api.register('dasr')
class DASRMethod(api.MethodBase):
  """DASR on `BlindSR` (encoder 'E' + DA network 'G'), with seed 004's variants."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = common.network_config(
        'BlindSR', num_feat=64, num_group=5, num_block=5, reduction=8, rep_dim=64,
        enc_widths=(64, 64, 128, 128, 256, 256), mlp_dim=256, local_fusion=False)
    c.degradation = tasks.default_config('classic', 4, 'dasr')
    c.dasr = ml_collections.ConfigDict()
    c.dasr.condition = 'encoder'  # encoder | none (blind) | oracle
    c.dasr.objective = 'infonce'  # infonce | byol | none ("Model 1")
    c.dasr.encoder_steps = 100_000  # stage 1: 100 epochs of 1000 batches
    c.dasr.con_weight = 1.0
    c.dasr.queue_size = 8192
    c.dasr.temperature = 0.07
    c.dasr.momentum = 0.999
    c.dasr.query_views = (0,)
    c.dasr.key_views = (1,)
    c.dasr.predictor_hidden = 256  # 'byol'
    c.optim = ml_collections.ConfigDict({
        'encoder': optimizers.optimizer_config(1e-3, b2=0.999, milestones=(60_000,), gamma=0.1),
        'sr': optimizers.optimizer_config(1e-4, b2=0.999,
                                          milestones=(125_000, 250_000, 375_000), gamma=0.5)})
    c.init = ml_collections.ConfigDict({'generator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    check, c = common.check, config.dasr
    common.validate_network(config.model, 'model')
    check(config.model.arch == 'BlindSR', 'model.arch', 'DASR trains a BlindSR',
          config.model.arch)
    check(c.condition in CONDITIONS, 'dasr.condition', f'one of {CONDITIONS}', c.condition)
    check(c.objective in OBJECTIVES, 'dasr.objective', f'one of {OBJECTIVES}', c.objective)
    check(c.encoder_steps >= 0, 'dasr.encoder_steps', 'must be >= 0', c.encoder_steps)
    check(c.con_weight >= 0, 'dasr.con_weight', 'must be >= 0', c.con_weight)
    check(c.temperature > 0, 'dasr.temperature', 'must be positive', c.temperature)
    check(0 <= c.momentum < 1, 'dasr.momentum', 'must be in [0, 1)', c.momentum)
    tasks.validate(config.degradation, config.scale)
    views = sum(int(n) for _, n in config.degradation.tasks.crops)
    queries, keys = tuple(c.query_views), tuple(c.key_views)
    check(bool(queries) and queries[0] == 0 and all(0 <= v < views for v in queries),
          'dasr.query_views', f'view indices below {views}, starting with 0 (the SR view)',
          queries)
    if c.condition == 'encoder' and c.objective != 'none':
      check(bool(keys) and all(0 <= v < views for v in keys), 'dasr.key_views',
            f'view indices below {views}', keys)
      check(all(set(keys) - {q} for q in queries), 'dasr.key_views',
            f'every query view needs a key view other than itself (queries {queries})', keys)
    if c.objective == 'infonce':
      k = config.data.batch_size
      check(c.queue_size > 0 and c.queue_size % k == 0, 'dasr.queue_size',
            f'must be a positive multiple of the batch of {k} tasks', c.queue_size)
    if c.condition == 'oracle':
      common.validate_oracle(config)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    c = config.dasr
    self.degradation = tasks.TaskDegradation(config.degradation, config.scale)
    base = common.generator_spec(config)
    self.spec = models.ModelSpec(base.arch, {**base.kwargs, 'blind': c.condition != 'encoder'})
    self.net = common.build_network(config, self.spec, config.model)
    self.encoded = c.condition == 'encoder'
    self.objective = c.objective if self.encoded else 'none'
    self.stage1 = c.encoder_steps if self.objective != 'none' else 0
    self.key_views = tuple(c.key_views) if self.objective != 'none' else ()
    self.query_views = tuple(c.query_views) if self.objective != 'none' else (0,)
    self.oracle = conditional.OracleCondition(self.net.enc_widths[-1])
    self.predictor = dasr_nn.Predictor(c.predictor_hidden, self.net.mlp_dim)
    encoder_lr, sr_lr = (optimizers.learning_rate(config.optim[n]) for n in ('encoder', 'sr'))
    stage1 = self.stage1
    self.tx = {
        'encoder': optimizers.build(config.optim.encoder, lambda n: jnp.where(
            n < stage1, encoder_lr(n), sr_lr(n - stage1))),
        'sr': optimizers.build(config.optim.sr)}

  def streams(self):
    return {'train': common.train_stream(self.config, crop_size=self.degradation.canvas,
                                         param_sampler=self.degradation.param_sampler())}

  def networks(self):
    return {'generator': self.spec}

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    k_net, k_oracle, k_pred, k_queue = jax.random.split(key, 4)
    fresh = self.net.init(k_net, *self.net.example_inputs())
    variables = initial.get('generator', fresh)
    params = {'generator': variables['params']}
    if self.config.dasr.condition == 'oracle':
      x = jnp.zeros((1, len(classic.ORACLE_FEATURES)))
      params['oracle'] = self.oracle.init(k_oracle, x)['params']
    if self.objective == 'byol':
      params['predictor'] = self.predictor.init(k_pred, jnp.zeros((1, self.net.mlp_dim)))['params']
    extra = {}
    if self.encoded:
      extra['batch_stats'] = variables['batch_stats']
    if self.objective != 'none':
      # The reference copies the query encoder's parameters; the key encoder's BatchNorm
      # statistics start fresh.
      extra['key_encoder'] = {'params': variables['params']['E']['encoder_q'],
                              'batch_stats': fresh['batch_stats']['E']['encoder_q']}
    if self.objective == 'infonce':
      queue = jax.random.normal(k_queue, (self.net.mlp_dim, self.config.dasr.queue_size))
      extra['queue'] = dasr_nn.normalize(queue.T).T
      extra['pointer'] = jnp.zeros((), jnp.int32)
    trainable = self._trainable(params)
    enc, sr = split(trainable)
    return api.TrainState(params=params,
                          opt={'encoder': self.tx['encoder'].init(enc),
                               'sr': self.tx['sr'].init(sr)},
                          extra=extra)

  @staticmethod
  def _trainable(params: dict[str, Any]) -> dict[str, Any]:
    """{'E', 'G' (and 'blind_rep'), 'predictor', 'oracle'}: one flat dict of the networks."""
    return {**params['generator'], **{k: v for k, v in params.items() if k != 'generator'}}

  @staticmethod
  def _params(trainable: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `_trainable`."""
    out = {k: trainable[k] for k in params if k != 'generator'}
    out['generator'] = {k: trainable[k] for k in params['generator']}
    return out

  def _encode(self, enc_params: Any, batch_stats: Any, x: jax.Array, spatial: bool
              ) -> tuple[tuple[jax.Array, ...], Any]:
    """An encoder (query or key: its parameters and BatchNorm statistics) in training mode on x
    (0..255): (fea, proj[, map]), the new statistics."""
    nest = lambda tree: {'E': {'encoder_q': tree}}  # pylint: disable=unnecessary-lambda-assignment
    out, state = self.net.apply(
        {'params': nest(enc_params), 'batch_stats': nest(batch_stats)}, x,
        method=lambda m, x: m.E.encoder_q(x, True, spatial=spatial), mutable=['batch_stats'])
    return out, state['batch_stats']['E']['encoder_q']

  def _encode_views(self, enc_params: Any, batch_stats: Any, views: list[jax.Array],
                    indices: tuple[int, ...], spatial: bool = False
                    ) -> tuple[dict[int, tuple[jax.Array, ...]], Any]:
    """{view index: (fea, proj[, map])} of the given views and the new BatchNorm statistics.

    Views of one size share one pass (one BatchNorm batch, as multi-crop training batches its
    crops); with one query and one key view this is the reference's separate q and k batches.
    """
    out = {}
    for size in sorted({views[i].shape for i in indices}):
      group = [i for i in indices if views[i].shape == size]
      k = views[group[0]].shape[0]
      encoded, batch_stats = self._encode(enc_params, batch_stats,
                                          jnp.concatenate([views[i] for i in group]), spatial)
      for n, i in enumerate(group):
        out[i] = tuple(x[n * k:(n + 1) * k] for x in encoded)
    return out, batch_stats

  def _keys(self, extra: dict[str, Any], enc_params: Any, views: list[jax.Array]
            ) -> tuple[dict[int, jax.Array], dict[str, Any]]:
    """The momentum encoder steps towards the query encoder, then encodes the key views."""
    key_encoder = extra['key_encoder']
    params_k = dasr_nn.momentum_update(key_encoder['params'], enc_params,
                                       self.config.dasr.momentum)
    encoded, batch_stats = self._encode_views(params_k, key_encoder['batch_stats'], views,
                                              self.key_views)
    keys = {v: jax.lax.stop_gradient(out[1]) for v, out in encoded.items()}
    return keys, {'params': params_k, 'batch_stats': batch_stats}

  def _losses(self, trainable: dict[str, Any], batch_stats: Any, views: list[jax.Array],
              hr: jax.Array, record: Mapping[str, jax.Array], keys: dict[int, jax.Array],
              queue: jax.Array | None, stage2: jax.Array) -> tuple[jax.Array, tuple[Any, ...]]:
    """(total loss, (metrics, new batch_stats)): the contrastive term in stage 1; in stage 2
    L1(SR, HR) plus `con_weight` x the contrastive term. Both are computed; `stage2` selects."""
    c = self.config.dasr
    metrics = {'l_con': jnp.zeros(()), 'con_acc': jnp.zeros(()), 'l_sr': jnp.zeros(())}
    fea = rep_map = None
    terms = []
    stats, encoded = None, {}
    if self.encoded:
      stats = batch_stats['E']['encoder_q']
      encoded, stats = self._encode_views(trainable['E']['encoder_q'], stats, views,
                                          self.query_views, self.net.local_fusion)
      fea = encoded[0][0]
      rep_map = encoded[0][2] if self.net.local_fusion else None
    for j, out in encoded.items() if self.objective != 'none' else ():
      key = centroid([keys[v] for v in self.key_views if v != j])
      if self.objective == 'infonce':
        logits, loss = dasr_nn.info_nce(out[1], key, queue, c.temperature)
        terms.append((loss, jnp.mean(jnp.argmax(logits, axis=1) == 0)))
      else:
        pred = self.predictor.apply({'params': trainable['predictor']}, out[1])
        terms.append((dasr_nn.byol_loss(pred, key), jnp.zeros(())))
    if terms:
      metrics['l_con'] = sum(t[0] for t in terms) / len(terms)
      metrics['con_acc'] = sum(t[1] for t in terms) / len(terms)
    if c.condition == 'oracle':
      fea = self.oracle.apply({'params': trainable['oracle']},
                              classic.oracle_features(record))
    elif c.condition == 'none':
      fea = jnp.broadcast_to(trainable['blind_rep'], (hr.shape[0], self.net.enc_widths[-1]))
    generator = {k: v for k, v in trainable.items() if k in GENERATOR_KEYS}
    sr = self.net.apply({'params': generator}, views[0], fea, rep_map,
                        method=lambda m, *a: m.G(*a))
    metrics['l_sr'] = losses.l1_loss(sr, hr)  # on 0..255, as the reference
    total = jnp.where(stage2, metrics['l_sr'] + c.con_weight * metrics['l_con'], metrics['l_con'])
    return total, (metrics, {'E': {'encoder_q': stats}} if self.encoded else None)

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    pair = self.degradation(batch['train'], jax.random.fold_in(ctx.key, 0))
    views = [x[:, i] * 255.0 for x in pair['lq'] for i in range(x.shape[1])]
    hr = pair['gt'][0][:, 0] * 255.0
    extra = dict(state.extra)
    trainable = self._trainable(state.params)
    keys = {}
    if self.objective != 'none':
      keys, extra['key_encoder'] = self._keys(extra, trainable['E']['encoder_q'], views)
    queue = extra.get('queue')
    batch_stats = extra.get('batch_stats')

    # Stage 1 (encoder only) and stage 2 differ by masks, not by a `lax.cond`: XLA:CPU ran the
    # SR network 5x slower inside a conditional branch than outside.
    stage2 = ctx.step >= self.stage1
    enc, sr = split(trainable)
    grad_fn = jax.value_and_grad(
        lambda enc, sr: self._losses({**enc, **sr}, batch_stats, views, hr, pair['record'],
                                     keys, queue, stage2),
        argnums=(0, 1), has_aux=True)
    (loss, (metrics, new_stats)), grads = grad_fn(enc, sr)
    opt = dict(state.opt)
    if enc:
      updates, opt['encoder'] = self.tx['encoder'].update(grads[0], opt['encoder'], enc)
      enc = optax.apply_updates(enc, updates)
    updates, sr_opt = self.tx['sr'].update(grads[1], opt['sr'], sr)
    sr_new = optax.apply_updates(sr, updates)
    if self.stage1:  # the SR optimiser's first update is stage 2's first step
      sr_new, sr_opt = jax.tree.map(lambda a, b: jnp.where(stage2, a, b), (sr_new, sr_opt),
                                    (sr, opt['sr']))
    opt['sr'] = sr_opt
    trainable = {**enc, **sr_new}
    metrics['loss'] = loss
    if self.encoded:
      extra['batch_stats'] = new_stats
    if self.objective == 'infonce':
      all_keys = centroid([keys[v] for v in self.key_views])
      extra['queue'], extra['pointer'] = dasr_nn.enqueue(queue, extra['pointer'], all_keys)
    params = self._params(trainable, state.params)
    new = api.TrainState(params=params, opt=opt, extra=extra)
    metrics['stage'] = stage2.astype(jnp.float32) + 1
    return new, metrics, api.all_finite(metrics['loss'], grads, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    """The generator (its encoder with the running BatchNorm statistics, or the blind network)
    and, for 'oracle' runs, the MLP that conditions it from true degradation parameters."""
    variables = {'params': ema['generator']}
    if 'batch_stats' in state.extra:
      variables['batch_stats'] = state.extra['batch_stats']
    products = {'generator': api.Product(self.spec, variables)}
    if 'oracle' in ema:
      products['oracle'] = api.Product(common.oracle_spec(self.oracle.features),
                                       {'params': ema['oracle']})
    return products

  def evaluators(self) -> dict[str, api.Evaluator]:
    if self.config.dasr.condition == 'oracle':
      return {}  # the oracle needs the true degradation: experiments/dasr_small.py scores it
    return common.sr_validation(self.config, self.degradation.base)
