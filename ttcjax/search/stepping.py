"""Step decoding for tree searches, and roll-outs with rollback.

Lookahead search (Snell et al. 2024, Sec. 5) values a candidate step by
rolling it out k further steps at temperature 0 and reading the PRM at the
roll-out's end. The roll-out must not disturb the candidate: instead of
copying the cache, `rollout_and_rollback` keeps only the candidate's cache
*bookkeeping* (`index`, `valid`, `next_pos`) and the decode state's small
per-row fields, lets the roll-out write past them, and then restores them
with `cache.rollback`. Keys and values written by the roll-out stay in the
buffers, masked and overwritten by the next step, so no `[batch, heads,
length, dim]` buffer is ever copied.

`decode_step` keeps the cost of a step near that of plain sampling: the
cache starts short and doubles as it fills (attention reads every slot, so
a cache sized for 40 rounds would make every early step pay for all of
them), and once only a few rows are still in their step they finish it in
a batch of their own instead of the whole batch idling along.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.decoding import DecodeState, Greedy, Sampler, Sampling
from ttcjax.search.base import PolicyFns
from ttcjax.search.batching import bucket


def cache_slots(policy: PolicyFns, used: int) -> int:
  """Slots to allocate for a cache of which `used` are filled: the next
  power of two above `used`, at most `policy.max_len` (all of it when the
  cache does not grow)."""
  if not policy.grow_cache:
    return policy.max_len
  return bucket(used + 1, policy.max_len)


def _grow(policy: PolicyFns, state: DecodeState, slots: int) -> DecodeState:
  state = state.replace(cache=state.cache.grow(slots))
  return state if policy.shard is None else policy.shard(state)


def _decode(policy: PolicyFns, state: DecodeState, sampler: Sampler,
            new_step: bool, min_active: int, until: str
            ) -> tuple[DecodeState, np.ndarray]:
  """Decodes until at most `min_active` rows are still in their step (with
  `until='eos'`: their solution), or the cache is full at
  `policy.max_len`, growing the cache as it fills.

  Returns:
    The state and `[batch] bool` the rows still going.
  """
  dec = policy.decoder
  while True:
    slots = state.cache.max_len
    if int(state.cache.index) >= slots and slots < policy.max_len:
      state = _grow(policy, state, cache_slots(policy, slots))
    state = dec.decode(policy.params, state, sampler, dec.max_gen, until,
                       new_step, min_active)
    new_step = False
    index, finished, step_done = jax.device_get(
        (state.cache.index, state.finished, state.step_done))
    going = ~(finished | (step_done if until == "step" else False))
    if (index < state.cache.max_len or going.sum() <= min_active or
        state.cache.max_len >= policy.max_len):
      return state, going


def decode_step(policy: PolicyFns, state: DecodeState, sampler: Sampler,
                frozen: np.ndarray, until: str = "step") -> DecodeState:
  """Decodes one more step (`until='eos'`: the rest of the solution) on
  every row not `frozen`.

  Frozen rows (dead beams, finished candidates, padding) are marked finished
  for the call, so they neither sample nor advance, then get their flag
  back. With `policy.grow_cache`, a cache that fills before every row ended
  its step is doubled (up to `policy.max_len`) and the step resumes. Once
  at most `policy.straggler_fraction` of the rows are still in their step,
  they finish it as a batch of that size (gathered, then scattered back).

  Args:
    policy: policy callbacks.
    state: the decode state.
    sampler: proposal or roll-out sampler.
    frozen: `[batch] bool` rows to leave alone.
    until: 'step' ends at a step delimiter, 'eos' only at EOS (a tree
      search's last round).

  Returns:
    The state after every other row ended its step (delimiter, EOS, the
    token cap or the end of the cache; with 'eos', no delimiter).
  """
  was = state.finished
  frozen = jnp.asarray(frozen)
  batch = state.batch_size
  few = int(batch * policy.straggler_fraction)
  if policy.shard is not None or 2 * few > batch:
    few = 0  # a few rows would not split over devices, or save nothing
  state, going = _decode(policy, state.replace(finished=was | frozen),
                         sampler, True, few, until)
  rows = np.flatnonzero(going)
  if len(rows) and int(state.cache.index) < policy.max_len:
    # Stragglers decode alone until they end their step, as `few` rows
    # (repeated to fill; the copies are frozen).
    fill = np.arange(few) >= len(rows)
    sub = state.take(jnp.asarray(np.resize(rows, few)))
    sub, _ = _decode(policy, sub.replace(finished=sub.finished | fill),
                     sampler, False, 0, until)
    if sub.cache.max_len > state.cache.max_len:
      state = _grow(policy, state, sub.cache.max_len)
    state = state.put(jnp.asarray(rows), sub)
  return state.replace(finished=jnp.where(frozen, was, state.finished))


def greedy_like(sampler: Sampler) -> Sampler:
  """`sampler` at temperature 0: the same pytree shape as a `Sampling`, so
  roll-outs reuse the proposals' compiled decode loop."""
  if isinstance(sampler, Sampling):
    temperature = sampler.temperature
    zero = (0.0 if np.ndim(temperature) == 0 else
            jnp.zeros_like(jnp.asarray(temperature, jnp.float32)))
    return sampler.replace(temperature=zero)
  return Greedy()


def step_ended(policy: PolicyFns, tokens: np.ndarray, num: np.ndarray,
               rows: np.ndarray) -> np.ndarray:
  """`[batch] bool`: among `rows`, those whose last token ends a step or
  the solution (a delimiter or EOS)."""
  last = tokens[np.arange(len(num)), np.maximum(num - 1, 0)]
  ends = np.isin(last, list(policy.decoder.stop_ids) + [policy.decoder.eos_id])
  return rows & (num > 0) & ends


def rollout(policy: PolicyFns, state: DecodeState, rows: np.ndarray,
            num_steps: int, is_final: Callable[[Sequence[int]], bool]
            ) -> tuple[DecodeState, int]:
  """Greedily decodes up to `num_steps` further steps of `rows`.

  A row stops early at EOS, at the token cap or the cache's end, or after a
  step for which `is_final(ids)` holds (its final-answer line).

  Returns:
    (the rolled-out state, decode calls made).
  """
  sampler = greedy_like(policy.sampler)
  active, calls = np.asarray(rows, bool).copy(), 0
  for _ in range(num_steps):
    if not active.any():
      break
    state = decode_step(policy, state, sampler, ~active)
    calls += 1
    tokens, num = jax.device_get((state.tokens, state.num_generated))
    last = tokens[np.arange(len(num)), np.maximum(num - 1, 0)]
    active &= np.isin(last, policy.decoder.stop_ids)
    active &= num < policy.decoder.max_gen
    for r in np.flatnonzero(active):
      if is_final(tokens[r, :num[r]]):
        active[r] = False
  return state, calls


def rollout_and_rollback(policy: PolicyFns, state: DecodeState,
                         rows: np.ndarray, num_steps: int,
                         is_final: Callable[[Sequence[int]], bool]
                         ) -> tuple[DecodeState, DecodeState, int]:
  """Rolls `rows` out, then restores the state as it was before.

  Args:
    policy: policy callbacks.
    state: candidates that just ended a step.
    rows: `[batch] bool` rows to roll out.
    num_steps: k.
    is_final: see `rollout`.

  Returns:
    `(rolled, restored, decode_calls)`: the rolled-out state (read its
    tokens), and the original state whose cache is `rolled.cache` rolled
    back to the original bookkeeping. `restored` decodes exactly as `state`
    would have.
  """
  cache = state.cache
  bookkeeping = (cache.index, cache.valid, cache.next_pos)
  saved = state.replace(cache=None)  # per-row fields only: no K/V buffers
  rolled, calls = rollout(policy, state, rows, num_steps, is_final)
  restored = saved.replace(cache=rolled.cache.rollback(*bookkeeping))
  return rolled, restored, calls
