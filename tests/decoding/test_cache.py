"""The cache protocol (`ttcjax.decoding.cache.Cache`) run against KVCache."""

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import models
from ttcjax.decoding.cache import Cache

CONFIG = models.ModelConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2,
                            d_ff=32, max_len=32)


def _filled(batch=3, slots=8):
  """A cache whose every leaf tells rows and slots apart."""
  cache = models.init_cache(CONFIG, batch, slots)
  rows = jnp.arange(batch, dtype=jnp.float32)[:, None, None, None]
  fill = lambda x: x + rows + 0.01 * jnp.arange(slots)[None, None, :, None]
  return cache.replace(
      k=tuple(fill(x) for x in cache.k), v=tuple(-fill(x) for x in cache.v),
      valid=jnp.arange(slots)[None, :] < jnp.arange(1, batch + 1)[:, None] + 2,
      index=jnp.asarray(5, jnp.int32),
      next_pos=jnp.arange(batch, dtype=jnp.int32) + 3)


def test_kv_cache_implements_the_protocol():
  cache = _filled()
  assert isinstance(cache, Cache)
  assert (cache.batch_size, cache.max_len) == (3, 8)


def test_every_leaf_but_index_has_rows_on_axis_0():
  cache = _filled()
  for leaf in jax.tree.leaves(cache):
    if jnp.ndim(leaf) == 0:
      assert leaf is cache.index or int(leaf) == int(cache.index)
    else:
      assert leaf.shape[0] == cache.batch_size


def test_take_gathers_rows_and_keeps_index():
  cache = _filled()
  rows = jnp.asarray([2, 0, 0, 1])
  got = cache.take(rows)
  assert got.batch_size == 4 and int(got.index) == 5
  for mine, theirs in zip(jax.tree.leaves(got), jax.tree.leaves(cache)):
    if jnp.ndim(theirs):
      np.testing.assert_array_equal(mine, np.asarray(theirs)[np.asarray(
          rows)])


def test_rollback_restores_bookkeeping_and_keeps_keys():
  cache = _filled()
  saved = (cache.index, cache.valid, cache.next_pos)
  moved = cache.replace(index=cache.index + 2,
                        valid=cache.valid.at[:, 5:7].set(True),
                        next_pos=cache.next_pos + 2,
                        k=tuple(x * 2 for x in cache.k))
  back = moved.rollback(*saved)
  assert int(back.index) == 5
  np.testing.assert_array_equal(back.valid, cache.valid)
  np.testing.assert_array_equal(back.next_pos, cache.next_pos)
  np.testing.assert_array_equal(back.k[0], moved.k[0])  # untouched


def test_grow_adds_empty_slots_and_rollback_accepts_older_valid():
  cache = _filled()
  grown = cache.grow(16)
  assert grown.max_len == 16 and grown.batch_size == 3
  np.testing.assert_array_equal(grown.valid[:, :8], cache.valid)
  assert not grown.valid[:, 8:].any()
  np.testing.assert_array_equal(grown.k[1][:, :, :8], cache.k[1])
  back = grown.rollback(cache.index, cache.valid, cache.next_pos)
  assert back.valid.shape == (3, 16) and not back.valid[:, 8:].any()
