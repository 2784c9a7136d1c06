"""CMDSR training: task batches, the task contrastive loss, and CMDSR's alternating optimisation.

A batch holds k tasks of 2n patches sharing one degradation; the halves X_i (first n) and X'_i
(last n) are the two support sets of the contrastive loss. `cmdsr.schedule='alternating'` is
the reference's `Train_CMDSR.py`: one SR step per half (the condition of the half's own
patches, not differentiated; Adam over the SR net incl. its modulations), and every
`cmdsr.cond_every` SR steps one ConditionNet step on L_con + 0.1 L1(SR(X | cond(X)), HR) with
its own Adam. `'joint'` takes one step on everything with L1 + `con_weight` L_con.

`cmdsr.condition` picks where the condition comes from: 'support' (CMDSR), 'oracle' (an MLP of
the true degradation parameters: the upper bound of the experiments) or 'none' (a constant
condition: the blind BaseNet of the same size).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from condsr_jax import losses, models
from condsr_jax.degrade import tasks
from condsr_jax.methods import base
from condsr_jax.nn import cmdsr as cmdsr_nn

CONDITIONS = ('support', 'oracle', 'none')
# Degradation parameters the oracle sees (normalised by these scales).
ORACLE_FEATURES = (('blur/sigma_x', 4.0), ('blur/sigma_y', 4.0), ('blur/theta', np.pi),
                   ('noise/sigma', 75.0))


class OracleCondition(nn.Module):
  """The condition from the true degradation parameters: a 2-layer MLP."""
  features: int = 128

  @nn.compact
  def __call__(self, params: jax.Array) -> jax.Array:
    return nn.Dense(self.features)(nn.relu(nn.Dense(self.features)(params)))


@flax.struct.dataclass
class CMDSRState:
  step: jax.Array
  rng: jax.Array
  params: Any  # {'condition_net' | 'oracle': ..., 'sr_net': ..., ['modulations': ...]}
  opt_sr: Any
  opt_cond: Any
  ema_params: Any
  nonfinite: jax.Array


def split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(SR part, condition part) of the parameters: CMDSR's two optimiser groups."""
  cond_keys = ('condition_net', 'oracle')
  return ({k: v for k, v in params.items() if k not in cond_keys},
          {k: v for k, v in params.items() if k in cond_keys})


