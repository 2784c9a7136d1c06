"""CMDSR training: task batches, the task contrastive loss, and CMDSR's alternating optimisation.

A batch holds k tasks of 2n patches sharing one degradation; the halves X_i (first n) and X'_i
(last n) are the two support sets of the contrastive loss. `cmdsr.schedule='alternating'` is
the reference's `Train_CMDSR.py`: one SR step per half (the condition of the half's own
patches, not differentiated; optimiser 'sr' over the SR net incl. its modulations), and every
`cmdsr.cond_every` SR steps one ConditionNet step on L_con + 0.1 L1(SR(X | cond(X)), HR) with
optimiser 'condition'. `'joint'` takes one 'sr' step on everything with L1 + `con_weight` L_con.

`cmdsr.condition` picks where the condition comes from: 'support' (CMDSR), 'oracle' (an MLP of
the true degradation parameters: the upper bound of the experiments) or 'none' (a constant
condition: the blind BaseNet of the same size). The exported generator computes its condition
from an LR image the way the network defines (`condition_from_lr`), so training validation,
`condsr-jax upscale` and `evaluate` condition it alike.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from condsr_jax import losses, models
from condsr_jax.degrade import classic, tasks
from condsr_jax.methods import api, common, optimizers
from condsr_jax.nn import cmdsr as cmdsr_nn, conditional

CONDITIONS = ('support', 'oracle', 'none')
SCHEDULES = ('alternating', 'joint')
CONDITION_KEYS = ('condition_net', 'oracle')  # the parameters optimiser 'condition' steps


def split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(SR part, condition part) of the parameters: CMDSR's two optimiser groups."""
  return ({k: v for k, v in params.items() if k not in CONDITION_KEYS},
          {k: v for k, v in params.items() if k in CONDITION_KEYS})


