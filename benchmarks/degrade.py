"""Real-ESRGAN training pairs per second: batch 8 of 400x400 GT -> 256x256 GT / 64x64 LQ (x4).

  python benchmarks/degrade.py [--repeats 10] [--batch 8] [--mode per_sample|reference]

Prints the compile time, the median steady-state rate of the jitted degradation on the default
JAX backend, the host-side parameter sampling time (it runs in grain workers) and the median time
of every stage jitted alone (on the largest first-stage canvas). The ratio against the PyTorch
reference, measured in the same run, is `compare.py --items pairs`'s.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from condsr_jax.degrade import canvas, filters, noise, realesrgan
import timing

def make_batch(deg: realesrgan.RealESRGANDegradation, batch: int, seed: int = 0,
               images: list[np.ndarray] | None = None) -> dict:
  """A stream batch: sampled parameters and `images` (HWC float32 of the GT canvas size) or
  smooth random content."""
  sampler = deg.param_sampler()
  records = [sampler(np.random.default_rng([seed, i])) for i in range(batch)]
  out = {k: np.stack([r[k] for r in records]) for k in records[0]}
  if images is not None:
    out['gt'] = np.stack(images).astype(np.float32)
    return out
  size = deg.geometry.crop_pad
  # Smooth random content with 8-bit values (what Poisson levels see in real images).
  rng = np.random.default_rng(seed)
  low = rng.random((batch, size // 8, size // 8, 3))
  img = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2) * 0.8 + 0.2 * rng.random(
      (batch, size, size, 3))
  out['gt'] = (np.round(img * 255) / 255).astype(np.float32)
  return out


def sampling_seconds(deg: realesrgan.RealESRGANDegradation, draws: int) -> float:
  """Host seconds per example of the parameter sampler."""
  sampler = deg.param_sampler()
  t0 = time.perf_counter()
  for i in range(draws):
    sampler(np.random.default_rng([1, i]))
  return (time.perf_counter() - t0) / draws


def stage_profile(deg: realesrgan.RealESRGANDegradation, batch: dict, key: jax.Array,
                  repeats: int) -> dict[str, float]:
  """Median seconds of each stage and op of the pipeline, each jitted alone on real inputs."""
  g = deg.geometry
  p = jax.jit(deg.record)(batch)
  gt = jnp.asarray(batch['gt'])
  shared = deg.config.mode == 'reference'
  n1 = p['resize1/size']
  usm = jax.jit(filters.usm_sharp)(gt)
  blur1 = jax.jit(filters.filter_on_canvas)(usm, p['kernel1'])
  resize1 = jax.jit(lambda x: canvas.resize_on_canvas(
      x, g.stage1, p['resize1/mode'], scale=p['resize1/scale'], out_valid=n1))
  canvas1 = resize1(blur1)
  noise1 = jax.jit(lambda x, k: realesrgan.add_noise(
      k, x, p['noise1/gaussian'], p['noise1/sigma'], p['noise1/poisson_scale'],
      p['noise1/gray'], n1, shared))
  normals = jax.jit(lambda k: noise.standard_normal(k, canvas1.shape))
  jpeg1 = jax.jit(lambda x: canvas.jpeg_on_canvas(x, p['jpeg1/quality'], n1))
  stage1 = jax.jit(deg.first_degradation)(usm, p, key)
  stage2 = jax.jit(deg.second_degradation)(stage1, p, key)
  ops = {
      'usm_sharp (400)': (jax.jit(filters.usm_sharp), (gt,)),
      'blur 1 (400, FFT)': (jax.jit(filters.filter_on_canvas), (usm, p['kernel1'])),
      f'resize 1 (400 -> {g.stage1})': (resize1, (blur1,)),
      f'noise 1 ({g.stage1})': (noise1, (canvas1, key)),
      f'  normal deviates ({g.stage1})': (normals, (key,)),
      f'  Poisson levels ({g.stage1})': (noise.poisson_levels, (canvas1,)),
      f'jpeg 1 ({g.stage1})': (jpeg1, (canvas1,)),
      f'blur 2 ({g.stage1}, FFT)': (jax.jit(filters.filter_on_canvas),
                                    (stage1, p['kernel2'], n1)),
      '= first degradation': (jax.jit(deg.first_degradation), (usm, p, key)),
      '= second degradation': (jax.jit(deg.second_degradation), (stage1, p, key)),
      '= final (resize, sinc, JPEG)': (jax.jit(deg.final_degradation), (stage2, p)),
  }
  return {name: timing.median_seconds(fn, args, repeats) for name, (fn, args) in ops.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--mode', default='per_sample', choices=realesrgan.PIPELINE_MODES)
  parser.add_argument('--no-profile', dest='profile', action='store_false')
  args = parser.parse_args()
  print(timing.device_line(mode=args.mode))
  config = realesrgan.default_config(4)
  config.mode = args.mode
  deg = realesrgan.RealESRGANDegradation(config, 4)
  batch = make_batch(deg, args.batch)
  key = jax.random.key(0)
  compiled, compile_s = timing.compile_seconds(jax.jit(deg), batch, key)
  print(f'compile: {compile_s:.2f} s')
  device_batch = jax.device_put(batch)
  step = timing.median_seconds(compiled, (device_batch, key), args.repeats)
  rate = args.batch / step
  print(f'degradation: {step * 1e3:.1f} ms per batch of {args.batch} (median of '
        f'{args.repeats}) = {rate:.1f} pairs/s')
  host = sampling_seconds(deg, 200)
  print(f'host parameter sampling (grain, per worker): {host * 1e3:.3f} ms per pair = '
        f'{1 / host:.0f} pairs/s')
  if args.profile:
    print('stages, each jitted alone (median ms per batch):')
    for name, seconds in stage_profile(deg, device_batch, key, args.repeats).items():
      print(f'  {name:34s} {seconds * 1e3:9.1f}')


if __name__ == '__main__':
  main()
