"""What every benchmark times the same way: compile once, then the median steady state."""

import time
from typing import Any, Callable

import jax
import numpy as np


def device_line(**details: Any) -> str:
  """'device: <platform> <kind> x<count>  jax <version>' plus `details` as 'key value'."""
  dev = jax.devices()[0]
  line = f'device: {dev.platform} {dev.device_kind} x{jax.device_count()}  jax {jax.__version__}'
  return line + ''.join(f'  {k} {v}' for k, v in details.items())


def compile_seconds(jitted: Any, *args: Any) -> tuple[Callable, float]:
  """(`jitted` compiled for `args`, seconds the compilation took)."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_seconds(fn: Callable, args: tuple, repeats: int, carry_state: bool = False) -> float:
  """Median wall seconds of `fn(*args)` after one warm-up call. With `carry_state`, each call's
  first output replaces the first argument (a training state that the step donates)."""
  args = list(args)

  def call():
    out = jax.block_until_ready(fn(*args))
    if carry_state:
      args[0] = out[0]

  call()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))