@api.register('cmdsr')
class CMDSRMethod(api.MethodBase):
  """CMDSR on `CMDSRNet` (SRResNet BaseNet) or `CMDSRRRDBNet` (the RRDBNet graft)."""

  key_metric = api.KeyMetric('val/psnr')

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = common.network_config('CMDSRNet', num_feat=64, num_block=10, support_size=20,
                                    cond_feat=64)
    c.degradation = tasks.default_config('classic', 4, 'cmdsr')
    c.cmdsr = ml_collections.ConfigDict()
    c.cmdsr.condition = 'support'  # support | oracle | none (blind BaseNet)
    c.cmdsr.schedule = 'alternating'  # alternating (the reference) | joint
    c.cmdsr.cond_every = 10  # SR steps between ConditionNet steps
    c.cmdsr.con_weight = 1.0
    c.cmdsr.sr_in_cond_weight = 0.1
    c.cmdsr.elementwise_distance = True  # the reference's distance over a size-1 axis
    c.optim = ml_collections.ConfigDict({
        'sr': optimizers.optimizer_config(1e-4, b2=0.999, milestones=(500_000, 900_000),
                                          gamma=0.1),
        'condition': optimizers.optimizer_config(1e-4, b2=0.999, milestones=(500_000, 900_000),
                                                 gamma=0.5)})
    c.init = ml_collections.ConfigDict({'generator': ''})
    return c

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    check, c = common.check, config.cmdsr
    common.validate_network(config.model, 'model')
    check(c.condition in CONDITIONS, 'cmdsr.condition', f'one of {CONDITIONS}', c.condition)
    check(c.schedule in SCHEDULES, 'cmdsr.schedule', f'one of {SCHEDULES}', c.schedule)
    check(c.cond_every > 0, 'cmdsr.cond_every', 'must be positive', c.cond_every)
    for field in ('con_weight', 'sr_in_cond_weight'):
      check(c[field] >= 0, f'cmdsr.{field}', 'must be >= 0', c[field])
    tasks.validate(config.degradation, config.scale)
    n = config.model.kwargs.get('support_size', 20)
    crops = tuple(tuple(g) for g in config.degradation.tasks.crops)
    check(len(crops) == 1 and crops[0][1] == 2 * n, 'degradation.tasks.crops',
          f'CMDSR needs one group of 2 x support_size = {2 * n} patches', crops)
    if c.condition == 'oracle':
      common.validate_oracle(config)

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.degradation = tasks.TaskDegradation(config.degradation, config.scale)
    patch = self.degradation.crops[0][0]
    base = common.generator_spec(config)
    self.spec = models.ModelSpec(base.arch, {**base.kwargs, 'support_patch': patch,
                                             'blind': config.cmdsr.condition != 'support'})
    self.net = common.build_network(config, self.spec, config.model)
    self.n = self.net.support_size
    self.range = self.net.image_range  # the L1 is the reference's (CMDSRNet: 0..255)
    self.oracle = conditional.OracleCondition(2 * self.net.cond_feat)
    self.tx = optimizers.build_all(config.optim)

  def streams(self):
    return {'train': common.train_stream(self.config, crop_size=self.degradation.canvas,
                                         param_sampler=self.degradation.param_sampler())}

  def networks(self):
    return {'generator': self.spec}

  def initial_variables(self, name: str, spec: models.ModelSpec, variables: Any) -> Any:
    """A plain RRDBNet checkpoint starts a CMDSRRRDBNet with identity modulation."""
    if spec.arch == 'RRDBNet' and self.spec.arch == 'CMDSRRRDBNet':
      return cmdsr_nn.init_from_rrdbnet(self.net, variables, jax.random.key(self.config.seed))
    if self.net.blind and spec.arch == self.spec.arch and not spec.kwargs.get('blind', False):
      # A CMDSR checkpoint starts the blind BaseNet of an ablation: its ConditionNet is dropped.
      spec = models.ModelSpec(spec.arch, {**spec.kwargs, 'blind': True})
      variables = {**variables, 'params': {k: v for k, v in variables['params'].items()
                                           if k != 'condition_net'}}
    return super().initial_variables(name, spec, variables)

  def init_state(self, key: jax.Array, initial: Mapping[str, Any]) -> api.TrainState:
    k_net, k_oracle = jax.random.split(key)
    if 'generator' in initial:
      params = dict(initial['generator']['params'])
    else:
      params = dict(self.net.init(k_net, *self.net.example_inputs())['params'])
    if self.config.cmdsr.condition == 'oracle':
      x = jnp.zeros((1, len(classic.ORACLE_FEATURES)))
      params['oracle'] = self.oracle.init(k_oracle, x)['params']
    sr_part, cond_part = split(params)
    joint = self.config.cmdsr.schedule == 'joint'
    return api.TrainState(
        params={'generator': params},
        opt={'sr': self.tx['sr'].init(params if joint else sr_part),
             'condition': self.tx['condition'].init(cond_part)},
        extra={})

  def condition(self, params: Any, patches: jax.Array, record: Mapping[str, jax.Array]
                ) -> jax.Array:
    """[k, D] conditions of k tasks from their support patches [k, n, p, p, C] in [0, 1]
    ('support'; zeros for 'none') or from the true degradation record ('oracle')."""
    if self.config.cmdsr.condition == 'oracle':
      return self.oracle.apply({'params': params['oracle']}, classic.oracle_features(record))
    net_params = {k: v for k, v in params.items() if k != 'oracle'}
    return self.net.apply({'params': net_params}, patches, method='condition_from_support')

  def upscale(self, params: Any, lq: jax.Array, cond: jax.Array) -> jax.Array:
    """SR in [0, 1] of a task-major batch [k*m, h, w, C] under [k, D] conditions."""
    net_params = {k: v for k, v in params.items() if k != 'oracle'}
    return self.net.apply({'params': net_params}, lq, cond, method='upscale')

  def _l1(self, params, lq, gt, cond):
    """L1 on the network's pixel range (CMDSRNet: 0..255, as the reference's loss)."""
    return losses.l1_loss(self.upscale(params, lq, cond), gt) * self.range

  def train_step(self, state: api.TrainState, batch: api.Batch, ctx: api.StepContext
                 ) -> tuple[api.TrainState, api.Metrics, jax.Array]:
    c = self.config.cmdsr
    pair = self.degradation(batch['train'], jax.random.fold_in(ctx.key, 0))
    lq, gt, record = pair['lq'][0], pair['gt'][0], pair['record']
    k, n = lq.shape[0], self.n
    halves = [(lq[:, i * n:(i + 1) * n], gt[:, i * n:(i + 1) * n]) for i in range(2)]
    flat = lambda x: x.reshape(k * n, *x.shape[2:])  # pylint: disable=unnecessary-lambda-assignment
    perm = losses.random_derangement(jax.random.fold_in(ctx.key, 1), k)
    use_con = c.condition == 'support'

    def contrastive(params):
      f1, f2 = (self.condition(params, x, record) for x, _ in halves)
      return losses.task_contrastive_loss(f1, f2, perm, c.elementwise_distance)

    params, opt_sr, opt_cond = state.params['generator'], state.opt['sr'], state.opt['condition']
    if c.schedule == 'joint':
      def joint_loss(params):
        l_sr = sum(self._l1(params, flat(x), flat(y), self.condition(params, x, record))
                   for x, y in halves) / 2
        l_con, d_in, d_cross = contrastive(params)
        total = l_sr + (c.con_weight * l_con if use_con else 0.0)
        return total, {'l_sr': l_sr, 'l_con': l_con, 'd_in': d_in, 'd_cross': d_cross}

      (loss, metrics), grads = jax.value_and_grad(joint_loss, has_aux=True)(params)
      updates, opt_sr = self.tx['sr'].update(grads, opt_sr, params)
      params = optax.apply_updates(params, updates)
      all_grads = grads
    else:
      l_srs, all_grads = [], []
      for x, y in halves:  # one SR step per half
        cond = jax.lax.stop_gradient(self.condition(params, x, record))
        sr_part, cond_part = split(params)
        l_sr, grads = jax.value_and_grad(
            lambda p, x=x, y=y, cond=cond, cp=cond_part: self._l1({**p, **cp}, flat(x), flat(y),
                                                                  cond))(sr_part)
        updates, opt_sr = self.tx['sr'].update(grads, opt_sr, sr_part)
        params = {**optax.apply_updates(sr_part, updates), **cond_part}
        l_srs.append(l_sr)
        all_grads.append(grads)
      sr_steps = 2 * ctx.step
      due = (sr_steps + 2) // c.cond_every > sr_steps // c.cond_every
      if c.condition == 'none':
        due = jnp.array(False)

      def cond_loss(cond_part, sr_part):
        p = {**sr_part, **cond_part}
        l_con, d_in, d_cross = contrastive(p)
        x, y = halves[0]
        l_sr = self._l1(p, flat(x), flat(y), self.condition(p, x, record))
        return ((c.con_weight * l_con if use_con else 0.0) + c.sr_in_cond_weight * l_sr,
                {'l_con': l_con, 'd_in': d_in, 'd_cross': d_cross})

      def cond_update(operands):
        params, opt_cond = operands
        sr_part, cond_part = split(params)
        (_, m), grads = jax.value_and_grad(cond_loss, has_aux=True)(cond_part, sr_part)
        updates, opt_cond = self.tx['condition'].update(grads, opt_cond, cond_part)
        return {**sr_part, **optax.apply_updates(cond_part, updates)}, opt_cond, m, grads

      def no_update(operands):
        params, opt_cond = operands
        sr_part, cond_part = split(params)
        _, m = cond_loss(cond_part, sr_part)
        return params, opt_cond, m, jax.tree.map(jnp.zeros_like, cond_part)

      params, opt_cond, metrics, cond_grads = jax.lax.cond(due, cond_update, no_update,
                                                           (params, opt_cond))
      all_grads.append(cond_grads)
      loss = metrics['l_sr'] = sum(l_srs) / 2
    new = api.TrainState(params={'generator': params}, opt={'sr': opt_sr, 'condition': opt_cond},
                         extra={})
    return new, {'loss': loss, **metrics}, api.all_finite(loss, all_grads, params)

  def ema_params(self, state: api.TrainState) -> Any:
    return state.params['generator']

  def exports(self, state: api.TrainState, ema: Any) -> dict[str, api.Product]:
    """The generator (conditioning itself from its input; blind unless 'support') and, for
    'oracle' runs, the oracle MLP that conditions it from true degradation parameters."""
    products = {'generator': api.Product(
        self.spec, {'params': {k: v for k, v in ema.items() if k != 'oracle'}})}
    if 'oracle' in ema:
      products['oracle'] = api.Product(common.oracle_spec(self.oracle.features),
                                       {'params': ema['oracle']})
    return products

  def evaluators(self) -> dict[str, api.Evaluator]:
    if self.config.cmdsr.condition == 'oracle':
      return {}  # the oracle needs the true degradation: experiments/cmdsr_small.py scores it
    return common.sr_validation(self.config, self.degradation.base)
