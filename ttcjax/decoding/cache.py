"""The cache protocol: what decoding and search may call on a decode cache.

A model family plugs its own cache (`PolicyFns.init_cache`) into the decoder
and the searches; they only ever use what `Cache` lists, with these rules:

* the cache is a pytree (`flax.struct.dataclass`): `jax.tree.map` over it
  reaches every array, and it passes through `jit`;
* every array leaf has the batch's rows on axis 0, except `index`, a scalar
  shared by all rows: `DecodeState.put` scatters rows leaf by leaf, and row
  sharding (`partitioning.shard_rows`) splits axis 0;
* slots: every row writes slot `index` at the same decode iteration;
  `valid[b, s]` says whether slot `s` holds a real token of row `b`, and
  `next_pos[b]` is the position of row `b`'s next real token;
* `take(rows)` gathers rows (fan-out, beam reorder) and keeps `index`;
* `rollback(index, valid, next_pos)` restores bookkeeping saved earlier
  (lookahead roll-outs) without copying keys or values; `valid` may be
  shorter than the cache (saved before a `grow`);
* `grow(max_len)` returns the same cache with more, empty, slots.

`ttcjax.models.KVCache` and the toy LM's `ttcjax.testing.ToyCache`
implement it (`tests/decoding/test_cache.py` runs the contract against
both).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Cache(Protocol):
  """A decode cache, as decoding and search use it (see module doc).

  Attributes:
    valid: `[batch, max_len] bool`, slot holds a real token of that row.
    index: `[] int32`, the next slot to write (shared by all rows).
    next_pos: `[batch] int32`, position of each row's next real token.
  """
  valid: jax.Array
  index: jax.Array
  next_pos: jax.Array

  @property
  def max_len(self) -> int:
    """Slots per row."""

  def take(self, rows: jax.Array) -> "Cache":
    """Rows `rows` `[new_batch] int32`, in that order; `index` kept."""

  def rollback(self, index: jax.Array, valid: jax.Array,
               next_pos: jax.Array) -> "Cache":
    """Bookkeeping restored to a saved point; keys/values untouched."""

  def grow(self, max_len: int) -> "Cache":
    """The same cache with `max_len` >= `self.max_len` slots."""

  def replace(self, **changes: Any) -> "Cache":
    """A copy with fields replaced (flax struct)."""