class CMDSRMethod:
  """CMDSR on `CMDSRNet` (SRResNet BaseNet, [0, 255]) or `CMDSRRRDBNet` ([0, 1])."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    c = config.cmdsr
    if c.condition not in CONDITIONS:
      raise ValueError(f'config.cmdsr.condition = {c.condition!r}: one of {CONDITIONS}')
    if c.schedule not in ('alternating', 'joint'):
      raise ValueError(f"config.cmdsr.schedule = {c.schedule!r}: 'alternating' or 'joint'")
    self.spec = base.generator_spec(config)
    self.net = self.spec.build(dtype=jnp.dtype(config.model.dtype))
    self.n = self.net.support_size
    self.degradation = tasks.TaskDegradation(config.degradation, config.scale)
    if len(self.degradation.crops) != 1 or self.degradation.crops[0][1] != 2 * self.n:
      raise ValueError(f'config.degradation.tasks.crops = {self.degradation.crops}: CMDSR '
                       f'needs one group of 2 x support_size = {2 * self.n} patches')
    self.range = getattr(self.net, 'pixel_range', 1.0)
    self.cond_dim = 2 * self.net.cond_feat
    self.oracle = OracleCondition(self.cond_dim)
    self.tx_sr = base.adam(config.optim)
    self.tx_cond = base.adam(config.optim_cond)

  def param_sampler(self):
    return self.degradation.param_sampler()

  def constants(self) -> dict[str, Any]:
    return {}

  def init_state(self, rng: jax.Array, init_params: Any = None) -> CMDSRState:
    key = jax.random.wrap_key_data(rng)
    params = init_params
    if params is None:
      params = self.net.init(jax.random.fold_in(key, 1), *self.net.example_inputs())['params']
    params = dict(params)
    if self.config.cmdsr.condition != 'support':
      del params['condition_net']
    if self.config.cmdsr.condition == 'oracle':
      x = jnp.zeros((1, len(ORACLE_FEATURES)))
      params['oracle'] = self.oracle.init(jax.random.fold_in(key, 2), x)['params']
    sr_part, cond_part = split(params)
    opt_sr = self.tx_sr.init(params if self.config.cmdsr.schedule == 'joint' else sr_part)
    return CMDSRState(step=jnp.zeros((), jnp.int32), rng=rng, params=params, opt_sr=opt_sr,
                      opt_cond=self.tx_cond.init(cond_part), ema_params=params,
                      nonfinite=jnp.zeros((2,), jnp.int32))

  def adapt_initial_weights(self, spec: models.ModelSpec, variables: Any) -> Any:
    """A plain RRDBNet checkpoint starts a CMDSRRRDBNet with identity modulation."""
    if spec.arch == 'RRDBNet' and self.spec.arch == 'CMDSRRRDBNet':
      return cmdsr_nn.init_from_rrdbnet(self.net, variables, jax.random.key(self.config.seed)
                                        )['params']
    if spec.arch != self.spec.arch:
      raise ValueError(f'config.init.generator holds a {spec.arch}; {self.spec.arch} starts '
                       'from its own kind' + (' or an RRDBNet' if 'RRDB' in self.spec.arch
                                             else ''))
    return variables['params']

  # -------------------------------------------------------------------------------------------

  def condition(self, params: Any, support: jax.Array, record: dict[str, jax.Array]
                ) -> jax.Array:
    """[k, D] conditions from a support set [k, h, w, n*C] (in [0, 1]) or the true record."""
    source = self.config.cmdsr.condition
    k = support.shape[0]
    if source == 'none':
      return jnp.zeros((k, self.cond_dim), jnp.float32)
    if source == 'oracle':
      feats = jnp.stack([jnp.asarray(record[name], jnp.float32) / s
                         for name, s in ORACLE_FEATURES], -1)
      return self.oracle.apply({'params': params['oracle']}, feats)
    return self.net.apply({'params': params}, support * self.range, method='condition')

  def _sr(self, params: Any, lq: jax.Array, cond: jax.Array) -> jax.Array:
    """[k*n, h, w, C] task-major patches in [0, 1] -> SR in the network's range."""
    return self.net.apply({'params': params}, lq * self.range, cond, method='super_resolve')

  def _l1(self, params, lq, gt, cond):
    return losses.l1_loss(self._sr(params, lq, cond), gt * self.range)

  def train_step(self, state: CMDSRState, batch: dict[str, jax.Array],
                 consts: dict[str, Any] | None = None) -> tuple[CMDSRState, dict[str, jax.Array]]:
    del consts
    c = self.config.cmdsr
    key = base.step_key(state.rng, state.step)
    pair = self.degradation(batch, jax.random.fold_in(key, 0))
    lq, gt, record = pair['lq'][0], pair['gt'][0], pair['record']
    k, n = lq.shape[0], self.n
    halves = [(lq[:, i * n:(i + 1) * n], gt[:, i * n:(i + 1) * n]) for i in range(2)]
    flat = lambda x: x.reshape(k * n, *x.shape[2:])  # pylint: disable=unnecessary-lambda-assignment
    supports = [cmdsr_nn.stack_support(x) for x, _ in halves]
    perm = losses.random_derangement(jax.random.fold_in(key, 1), k)

    def contrastive(params):
      f1, f2 = (self.condition(params, s, record) for s in supports)
      return losses.task_contrastive_loss(f1, f2, perm, c.elementwise_distance)

    metrics = {}
    if c.schedule == 'joint':
      def joint_loss(params):
        l_sr = sum(self._l1(params, flat(x), flat(y), self.condition(params, s, record))
                   for (x, y), s in zip(halves, supports)) / 2
        l_con, d_in, d_cross = contrastive(params)
        use_con = c.condition == 'support'
        total = l_sr + (c.con_weight * l_con if use_con else 0.0)
        return total, {'l_sr': l_sr, 'l_con': l_con, 'd_in': d_in, 'd_cross': d_cross}

      (loss, metrics), grads = jax.value_and_grad(joint_loss, has_aux=True)(state.params)
      updates, opt_sr = self.tx_sr.update(grads, state.opt_sr, state.params)
      params, opt_cond = base.apply_updates(state.params, updates), state.opt_cond
      all_grads = grads
    else:
      params, opt_sr, l_srs, all_grads = state.params, state.opt_sr, [], []
      for (x, y), s in zip(halves, supports):  # one SR step per half
        cond = jax.lax.stop_gradient(self.condition(params, s, record))
        sr_part, cond_part = split(params)
        l_sr, grads = jax.value_and_grad(
            lambda p, x=x, y=y, cond=cond, cp=cond_part: self._l1({**p, **cp}, flat(x), flat(y),
                                                                  cond))(sr_part)
        updates, opt_sr = self.tx_sr.update(grads, opt_sr, sr_part)
        params = {**base.apply_updates(sr_part, updates), **cond_part}
        l_srs.append(l_sr)
        all_grads.append(grads)
      sr_steps = 2 * state.step
      due = (sr_steps + 2) // c.cond_every > sr_steps // c.cond_every
      if c.condition == 'none':
        due = jnp.array(False)

      def cond_loss(cond_part, sr_part):
        p = {**sr_part, **cond_part}
        l_con, d_in, d_cross = contrastive(p)
        (x, y), s = halves[0], supports[0]
        l_sr = self._l1(p, flat(x), flat(y), self.condition(p, s, record))
        use_con = c.condition == 'support'
        return ((c.con_weight * l_con if use_con else 0.0) + c.sr_in_cond_weight * l_sr,
                {'l_con': l_con, 'd_in': d_in, 'd_cross': d_cross})

      def cond_update(operands):
        params, opt_cond = operands
        sr_part, cond_part = split(params)
        (_, m), grads = jax.value_and_grad(cond_loss, has_aux=True)(cond_part, sr_part)
        updates, opt_cond = self.tx_cond.update(grads, opt_cond, cond_part)
        return {**sr_part, **base.apply_updates(cond_part, updates)}, opt_cond, m, grads

      def no_update(operands):
        params, opt_cond = operands
        sr_part, cond_part = split(params)
        _, m = cond_loss(cond_part, sr_part)
        return params, opt_cond, m, jax.tree.map(jnp.zeros_like, cond_part)

      params, opt_cond, metrics, cond_grads = jax.lax.cond(due, cond_update, no_update,
                                                           (params, state.opt_cond))
      all_grads.append(cond_grads)
      loss = metrics['l_sr'] = sum(l_srs) / 2
    ok = base.all_finite(loss, all_grads, params)
    new = state.replace(params=params, opt_sr=opt_sr, opt_cond=opt_cond,
                        ema_params=base.ema_update(state.ema_params, params,
                                                   self.config.train.ema_decay))
    new = base.keep_if_finite(ok, new, state)
    new = new.replace(step=state.step + 1, nonfinite=base.count_nonfinite(state.nonfinite, ok))
    return new, {'loss': loss, **metrics, 'skipped': 1.0 - ok.astype(jnp.float32)}

  # -------------------------------------------------------------------------------------------

  def inference_params(self, state: CMDSRState) -> Any:
    return state.ema_params

  def super_resolve(self, params: Any, lq: jax.Array) -> jax.Array:
    """Validation: the condition from crops of the LR image itself (CMDSR's test protocol)."""
    if self.config.cmdsr.condition == 'oracle':
      raise ValueError('the oracle condition needs the true degradation; evaluate it with the '
                       'degradation parameters (experiments/cmdsr_small.py)')
    b, h, w, ch = lq.shape
    size = min(h, w, self.degradation.crops[0][0])
    tops = np.linspace(0, h - size, self.n).astype(int)
    lefts = np.linspace(0, w - size, self.n).astype(int)[::-1]
    crops = jnp.stack([lq[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)], 1)
    cond = self.condition(params, cmdsr_nn.stack_support(crops), {})
    return self.super_resolve_conditioned(params, lq, cond)

  def super_resolve_conditioned(self, params: Any, lq: jax.Array, cond: jax.Array) -> jax.Array:
    """SR of [B, h, w, C] in [0, 1] (task-major) under given [k, D] conditions, in [0, 1]."""
    return self._sr(params, lq, cond) / self.range

  def export(self, state: CMDSRState) -> tuple[models.ModelSpec, dict[str, Any]]:
    """The EMA model; only 'support' runs give a deployable CMDSR (others lack a ConditionNet)."""
    params = jax.tree.map(np.asarray, jax.device_get(self.inference_params(state)))
    return self.spec, {'params': params}
