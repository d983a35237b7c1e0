"""Key/value cache for incremental decoding.

The cache is laid out in *slots*: every row of a batch writes slot `index` at
the same time, so a decode step is one `dynamic_update_slice` per layer. Rows
that are padding at a slot (left-padded prompts, rows that already ended their
step or solution) mark that slot invalid; attention never reads invalid slots
and RoPE positions advance only on valid ones, so a row's result does not
depend on what the other rows of its batch are doing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ttcjax.models.config import ModelConfig, as_dtype


@struct.dataclass
class KVCache:
  """Per-layer keys and values plus slot bookkeeping.

  Attributes:
    k: per layer, `[batch, kv_heads, max_len, head_dim]` keys (post-RoPE).
    v: per layer, `[batch, kv_heads, max_len, head_dim]` values.
    valid: `[batch, max_len] bool`, slot holds a real token of that row.
    index: `[] int32`, the next slot to write (shared by all rows).
    next_pos: `[batch] int32`, RoPE position of each row's next real token.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  valid: jax.Array
  index: jax.Array
  next_pos: jax.Array

  @property
  def batch_size(self) -> int:
    return self.valid.shape[0]

  @property
  def max_len(self) -> int:
    return self.valid.shape[1]

  def take(self, rows: jax.Array) -> "KVCache":
    """Gathers rows (beam reorder / fan-out).

    Args:
      rows: `[new_batch] int32` source row of each new row.

    Returns:
      A cache with `new_batch` rows; `index` is unchanged.
    """
    take = lambda x: jnp.take(x, rows, axis=0)
    return self.replace(
        k=tuple(take(x) for x in self.k),
        v=tuple(take(x) for x in self.v),
        valid=take(self.valid),
        next_pos=take(self.next_pos))

  def repeat(self, n: int) -> "KVCache":
    """Repeats every row `n` times consecutively (shared-prefix fan-out)."""
    return self.take(jnp.repeat(jnp.arange(self.batch_size), n))

  def rollback(self, index: jax.Array, valid: jax.Array,
               next_pos: jax.Array) -> "KVCache":
    """Restores the bookkeeping of an earlier point; keys/values stay.

    Slots at and after `index` are overwritten by later writes and masked
    until then, so no key or value needs to be copied. `valid` may be
    shorter than the cache (saved before a `grow`): the new slots are
    invalid.
    """
    return self.replace(index=index, valid=_pad_axis(valid, 1, self.max_len),
                        next_pos=next_pos)

  def grow(self, max_len: int) -> "KVCache":
    """The same cache with `max_len` slots: the new slots are empty.

    Attention reads every slot, valid or not, so a search that only fills
    a few starts with a short cache and grows it as it fills.
    """
    if max_len < self.max_len:
      raise ValueError(f"KVCache.grow: {max_len} slots < the current "
                       f"{self.max_len}")
    if max_len == self.max_len:
      return self
    pad = lambda x: _pad_axis(x, 2, max_len)
    return self.replace(k=tuple(pad(x) for x in self.k),
                        v=tuple(pad(x) for x in self.v),
                        valid=_pad_axis(self.valid, 1, max_len))


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
  """Zero-pads (False for bool) `x` at the end of `axis` to `size`."""
  if x.shape[axis] == size:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


def init_cache(config: ModelConfig, batch_size: int, max_len: int) -> KVCache:
  """An empty cache for `batch_size` rows and `max_len` slots."""
  shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
  dtype = as_dtype(config.dtype)
  zeros = lambda: jnp.zeros(shape, dtype)
  return KVCache(
      k=tuple(zeros() for _ in range(config.n_layers)),
      v=tuple(zeros() for _ in range(config.n_layers)),
      valid=jnp.zeros((batch_size, max_len), bool),
      index=jnp.zeros((), jnp.int32),
      next_pos=jnp.zeros((batch_size,), jnp.int32))
