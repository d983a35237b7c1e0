"""Token samplers: greedy and temperature / top-k / top-p sampling.

Samplers are frozen pytree dataclasses. Their numeric fields may be Python
scalars (one setting for the whole batch) or `[batch]` arrays (one per row,
traced under jit, so changing them does not recompile). A field left as None
switches that filter off statically.

Sampling draws one uniform number per row and inverts the cumulative
distribution, instead of drawing a Gumbel number per vocabulary entry: on CPU
the random bits for `[batch, vocab]` Gumbel noise cost more than the model's
dense layers at small sizes, and inverse-CDF sampling is exact.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_NEG_INF = -1e30


class Sampler(Protocol):
  """Picks one token per row from `[batch, vocab]` float32 logits."""

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    """Returns `[batch] int32` tokens; `keys` is `[batch]` PRNG keys."""


def _is_concrete(x) -> bool:
  """True for values that can be validated now (numbers, numpy, concrete jax
  arrays); False for tracers and jit's placeholder argument objects."""
  if isinstance(x, jax.core.Tracer):
    return False
  return isinstance(x, (int, float, np.ndarray, np.generic, jax.Array))


def argmax(logits: jax.Array) -> jax.Array:
  """First index of the maximum along the last axis, `int32`.

  Two plain reductions: XLA:CPU's variadic-reduce `argmax` is ~4x slower.
  """
  top = jnp.max(logits, axis=-1, keepdims=True)
  iota = jnp.arange(logits.shape[-1], dtype=jnp.int32)
  first = jnp.min(jnp.where(logits == top, iota, logits.shape[-1]), axis=-1)
  return jnp.minimum(first, logits.shape[-1] - 1)


def inverse_cdf(probs: jax.Array, u: jax.Array, block: int = 128) -> jax.Array:
  """Samples ids from `[batch, vocab]` non-negative masses with uniforms `u`.

  Returns the id `i` with `cdf[i-1] <= u * total < cdf[i]`. Two levels (block
  masses, then one block) avoid a full-vocabulary cumulative sum, which
  XLA:CPU computes slowly.
  """
  batch, vocab = probs.shape
  pad = (-vocab) % block
  blocks = jnp.pad(probs, ((0, 0), (0, pad))).reshape(batch, -1, block)
  block_cdf = jnp.cumsum(jnp.sum(blocks, axis=-1), axis=-1)  # [b, nb]
  target = u * block_cdf[:, -1]
  j = jnp.minimum(jnp.sum(block_cdf <= target[:, None], axis=-1),
                  block_cdf.shape[1] - 1)
  before = jnp.where(
      j > 0, jnp.take_along_axis(block_cdf, (j - 1)[:, None], -1)[:, 0], 0.0)
  inner = jnp.take_along_axis(blocks, j[:, None, None], axis=1)[:, 0]
  inner_cdf = jnp.cumsum(inner, axis=-1)
  i = jnp.minimum(jnp.sum(inner_cdf <= (target - before)[:, None], axis=-1),
                  block - 1)
  return jnp.minimum(j * block + i, vocab - 1).astype(jnp.int32)


@struct.dataclass
class Greedy:
  """Arg-max decoding."""

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    del keys
    return argmax(logits)


@struct.dataclass
class Sampling:
  """Ancestral sampling with temperature, optional top-k and top-p.

  Attributes:
    temperature: scalar or `[batch]`; a row with temperature 0 decodes
      greedily, so one batch can mix greedy roll-outs and samples.
    top_k: None (off), or scalar / `[batch]` int; k <= 0 keeps every token.
    top_p: None (off), or scalar / `[batch]` float in (0, 1].
  """
  temperature: float | jax.Array = 1.0
  top_k: int | jax.Array | None = None
  top_p: float | jax.Array | None = None

  def __post_init__(self):
    if _is_concrete(self.temperature) and np.any(
        np.asarray(self.temperature) < 0):
      raise ValueError(
          f"Sampling.temperature must be >= 0, got {self.temperature}")
    if self.top_p is not None and _is_concrete(self.top_p):
      p = np.asarray(self.top_p)
      if np.any(p <= 0) or np.any(p > 1):
        raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p}")
    if self.top_k is not None and _is_concrete(self.top_k):
      if not np.issubdtype(np.asarray(self.top_k).dtype, np.integer):
        raise ValueError(f"Sampling.top_k must be an int, got {self.top_k}")

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    batch = logits.shape[0]
    temperature = jnp.broadcast_to(
        jnp.asarray(self.temperature, jnp.float32), (batch,))
    greedy = argmax(logits)
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    if self.top_k is not None or self.top_p is not None:
      scaled = self._filter(scaled)
    probs = jnp.exp(scaled - jnp.max(scaled, axis=-1, keepdims=True))
    u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)
    sampled = inverse_cdf(probs, u)
    # Never return an id the filters removed (possible only by rounding).
    sampled = jnp.where(probs[jnp.arange(batch), sampled] > 0, sampled, greedy)
    return jnp.where(temperature > 0, sampled, greedy)

  def _filter(self, scaled: jax.Array) -> jax.Array:
    batch, vocab = scaled.shape
    ordered = -jnp.sort(-scaled, axis=-1)  # descending
    threshold = jnp.full((batch,), _NEG_INF, scaled.dtype)
    if self.top_k is not None:
      k = jnp.broadcast_to(jnp.asarray(self.top_k, jnp.int32), (batch,))
      k = jnp.where(k <= 0, vocab, jnp.minimum(k, vocab))
      kth = jnp.take_along_axis(ordered, (k - 1)[:, None], axis=-1)[:, 0]
      threshold = jnp.maximum(threshold, kth)
      ordered = jnp.where(ordered >= kth[:, None], ordered, _NEG_INF)
    if self.top_p is not None:
      p = jnp.broadcast_to(jnp.asarray(self.top_p, jnp.float32), (batch,))
      sorted_probs = jax.nn.softmax(ordered, axis=-1)
      mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
      keep = mass_before < p[:, None]  # always keeps the top token
      last = jnp.sum(keep, axis=-1) - 1
      pth = jnp.take_along_axis(ordered, last[:, None], axis=-1)[:, 0]
      threshold = jnp.maximum(threshold, pth)
    return jnp.where(scaled >= threshold[:, None], scaled, _NEG_INF)
