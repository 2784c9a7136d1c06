"""Real-ESRGAN's training-pair pool (`_dequeue_and_enqueue`) as a pure function of its state.

While the pool fills, batches pass through and are stored. Once full, each step trains on pool
entries and stores its own batch in their place, which decorrelates the pairs of a batch.
Two rules for picking the entries:
- default: `b` entries drawn without replacement swap with the batch. This draws what the
  reference draws (entries are exchangeable) without a gather of the whole pool per step, and
  any pool size works.
- `reference=True`: the reference's rule, bit for bit given its permutation: shuffle the whole
  pool, train on its first `b` entries, store the batch there (the pool size must be a multiple
  of `b`).
"""

from typing import Any

import jax
import jax.numpy as jnp

# {'count': int32 [] (the reference's queue_ptr), 'data': {name: [size, ...]}}
Pool = dict[str, Any]
Arrays = dict[str, jax.Array]


def init_pool(size: int, example: Arrays) -> Pool:
  """An empty pool of `size` zero entries shaped like one example of each array in `example`."""
  return {'count': jnp.zeros((), jnp.int32),
          'data': {k: jnp.zeros((size, *v.shape[1:]), v.dtype) for k, v in example.items()}}


def _sizes(pool: Pool, batch: Arrays) -> tuple[int, int]:
  size = next(iter(pool['data'].values())).shape[0]
  b = next(iter(batch.values())).shape[0]
  if b > size:
    raise ValueError(f'pool size {size} is smaller than the batch size {b}')
  return size, b


def exchange_with_permutation(pool: Pool, batch: Arrays, perm: jax.Array) -> tuple[Pool, Arrays]:
  """The reference's rule: (new pool, training batch) for `batch`, given the `randperm` of the
  pool that this step draws (used only once the pool is full)."""
  size, b = _sizes(pool, batch)
  if size % b:
    raise ValueError(f'pool size {size} must be a multiple of the batch size {b}')

  def fill():
    data = {k: jax.lax.dynamic_update_slice_in_dim(pool['data'][k], v, pool['count'], 0)
            for k, v in batch.items()}
    return {'count': pool['count'] + b, 'data': data}, dict(batch)

  def swap():
    shuffled = {k: pool['data'][k][perm] for k in batch}
    data = {k: shuffled[k].at[:b].set(v) for k, v in batch.items()}
    return {'count': pool['count'], 'data': data}, {k: v[:b] for k, v in shuffled.items()}

  return jax.lax.cond(pool['count'] >= size, swap, fill)


def exchange(pool: Pool, batch: Arrays, key: jax.Array, reference: bool = False
             ) -> tuple[Pool, Arrays]:
  """Returns (new pool, training batch) for this step's `batch` (dict of [b, ...] arrays)."""
  size, b = _sizes(pool, batch)
  if reference:
    return exchange_with_permutation(pool, batch, jax.random.permutation(key, size))
  full = pool['count'] >= size
  # Filling: write at count .. count + b - 1, dropping what does not fit; the batch passes.
  fill_slots = pool['count'] + jnp.arange(b)
  swap_slots = jax.random.choice(key, size, (b,), replace=False)
  slots = jnp.where(full, swap_slots, fill_slots)
  out = {k: jnp.where(full, pool['data'][k][swap_slots], v) for k, v in batch.items()}
  data = {k: pool['data'][k].at[slots].set(v, mode='drop') for k, v in batch.items()}
  return {'count': jnp.minimum(pool['count'] + b, size), 'data': data}, out
