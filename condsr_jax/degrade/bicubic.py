"""The classic "bicubic" training pairs: LR = MATLAB bicubic downscale of HR, stored as 8 bits."""

import dataclasses

import jax
import jax.numpy as jnp

from condsr_jax.degrade import matlab


@dataclasses.dataclass(frozen=True)
class BicubicDegradation:
  """GT crops of `gt_size` (random, per sample) and their MATLAB-bicubic 1/scale LR."""
  scale: int
  gt_size: int

  def param_sampler(self):
    return None  # nothing random on the host beyond the crop grain takes

  def __call__(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
    gt = batch['gt']
    b, h, w, _ = gt.shape
    if (h, w) != (self.gt_size, self.gt_size):
      ky, kx = jax.random.split(key)
      top = jax.random.randint(ky, (), 0, h - self.gt_size + 1)
      left = jax.random.randint(kx, (), 0, w - self.gt_size + 1)
      gt = jax.lax.dynamic_slice(gt, (0, top, left, 0), (b, self.gt_size, self.gt_size,
                                                         gt.shape[3]))
    lq = matlab.imresize_matlab(gt, 1.0 / self.scale)
    return {'lq': jnp.round(jnp.clip(lq, 0.0, 1.0) * 255.0) / 255.0, 'gt': gt}
