"""Seconds per training step, batch 4, LQ 32x32 -> GT 128x128 (x4), random weights.

  python benchmarks/train_step.py [--repeats 5] [--models rrdb,srvgg,edsr,esrgan]

L1 + Adam steps for the three generators, and one full Real-ESRGAN stage-2 step (generator and
U-Net discriminator updates, VGG19 perceptual loss on five layers, EMA) through the library's
own training step (`train.make_train_step` around the 'esrgan' method's). Compile time is
printed separately from the steady state, with the ratio against PyTorch 2.13 on the same
2-core CPU machine kind (4.83 s, 0.25 s, 0.47 s).
"""

import argparse
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from condsr_jax import config as config_lib, methods, models, train, xla_flags
import timing

GENERATORS = {
    'rrdb': ('RRDBNet x4plus (64f 23b 32g)', models.ModelSpec('RRDBNet', dict(
        num_feat=64, num_block=23, num_grow_ch=32, scale=4)), 4.83),
    'srvgg': ('SRVGGNetCompact x4v3 (64f 32c)', models.ModelSpec('SRVGGNetCompact', dict(
        num_feat=64, num_conv=32, upscale=4)), 0.25),
    'edsr': ('EDSR-baseline x4 (64f 16b)', models.ModelSpec('EDSR', dict(
        num_feat=64, num_block=16, upscale=4)), 0.47),
}


def _time(step: Callable, args: tuple, repeats: int) -> tuple[float, float]:
  """(compile seconds, median seconds per step) of `step(state, ...)` with a donated state."""
  compiled, compile_s = timing.compile_seconds(jax.jit(step, donate_argnums=0), *args)
  return compile_s, timing.median_seconds(compiled, args, repeats, carry_state=True)


def l1_adam_step(spec: models.ModelSpec, repeats: int, dtype: str):
  net = spec.build(dtype=jnp.dtype(dtype))
  rng = np.random.default_rng(0)
  lq = jnp.asarray(rng.random((4, 32, 32, 3), np.float32))
  gt = jnp.asarray(rng.random((4, 128, 128, 3), np.float32))
  params = jax.jit(net.init)(jax.random.key(0), lq)['params']
  tx = optax.adam(2e-4, b1=0.9, b2=0.99)

  def step(state, lq, gt):
    params, opt_state = state
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(jnp.abs(net.apply({'params': p}, lq) - gt)))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return _time(step, ((params, tx.init(params)), lq, gt), repeats)


def esrgan_step(repeats: int, dtype: str):
  """The loop's step (guard, EMA) around the registered 'esrgan' method's, on bicubic pairs."""
  c = config_lib.default_config('esrgan')
  c.scale, c.data.batch_size = 4, 4
  c.model.dtype = dtype
  c.model.kwargs = ml_collections.ConfigDict({'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32})
  c.degradation.gt_size = c.degradation.crop_pad = 128
  c.loss.perceptual_weight, c.loss.allow_random_vgg = 1.0, True
  c.loss.pixel_target = c.loss.perceptual_target = 'usm'
  method = methods.build(c)
  rng = jax.random.key_data(jax.random.key(0))
  state = jax.jit(lambda: train.init_loop_state(method, rng, {}))()
  gt = jnp.asarray(np.random.default_rng(0).random((4, 128, 128, 3), np.float32))
  batch = {'train': {'gt': gt, 'crop/top': jnp.zeros(4, jnp.int32),
                     'crop/left': jnp.zeros(4, jnp.int32)}}
  step = train.make_train_step(method, c.train.ema_decay)
  return _time(step, (state, batch, method.constants()), repeats)


def main():
  xla_flags.tune_xla_cpu()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', default='rrdb,srvgg,edsr,esrgan')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  args = parser.parse_args()
  print(timing.device_line(dtype=args.dtype))
  print(f'{"step":44s} {"compile s":>10s} {"s/step":>9s} {"PyTorch CPU s":>14s} {"speed-up":>9s}')
  for key in args.models.split(','):
    if key == 'esrgan':
      compile_s, step_s = esrgan_step(args.repeats, args.dtype)
      print(f'{"Real-ESRGAN full step (RRDB G + U-Net D + VGG19)":44s} {compile_s:10.2f} '
            f'{step_s:9.3f} {"-":>14s} {"-":>9s}')
      continue
    name, spec, torch_s = GENERATORS[key]
    compile_s, step_s = l1_adam_step(spec, args.repeats, args.dtype)
    print(f'{"L1+Adam " + name:44s} {compile_s:10.2f} {step_s:9.3f} {torch_s:14.2f} '
          f'{torch_s / step_s:8.2f}x')


if __name__ == '__main__':
  main()
