"""The cache protocol (`ttcjax.decoding.cache.Cache`), run against each
cache ttcjax ships: the model's `KVCache` and the toy LM's `ToyCache`."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax import models, testing
from ttcjax.decoding.cache import Cache

CONFIG = models.ModelConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2,
                            d_ff=32, max_len=32)
BOOKKEEPING = ("valid", "index", "next_pos")
BATCH, SLOTS = 3, 8


def _filled(kind):
  """A cache whose every leaf tells rows and slots apart."""
  if kind == "kv":
    cache = models.init_cache(CONFIG, BATCH, SLOTS)
  else:
    cache = testing.init_cache(BATCH, SLOTS)
  rows = jnp.arange(BATCH, dtype=jnp.float32)
  slots = jnp.arange(SLOTS, dtype=jnp.float32)

  def fill(x):  # [batch, ..., slots, ...]: row + slot / 100 on axis of slots
    axis = x.shape.index(SLOTS, 1)
    shape = [1] * x.ndim
    shape[0], shape[axis] = BATCH, SLOTS
    value = (rows[:, None] + slots[None, :] / 100).reshape(
        [BATCH] + [1] * (axis - 1) + [SLOTS] + [1] * (x.ndim - axis - 1))
    return (jnp.zeros(x.shape, jnp.float32) + value).astype(x.dtype)

  payload = {f.name: jax.tree.map(fill, getattr(cache, f.name))
             for f in dataclasses.fields(cache) if f.name not in BOOKKEEPING}
  return cache.replace(
      **payload,
      valid=jnp.arange(SLOTS)[None, :] < jnp.arange(1, BATCH + 1)[:, None] + 2,
      index=jnp.asarray(5, jnp.int32),
      next_pos=jnp.arange(BATCH, dtype=jnp.int32) + 3)


def _payload(cache):
  return [leaf for f in dataclasses.fields(cache) if f.name not in BOOKKEEPING
          for leaf in jax.tree.leaves(getattr(cache, f.name))]


KINDS = pytest.mark.parametrize("kind", ["kv", "toy"])


@KINDS
def test_implements_the_protocol(kind):
  cache = _filled(kind)
  assert isinstance(cache, Cache)
  assert cache.max_len == SLOTS


@KINDS
def test_every_leaf_but_index_has_rows_on_axis_0(kind):
  cache = _filled(kind)
  assert jnp.ndim(cache.index) == 0
  for leaf in jax.tree.leaves(cache.replace(index=None)):
    assert leaf.shape[0] == BATCH


@KINDS
def test_take_gathers_rows_and_keeps_index(kind):
  cache = _filled(kind)
  rows = np.asarray([2, 0, 0, 1])
  got = cache.take(jnp.asarray(rows))
  assert int(got.index) == 5
  for mine, theirs in zip(jax.tree.leaves(got.replace(index=None)),
                          jax.tree.leaves(cache.replace(index=None))):
    np.testing.assert_array_equal(mine, np.asarray(theirs)[rows])


@KINDS
def test_rollback_restores_bookkeeping_and_keeps_the_payload(kind):
  cache = _filled(kind)
  saved = (cache.index, cache.valid, cache.next_pos)
  moved = cache.replace(index=cache.index + 2,
                        valid=cache.valid.at[:, 5:7].set(True),
                        next_pos=cache.next_pos + 2)
  back = moved.rollback(*saved)
  assert int(back.index) == 5
  np.testing.assert_array_equal(back.valid, cache.valid)
  np.testing.assert_array_equal(back.next_pos, cache.next_pos)
  for mine, theirs in zip(_payload(back), _payload(moved)):
    np.testing.assert_array_equal(mine, theirs)


@KINDS
def test_grow_adds_empty_slots_and_rollback_takes_an_older_valid(kind):
  cache = _filled(kind)
  grown = cache.grow(2 * SLOTS)
  assert grown.max_len == 2 * SLOTS and int(grown.index) == 5
  np.testing.assert_array_equal(grown.valid[:, :SLOTS], cache.valid)
  assert not grown.valid[:, SLOTS:].any()
  back = grown.rollback(cache.index, cache.valid, cache.next_pos)
  assert back.valid.shape == (BATCH, 2 * SLOTS)
  assert not back.valid[:, SLOTS:].any()
