"""Seconds per image for the three reference generators on a 1x3x128x128 input (random weights).

  python benchmarks/upscale.py [--repeats 5] [--dtype float32|bfloat16]

Prints compile time separately from steady state and the ratio against PyTorch 2.13 on the
same 2-core CPU machine kind (4.41 s RRDBNet x4plus, 0.27 s SRVGG x4v3, 0.51 s EDSR-baseline x4).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax import models
import timing

MODELS = {
    'RRDBNet x4plus (64f 23b 32g)': (models.ModelSpec('RRDBNet', dict(
        num_feat=64, num_block=23, num_grow_ch=32, scale=4)), 4.41),
    'SRVGGNetCompact x4v3 (64f 32c)': (models.ModelSpec('SRVGGNetCompact', dict(
        num_feat=64, num_conv=32, upscale=4)), 0.27),
    'EDSR-baseline x4 (64f 16b)': (models.ModelSpec('EDSR', dict(
        num_feat=64, num_block=16, upscale=4)), 0.51),
}


def bench(spec: models.ModelSpec, dtype: str, repeats: int) -> tuple[float, float]:
  """Returns (compile seconds, median steady-state seconds per image)."""
  module = spec.build(dtype=jnp.dtype(dtype))
  x = jnp.asarray(np.random.default_rng(0).random((1, 128, 128, 3), np.float32))
  variables = jax.jit(module.init)(jax.random.key(0), x)
  compiled, compile_s = timing.compile_seconds(jax.jit(module.apply), variables, x)
  return compile_s, timing.median_seconds(compiled, (variables, x), repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  args = parser.parse_args()
  print(timing.device_line(dtype=args.dtype))
  print(f'{"model":34s} {"compile s":>10s} {"s/image":>10s} {"PyTorch CPU s":>14s} '
        f'{"speed-up":>9s}')
  for name, (spec, torch_s) in MODELS.items():
    compile_s, step_s = bench(spec, args.dtype, args.repeats)
    print(f'{name:34s} {compile_s:10.2f} {step_s:10.4f} {torch_s:14.2f} {torch_s / step_s:8.2f}x')


if __name__ == '__main__':
  main()
