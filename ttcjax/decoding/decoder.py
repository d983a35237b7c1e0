"""Jitted prefill and `lax.while_loop` decoding over a KV cache.

The decoder never imports a model class. It drives a callback

    step_fn(params, tokens[b, t], token_mask[b, t], cache) -> (logits[b, t, V], cache)

(`ttcjax.models.decode_step_fn(config)` builds one), so search code and tests
can plug in any model, including hand-written toy ones.

Decoding is resumable: `Decoder.decode(..., until="step")` returns as soon as
every row has ended its current reasoning step (sampled a delimiter), EOS, or
the token cap, with the whole state in a `DecodeState`. The caller may score,
select, gather rows (`DecodeState.take`, beam reorder) and continue.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ttcjax.decoding.samplers import Sampler

StepFn = Callable[..., tuple[jax.Array, Any]]


@struct.dataclass
class DecodeState:
  """Everything a decode loop carries; a pytree, rows along axis 0.

  Attributes:
    cache: the model's cache (e.g. `ttcjax.models.KVCache`); must support
      `.take(rows)`, `.index` ([] int32 next slot) and `.max_len`.
    pending: `[batch] int32` last sampled token, not yet fed to the model.
    tokens: `[batch, max_gen] int32` generated tokens, in order per row.
    logprobs: `[batch, max_gen] float32` model log-prob of each generated
      token (temperature 1, before any filtering).
    num_generated: `[batch] int32` valid prefix length of `tokens`.
    step_start: `[batch] int32` value of `num_generated` when the current
      step began (its tokens are `tokens[step_start:num_generated]`).
    finished: `[batch] bool` row emitted EOS or filled `max_gen`.
    step_done: `[batch] bool` row emitted a step delimiter in this step.
    rngs: `[batch]` PRNG keys; a row's draws depend only on its key and
      how many tokens it has generated, never on the rest of the batch.
  """
  cache: Any
  pending: jax.Array
  tokens: jax.Array
  logprobs: jax.Array
  num_generated: jax.Array
  step_start: jax.Array
  finished: jax.Array
  step_done: jax.Array
  rngs: jax.Array

  @property
  def batch_size(self) -> int:
    return self.pending.shape[0]

  def take(self, rows: jax.Array) -> "DecodeState":
    """Gathers rows `[new_batch] int32` (beam reorder, fan-out).

    Gathered rows keep their parents' keys; give children new keys with
    `with_rngs` when they must sample differently.
    """
    leaves = lambda x: jnp.take(x, rows, axis=0)
    rest = jax.tree.map(leaves, self.replace(cache=None))
    return rest.replace(cache=self.cache.take(rows))

  def put(self, rows: jax.Array, other: "DecodeState") -> "DecodeState":
    """Writes `other`'s first `len(rows)` rows over rows `rows` `[n] int32`.

    The inverse of `take` for a sub-batch decoded on its own: every array
    with rows on axis 0 (the cache's too) is scattered, and row-less
    leaves (the cache's `index`) come from `other`, whose cache must have
    as many slots.
    """
    return put_rows(self, rows, other)

  def with_rngs(self, rngs: jax.Array) -> "DecodeState":
    return self.replace(rngs=rngs)


def put_rows(tree: Any, rows: jax.Array, other: Any) -> Any:
  """`tree` with `other`'s first `len(rows)` rows written over rows `rows`:
  every leaf with rows on axis 0 is scattered, row-less (0-d) leaves such
  as a cache's `index` come from `other` (`DecodeState.put`, and any
  `ttcjax.decoding.cache.Cache`)."""
  n = len(rows)

  def put(mine, theirs):
    if jnp.ndim(mine) == 0:
      return theirs
    return mine.at[rows].set(theirs[:n])

  return jax.tree.map(put, tree, other)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into `([n, width] int32 ids, [n, width] bool
  mask)`; `width` defaults to the longest row, and a longer row is a
  ValueError."""
  longest = max((len(r) for r in rows), default=0)
  width = longest if width is None else width
  if longest > width:
    raise ValueError(f"a prompt of {longest} tokens exceeds the width "
                     f"{width}")
  ids = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    if len(row):
      ids[i, width - len(row):] = row
      mask[i, width - len(row):] = True
  return ids, mask


def _sample(sampler: Sampler, logits: jax.Array, rngs: jax.Array,
            counts: jax.Array):
  keys = jax.vmap(jax.random.fold_in)(rngs, counts)
  tokens = sampler(logits, keys)
  chosen = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
  return tokens, chosen - jax.nn.logsumexp(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class Decoder:
  """Static decoding setup; hashable, so its methods jit with `self` static.

  Attributes:
    step_fn: the model callback (see module docstring).
    eos_id: end-of-sequence token id.
    stop_ids: step-delimiter token ids (end a step, not the solution).
    max_gen: generated tokens kept per row; a row that fills it is finished.
    prefill_fn: optional `(params, tokens, token_mask, cache) ->
      (last_logits [batch, vocab], cache)` that `prefill` calls instead of
      `step_fn` (`models.prefill_fn` computes the LM head at each row's
      last prompt token only); None: `step_fn`, then the last position.
  """
  step_fn: StepFn
  eos_id: int
  stop_ids: tuple[int, ...] = ()
  max_gen: int = 256
  prefill_fn: Callable[..., Any] | None = None

  def __post_init__(self):
    if self.max_gen <= 0:
      raise ValueError(f"Decoder.max_gen must be positive, got {self.max_gen}")
    object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))

  def _record(self, state: DecodeState, tokens, logp, active) -> DecodeState:
    rows = jnp.arange(state.batch_size)
    idx = jnp.where(active, state.num_generated, self.max_gen)  # OOB: dropped
    out_tokens = state.tokens.at[rows, idx].set(tokens, mode="drop")
    out_logp = state.logprobs.at[rows, idx].set(logp, mode="drop")
    num = state.num_generated + active.astype(jnp.int32)
    is_stop = jnp.isin(tokens, jnp.asarray(self.stop_ids, jnp.int32)) if (
        self.stop_ids) else jnp.zeros_like(active)
    finished = state.finished | (active & ((tokens == self.eos_id) |
                                           (num >= self.max_gen)))
    return state.replace(
        pending=jnp.where(active, tokens, state.pending), tokens=out_tokens,
        logprobs=out_logp, num_generated=num, finished=finished,
        step_done=state.step_done | (active & is_stop))

  @functools.partial(jax.jit, static_argnums=(0, 7))
  def prefill(self, params, prompts: jax.Array, prompt_mask: jax.Array,
              cache, sampler: Sampler, rngs: jax.Array,
              num_samples: int = 1) -> DecodeState:
    """Feeds the prompts and samples each row's first token.

    Shared-prefix fan-out: each prompt is processed once, then its cache and
    last logits are broadcast to `num_samples` consecutive rows, each of
    which draws its own first token.

    Args:
      params: model parameters passed to `step_fn`.
      prompts: `[num_prompts, prompt_len] int32`; any padding (left or right).
      prompt_mask: `[num_prompts, prompt_len] bool`, True on real tokens;
        every row needs at least one.
      cache: an empty cache with `num_prompts` rows.
      sampler: a `Greedy` or `Sampling` instance.
      rngs: `[num_prompts * num_samples]` PRNG keys.
      num_samples: rows per prompt.

    Returns:
      The state of `num_prompts * num_samples` rows after one generated
      token per row.
    """
    if self.prefill_fn is not None:
      logits, cache = self.prefill_fn(params, prompts, prompt_mask, cache)
    else:
      logits, cache = self.step_fn(params, prompts, prompt_mask, cache)
      last = jnp.max(jnp.where(prompt_mask, jnp.arange(prompts.shape[1]), 0),
                     1)
      logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    if num_samples > 1:
      rows = jnp.repeat(jnp.arange(prompts.shape[0]), num_samples)
      cache = cache.take(rows)
      logits = logits[rows]
    batch = logits.shape[0]
    zeros = jnp.zeros((batch,), jnp.int32)
    state = DecodeState(
        cache=cache, pending=zeros,
        tokens=jnp.zeros((batch, self.max_gen), jnp.int32),
        logprobs=jnp.zeros((batch, self.max_gen), jnp.float32),
        num_generated=zeros, step_start=zeros,
        finished=jnp.zeros((batch,), bool), step_done=jnp.zeros((batch,), bool),
        rngs=rngs)
    tokens, logp = _sample(sampler, logits, rngs, zeros)
    return self._record(state, tokens, logp, jnp.ones((batch,), bool))

  @functools.partial(jax.jit, static_argnums=(0, 5, 6))
  def decode(self, params, state: DecodeState, sampler: Sampler,
             max_steps: int | jax.Array, until: Literal["eos", "step"] = "eos",
             new_step: bool = True, min_active: int | jax.Array = 0
             ) -> DecodeState:
    """Continues decoding every unfinished row.

    Args:
      params: model parameters passed to `step_fn`.
      state: from `prefill` or an earlier `decode` (possibly gathered).
      sampler: a `Greedy` or `Sampling` instance.
      max_steps: at most this many decode iterations (tokens per row);
        traced, so changing it does not recompile.
      until: 'eos' decodes whole solutions; 'step' returns once every row
        has ended its current step (delimiter), finished, or hit a cap.
      new_step: with until='step', rows that ended their step start a new
        one. False resumes a call that stopped early (e.g. at the end of a
        cache since grown): rows that ended their step stay done, the others
        go on with the same step, exactly as if the loop had not stopped.
      min_active: return as soon as at most this many rows are still
        going (traced); e.g. to finish a few stragglers in a smaller batch
        (`DecodeState.take`, decode, `DecodeState.put`).

    Returns:
      The new state. Rows stop at the end of the cache too: check
      `finished`/`step_done` to see which rows ended normally.
    """
    if until not in ("eos", "step"):
      raise ValueError(f"until must be 'eos' or 'step', got {until!r}")
    stop_on_step = until == "step"
    if stop_on_step and new_step:
      # A row that ended its previous step starts a new one now; a row cut
      # off mid-step (token cap, cache end) or fresh from prefill continues.
      state = state.replace(
          step_done=jnp.zeros_like(state.step_done),
          step_start=jnp.where(state.step_done, state.num_generated,
                               state.step_start))

    def active_rows(s: DecodeState):
      done = s.finished | (s.step_done if stop_on_step else False)
      return ~done

    def cond(carry):
      s, i = carry
      return ((jnp.sum(active_rows(s)) > min_active) & (i < max_steps) &
              (s.cache.index < s.cache.max_len))

    def body(carry):
      s, i = carry
      active = active_rows(s)
      logits, cache = self.step_fn(params, s.pending[:, None],
                                   active[:, None], s.cache)
      tokens, logp = _sample(sampler, logits[:, 0], s.rngs, s.num_generated)
      return self._record(s.replace(cache=cache), tokens, logp, active), i + 1

    state, _ = jax.lax.while_loop(cond, body, (state, jnp.zeros((), jnp.int32)))
    return state

  def sample(self, params, prompts: jax.Array, prompt_mask: jax.Array,
             cache: Any, sampler: Sampler, rngs: jax.Array, fan_out: int,
             max_steps: int, *, frozen: Any = None,
             until: Literal["eos", "step"] = "eos",
             shard: Callable[[Any], Any] | None = None) -> DecodeState:
    """Prefill, fan out, decode: the one "sample continuations" helper.

    Each prompt is prefilled once and its cache fanned out to `fan_out`
    consecutive rows (`prefill`); `frozen` rows are marked finished (padding
    that only fills a batch shape); then at most `max_steps` more tokens are
    decoded per row (none when 0) until EOS (or, with until='step', a step
    delimiter).

    Args:
      params: model parameters passed to `step_fn`.
      prompts: `[n, width] int32` left-padded prompt ids.
      prompt_mask: `[n, width] bool`.
      cache: an empty cache for `n` rows.
      sampler: a `Greedy` or `Sampling` instance.
      rngs: `[n * fan_out]` per-row keys.
      fan_out: rows per prompt.
      max_steps: decode iterations after the prefill's first token.
      frozen: optional `[n * fan_out] bool` rows that do not decode.
      until: see `decode`.
      shard: optional placement of `(prompts, prompt_mask, cache, rngs)`.

    Returns:
      The final state.
    """
    inputs = (prompts, prompt_mask, cache, rngs)
    if shard is not None:
      inputs = shard(inputs)
    state = self.prefill(params, *inputs[:3], sampler, inputs[3], fan_out)
    if frozen is not None:
      state = state.replace(finished=state.finished | frozen)
    if max_steps > 0:
      state = self.decode(params, state, sampler, max_steps, until)
    return state

