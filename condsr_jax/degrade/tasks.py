"""Task batches for the conditional methods: patches that share one degradation.

One grain element is one task: an HR image (the `crop_pad` GT crop) plus one sampled
degradation and the positions of the task's patches, so a batch of k elements is k tasks. The
device function crops the patches and degrades them all with the task's degradation, as the
kind declares (`patchwise`):
- patchwise (`kind='classic'`): every HR patch is blurred, downsampled and noised on its own (as
  the CMDSR and DASR data loaders do; fresh noise per patch);
- whole images (`kind='realesrgan'`, `'learned'`): the whole image is degraded once (Real-ESRGAN's
  second-order pipeline, or a learned model with one random code per task) and the patches are
  paired crops of its LQ, GT and USM GT.

`tasks.crops` lists (LR size, count) groups: CMDSR's 2n = 40 patches of one size (the halves
X_i, X'_i of its contrastive loss are the first and last n), DASR's 2 positives, or the
multi-crop 2 x 64 + 4 x 48 of its follow-up. Patches come from the task's own image (CMDSR's
code) unless `tasks.different_images`: then consecutive runs of `tasks.patches_per_image`
patches take their content from images t, t + 1, ... (mod k) of the batch, all degraded with
task t's degradation (CMDSR's paper figure; "same kernel, different images" positives).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from condsr_jax import config as config_lib
from condsr_jax.degrade import classic, pipelines, records

Batch = pipelines.Batch
LAYOUTS = ('cmdsr', 'dasr', 'multicrop')
KINDS = ('classic', 'realesrgan', 'learned')  # kinds with task batches


def default_config(kind: str = 'classic', scale: int = 4, layout: str = 'cmdsr'
                   ) -> ml_collections.ConfigDict:
  """A degradation config with a `tasks` section.

  `kind`: 'classic' (CMDSR's or DASR's degradation, following `layout`), 'realesrgan' or
  'learned' (its `model` is to be set).
  `layout`: 'cmdsr' (40 patches of gt_size / scale, halves of 20), 'dasr' (2 patches of 48) or
  'multicrop' (2 of 64 and 4 of 48, the DASR follow-up of seed 004).
  """
  if layout not in LAYOUTS:
    raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
  if kind == 'classic':
    c = classic.default_config(scale, 'cmdsr' if layout == 'cmdsr' else 'dasr')
  else:
    c = pipelines.default_config(kind, scale)
  c.tasks = ml_collections.ConfigDict()
  if layout == 'cmdsr':
    c.tasks.crops = ((192 // scale, 40),)
    c.tasks.patches_per_image = 20
  elif layout == 'dasr':
    c.tasks.crops = ((48, 2),)
    c.tasks.patches_per_image = 1
  else:
    c.tasks.crops = ((64, 2), (48, 4))
    c.tasks.patches_per_image = 1
  c.tasks.different_images = False
  c.gt_size = max(size for size, _ in c.tasks.crops) * scale
  return c


def validate(config: ml_collections.ConfigDict, scale: int, field: str = 'degradation'
             ) -> None:
  """Raises `ConfigError` naming the first wrong field: the base kind's, then `tasks`'."""
  pipelines.validate(config, scale, field)
  config_lib.check(config.kind in KINDS, f'{field}.kind', f'one of {KINDS} for task batches',
                   config.kind)
  config_lib.check('tasks' in config, f'{field}.tasks',
                   'missing (start from tasks.default_config)', None)
  t = config.tasks
  crops = records.plain(t.crops)
  extent = config.crop_pad // scale
  config_lib.check(
      bool(crops) and all(len(g) == 2 and 0 < g[0] <= extent and g[1] > 0 for g in crops),
      f'{field}.tasks.crops', f'(LR size, count) groups, sizes up to the {extent}-pixel LR of '
      f'crop_pad {config.crop_pad}', crops)
  config_lib.check(not t.different_images or t.patches_per_image >= 1,
                   f'{field}.tasks.patches_per_image', 'must be positive', t.patches_per_image)


@dataclasses.dataclass(frozen=True)
class TaskSampler:
  """One task's degradation (from `base`) plus 'patches{g}/top', 'patches{g}/left' [count]
  (LR pixels) for every crop group g (picklable; runs in grain)."""
  base: Any
  crops: tuple[tuple[int, int], ...]
  lr_extent: int

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = self.base(rng) if self.base else {}
    for g, (size, count) in enumerate(self.crops):
      for axis in ('top', 'left'):
        out[f'patches{g}/{axis}'] = rng.integers(self.lr_extent - size + 1, size=count,
                                                 dtype=np.int32)
    return out


def _crop_patches(images: jax.Array, source: jax.Array, top: jax.Array, left: jax.Array,
                  size: int) -> jax.Array:
  """[k, n, size, size, C] crops of images[source[t, i]] at (top[t, i], left[t, i])."""
  def one(src, t, l):
    return jax.lax.dynamic_slice(images[src], (t, l, 0), (size, size, images.shape[-1]))
  return jax.vmap(jax.vmap(one))(source, top, left)


class TaskDegradation:
  """k HR images + k sampled degradations -> k tasks of degraded patch groups."""

  def __init__(self, config: ml_collections.ConfigDict, scale: int):
    validate(config, scale)
    self.base = pipelines.make(config, scale)
    self.config = config
    self.scale = scale
    self.canvas = config.crop_pad
    self.patchwise = self.base.patchwise
    self.crops = tuple((int(size), int(count)) for size, count in config.tasks.crops)
    self.lr_extent = config.crop_pad // scale
    per_image = config.tasks.patches_per_image
    # Offset (mod k) from each task to the image each patch is cut from, group by group.
    total = sum(count for _, count in self.crops)
    shifts = [p // per_image if config.tasks.different_images else 0 for p in range(total)]
    starts = np.cumsum([0] + [count for _, count in self.crops])
    self.shifts = tuple(tuple(shifts[a:b]) for a, b in zip(starts[:-1], starts[1:]))

  def param_sampler(self) -> TaskSampler:
    """The per-task sampler for grain: the base degradation's draws and the patch positions."""
    return TaskSampler(self.base.param_sampler(crop=False), self.crops, self.lr_extent)

  def _sources(self, k: int, g: int) -> jax.Array:
    """[k, count] batch index of the image each patch of group g is cut from."""
    shifts = np.asarray(self.shifts[g])
    return jnp.asarray((np.arange(k)[:, None] + shifts[None, :]) % k, jnp.int32)

  def __call__(self, batch: Batch, key: jax.Array) -> dict[str, Any]:
    """{'lq': [per group [k, count, size, size, C]], 'gt': [per group [k, count, size * s, .,
    C]], ('gt_usm' unless patchwise), 'record'}: the task's parameters [k] and, per group,
    'patches{g}/{top,left,image}' [k, count] (LR pixels, source image in the batch).

    The base kind's device draws are made once per task, so the images of one task share them.
    """
    gt = pipelines.gt_canvas(batch, self.canvas)
    k = gt.shape[0]
    s = self.scale
    batch = {**batch, **self.base.device_draws(
        batch, jax.random.fold_in(key, pipelines.DEVICE_DRAWS))}
    positions = [(jnp.asarray(batch[f'patches{g}/top'], jnp.int32),
                  jnp.asarray(batch[f'patches{g}/left'], jnp.int32))
                 for g in range(len(self.crops))]
    out = {'lq': [], 'gt': []}
    if not self.patchwise:
      out['gt_usm'] = []
      distinct = sorted(set(sum(self.shifts, ())))
      full = [self.base.degrade({**batch, 'gt': jnp.roll(gt, -d, axis=0)},
                                jax.random.fold_in(key, d), crop=False) for d in distinct]
      lq_all = jnp.concatenate([f['lq'] for f in full])
      usm_all = jnp.concatenate([f['gt_usm'] for f in full])
      record = full[distinct.index(0)]['record']  # the task's own image
    else:
      record = self.base.record(batch, crop=False)
    for g, ((size, _), (top, left)) in enumerate(zip(self.crops, positions)):
      image = self._sources(k, g)
      hr = _crop_patches(gt, image, top * s, left * s, size * s)
      if self.patchwise:
        lq = self.base.apply(hr, record, jax.random.fold_in(key, g))
      else:
        # Row (index of the shift) * k + t of the stacked outputs holds image (t + shift) % k.
        rows = jnp.asarray([[distinct.index(d) * k for d in self.shifts[g]]], jnp.int32)
        stacked = rows + jnp.arange(k, dtype=jnp.int32)[:, None]
        lq = _crop_patches(lq_all, stacked, top, left, size)
        out['gt_usm'].append(_crop_patches(usm_all, stacked, top * s, left * s, size * s))
      out['lq'].append(lq)
      out['gt'].append(hr)
      record.update({f'patches{g}/top': top, f'patches{g}/left': left,
                     f'patches{g}/image': image})
    out['record'] = record
    return out
