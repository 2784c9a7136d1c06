"""Named optimisers from config: an optax optimiser and its learning-rate schedule per name.

A method lists its optimisers in `config.optim` (`optim.generator`, `optim.discriminator`, ...),
each a section made by `optimizer_config`, and builds them with `build`. Schedules count the
optimiser's own updates (an optimiser stepped every tenth batch reaches a milestone ten times
later). Update n (0-based) uses the rate BasicSR uses at `current_iter = n + 1`: its schedulers
step before each update, so a milestone m applies from the m-th update on.
"""

from typing import Any, Sequence

import jax.numpy as jnp
import ml_collections
import optax

from condsr_jax import config as config_lib

KINDS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'multistep', 'cosine', 'linear')


def optimizer_config(lr: float, *, kind: str = 'adam', b1: float = 0.9, b2: float = 0.99,
                     eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                     nesterov: bool = False, schedule: str = 'multistep',
                     milestones: Sequence[int] = (), gamma: float = 0.5, decay_steps: int = 0,
                     decay_start: int = 0, min_lr: float = 0.0, warmup_steps: int = 0,
                     clip_norm: float = 0.0
                     ) -> ml_collections.ConfigDict:
  """One optimiser's section. Defaults are BasicSR's Adam (betas 0.9, 0.99; eps 1e-8).

  kind: 'adam' | 'adamw' (decoupled weight decay, as torch's AdamW) | 'sgd' (`momentum`,
    `nesterov`; `weight_decay` added to the gradient, as torch's SGD).
  schedule: 'constant'; 'multistep' (lr x gamma at each of `milestones`, BasicSR's
    MultiStepRestartLR without restarts); 'cosine' (from lr to `min_lr` over `decay_steps`, its
    CosineAnnealingRestartLR with one period); 'linear' (lr for `decay_start` updates, then
    linearly to `min_lr` over `decay_steps`, the DSN's LambdaLR decay per step rather than per
    epoch). `warmup_steps` > 0 ramps lr linearly up first
    (BasicSR's warm-up: iteration t of the warm-up uses lr x t / warmup_steps).
  clip_norm: > 0 clips the global gradient norm first.
  """
  return ml_collections.ConfigDict(dict(
      kind=kind, lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, momentum=momentum,
      nesterov=nesterov, schedule=schedule, milestones=list(milestones), gamma=gamma,
      decay_steps=decay_steps, decay_start=decay_start, min_lr=min_lr, warmup_steps=warmup_steps,
      clip_norm=clip_norm))


def validate(spec: ml_collections.ConfigDict, field: str) -> None:
  """Raises ConfigError naming the first wrong field of the optimiser section at `field`."""
  check = config_lib.check
  check(spec.kind in KINDS, f'{field}.kind', f'one of {KINDS}', spec.kind)
  check(spec.lr > 0, f'{field}.lr', 'must be positive', spec.lr)
  check(0 <= spec.b1 < 1 and 0 <= spec.b2 < 1, f'{field}.b1/b2', 'must be in [0, 1)',
        (spec.b1, spec.b2))
  check(spec.eps >= 0, f'{field}.eps', 'must be >= 0', spec.eps)
  check(spec.weight_decay >= 0, f'{field}.weight_decay', 'must be >= 0', spec.weight_decay)
  check(0 <= spec.momentum < 1, f'{field}.momentum', 'must be in [0, 1)', spec.momentum)
  check(spec.schedule in SCHEDULES, f'{field}.schedule', f'one of {SCHEDULES}', spec.schedule)
  check(all(int(m) > 0 for m in spec.milestones), f'{field}.milestones',
        'must be positive step counts', spec.milestones)
  check(spec.gamma > 0, f'{field}.gamma', 'must be positive', spec.gamma)
  if spec.schedule in ('cosine', 'linear'):
    check(spec.decay_steps > 0, f'{field}.decay_steps', f"must be positive for '{spec.schedule}'",
          spec.decay_steps)
    check(spec.decay_start >= 0, f'{field}.decay_start', 'must be >= 0', spec.decay_start)
    check(0 <= spec.min_lr <= spec.lr, f'{field}.min_lr', f'must be in [0, lr = {spec.lr}]',
          spec.min_lr)
  check(spec.warmup_steps >= 0, f'{field}.warmup_steps', 'must be >= 0', spec.warmup_steps)
  check(spec.clip_norm >= 0, f'{field}.clip_norm', 'must be >= 0 (0: no clipping)',
        spec.clip_norm)


def learning_rate(spec: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the optimiser's update count (0-based), which is
  BasicSR's iteration (1-based) minus one."""
  if spec.schedule == 'multistep':
    base = optax.piecewise_constant_schedule(
        spec.lr, {int(m): float(spec.gamma) for m in spec.milestones})
  elif spec.schedule == 'cosine':
    base = optax.cosine_decay_schedule(spec.lr, int(spec.decay_steps),
                                       alpha=spec.min_lr / spec.lr)
  elif spec.schedule == 'linear':
    base = optax.linear_schedule(spec.lr, spec.min_lr, int(spec.decay_steps),
                                 int(spec.decay_start))
  else:
    base = optax.constant_schedule(spec.lr)
  warmup = int(spec.warmup_steps)

  def schedule(count: Any) -> Any:
    iteration = count + 1
    if not warmup:
      return base(iteration)
    return base(iteration) * jnp.minimum(iteration / warmup, 1.0)

  return schedule


def build(spec: ml_collections.ConfigDict, lr: optax.Schedule | None = None
          ) -> optax.GradientTransformation:
  """The optax optimiser of one `optimizer_config` section; `lr` replaces its schedule (a
  method whose rate follows its own stages, e.g. DASR's encoder)."""
  lr = lr or learning_rate(spec)
  if spec.kind == 'adam':
    tx = optax.adam(lr, b1=spec.b1, b2=spec.b2, eps=spec.eps)
    if spec.weight_decay:  # torch's Adam adds L2 weight decay to the gradient
      tx = optax.chain(optax.add_decayed_weights(spec.weight_decay), tx)
  elif spec.kind == 'adamw':
    tx = optax.adamw(lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay)
  else:
    tx = optax.sgd(lr, momentum=spec.momentum or None, nesterov=spec.nesterov)
    if spec.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(spec.weight_decay), tx)
  if spec.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(spec.clip_norm), tx)
  return tx


def build_all(section: ml_collections.ConfigDict) -> dict[str, optax.GradientTransformation]:
  """Every optimiser of `config.optim`, by name."""
  return {name: build(spec) for name, spec in section.items()}
