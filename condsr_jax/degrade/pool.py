"""Real-ESRGAN's training-pair pool (`_dequeue_and_enqueue`) as a pure function of its state.

While the pool fills, batches pass through and are stored. Once full, each batch swaps with `b`
pool entries drawn without replacement. The reference shuffles the whole pool and swaps its
first `b` entries, which draws the same distribution (entries are exchangeable) but costs a
gather of the whole pool per step. Any pool size works: no "divisible by the batch size" rule.
"""

from typing import Any

import jax
import jax.numpy as jnp

Pool = dict[str, Any]


def init_pool(size: int, example: dict[str, jax.Array]) -> Pool:
  """An empty pool of `size` entries shaped like one example of each array in `example`."""
  return {'count': jnp.zeros((), jnp.int32),
          'data': {k: jnp.zeros((size, *v.shape[1:]), v.dtype) for k, v in example.items()}}


def exchange(pool: Pool, batch: dict[str, jax.Array], key: jax.Array
             ) -> tuple[Pool, dict[str, jax.Array]]:
  """Returns (new pool, training batch) for this step's `batch` (dict of [b, ...] arrays)."""
  size = next(iter(pool['data'].values())).shape[0]
  b = next(iter(batch.values())).shape[0]
  if b > size:
    raise ValueError(f'pool size {size} is smaller than the batch size {b}')
  full = pool['count'] >= size
  # Filling: write at count .. count + b - 1, dropping what does not fit; the batch passes.
  fill_slots = pool['count'] + jnp.arange(b)
  # Full: swap with b distinct random entries.
  swap_slots = jax.random.choice(key, size, (b,), replace=False)
  slots = jnp.where(full, swap_slots, fill_slots)
  out = {k: jnp.where(full, pool['data'][k][swap_slots], v) for k, v in batch.items()}
  data = {k: pool['data'][k].at[slots].set(v, mode='drop') for k, v in batch.items()}
  return {'count': jnp.minimum(pool['count'] + b, size), 'data': data}, out
