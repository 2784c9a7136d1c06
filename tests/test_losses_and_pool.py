"""GAN and edge losses against their definitions; the training-pair pool's exchange rules (the
default swap, and the reference's shuffle bit-exact against Real-ESRGAN's `_dequeue_and_enqueue`)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condsr_jax import losses
from condsr_jax.methods import pool
from conftest import nhwc


@pytest.mark.parametrize('gan_type', ['vanilla', 'lsgan', 'hinge', 'wgan_softplus'])
def test_gan_losses_follow_basicsr(gan_type):
  x = jnp.asarray([-2.0, -0.5, 0.0, 1.5])
  sp = lambda v: np.log1p(np.exp(v))  # pylint: disable=unnecessary-lambda-assignment
  xs = np.asarray(x, np.float64)
  want = {
      'vanilla': (sp(-xs).mean(), sp(xs).mean(), sp(-xs).mean()),
      'wgan_softplus': (sp(-xs).mean(), sp(xs).mean(), sp(-xs).mean()),
      'lsgan': (((xs - 1) ** 2).mean(), (xs ** 2).mean(), ((xs - 1) ** 2).mean()),
      'hinge': (np.maximum(1 - xs, 0).mean(), np.maximum(1 + xs, 0).mean(), -xs.mean()),
  }[gan_type]
  got = (losses.gan_loss(x, True, gan_type), losses.gan_loss(x, False, gan_type),
         losses.gan_loss(x, True, gan_type, for_discriminator=False))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


@pytest.mark.parametrize('loss', [losses.sobel_edge_loss, losses.canny_edge_loss])
def test_edge_losses_are_zero_on_equal_images_and_differentiable(loss):
  rng = np.random.default_rng(0)
  gt = jnp.asarray(rng.random((2, 24, 24, 3), np.float32))
  blurred = (gt + jnp.roll(gt, 1, 1) + jnp.roll(gt, 1, 2)) / 3
  assert float(loss(gt, gt)) < 1e-6
  assert float(loss(blurred, gt)) > 1e-3
  grad = jax.grad(lambda x: loss(x, gt))(blurred)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0


def test_pool_fills_then_swaps_and_needs_no_divisibility():
  size, b = 10, 4  # 10 is not a multiple of 4
  state = pool.init_pool(size, {'x': jnp.zeros((1, 2))})
  seen = []
  for step in range(6):
    batch = {'x': jnp.full((b, 2), float(step))}
    state, out = pool.exchange(state, batch, jax.random.key(step))
    out = np.asarray(out['x'][:, 0])
    if step < 3:  # filling (0..3, 4..7, 8..9 + 2 dropped): the batch passes through
      np.testing.assert_array_equal(out, step)
    else:  # full: b distinct stored entries come out, the batch goes in their slots
      assert set(out) <= set(seen) and (out < step).all()
    seen += [float(v) for v in np.asarray(state['data']['x'][:, 0])]
  assert int(state['count']) == size
  stored = np.asarray(state['data']['x'][:, 0])
  assert (stored == 5).sum() == b  # the last batch sits in the pool


def test_pool_rejects_batches_larger_than_itself():
  state = pool.init_pool(2, {'x': jnp.zeros((1, 1))})
  with pytest.raises(ValueError, match='smaller than the batch'):
    pool.exchange(state, {'x': jnp.zeros((3, 1))}, jax.random.key(0))
  state = pool.init_pool(6, {'x': jnp.zeros((1, 1))})
  with pytest.raises(ValueError, match='multiple of the batch'):
    pool.exchange(state, {'x': jnp.zeros((4, 1))}, jax.random.key(0), reference=True)


def test_reference_pool_matches_realesrgan_bit_exactly(fixtures_dir):
  data = np.load(fixtures_dir / 'training' / 'train_realesrgan_pool.npz')
  hparams = json.loads(str(data['meta']))['hparams']
  size, b = hparams['queue_size'], hparams['batch']
  state = pool.init_pool(size, {'lq': nhwc(data['in/lq_0']), 'gt': nhwc(data['in/gt_0'])})
  step = jax.jit(pool.exchange_with_permutation)
  for c in range(hparams['n_calls']):
    batch = {'lq': nhwc(data[f'in/lq_{c}']), 'gt': nhwc(data[f'in/gt_{c}'])}
    assert batch['lq'].shape[0] == b
    # Calls that find the pool filling draw no permutation; theirs is not read.
    perm = data[f'in/perm_{c}'] if f'in/perm_{c}' in data else np.arange(size)
    state, out = step(state, batch, jnp.asarray(perm, jnp.int32))
    np.testing.assert_array_equal(out['lq'], nhwc(data[f'out/lq_{c}']))
    np.testing.assert_array_equal(out['gt'], nhwc(data[f'out/gt_{c}']))
    np.testing.assert_array_equal(state['data']['lq'], nhwc(data[f'out/queue_lr_{c}']))
    np.testing.assert_array_equal(state['data']['gt'], nhwc(data[f'out/queue_gt_{c}']))
    assert int(state['count']) == int(data[f'out/queue_ptr_{c}'])


def test_reference_pool_draws_its_permutation_from_the_key():
  size, b = 6, 2
  state = pool.init_pool(size, {'x': jnp.zeros((1, 3))})
  for step in range(3):
    state, _ = pool.exchange(state, {'x': jnp.full((b, 3), float(step))}, jax.random.key(step),
                             reference=True)
  np.testing.assert_array_equal(state['data']['x'][:, 0], [0, 0, 1, 1, 2, 2])
  key, batch = jax.random.key(9), {'x': jnp.full((b, 3), 3.0)}
  got_state, got = pool.exchange(state, batch, key, reference=True)
  perm = jax.random.permutation(key, size)
  want_state, want = pool.exchange_with_permutation(state, batch, perm)
  np.testing.assert_array_equal(got['x'], want['x'])
  np.testing.assert_array_equal(got_state['data']['x'], want_state['data']['x'])
  np.testing.assert_array_equal(got['x'][:, 0], np.asarray(state['data']['x'][perm[:b], 0]))
  np.testing.assert_array_equal(got_state['data']['x'][:b, 0], [3, 3])
