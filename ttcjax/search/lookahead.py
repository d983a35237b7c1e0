"""Step decoding for tree searches, and lookahead roll-outs with rollback.

Lookahead search (Snell et al. 2024, Sec. 5) values a candidate step by
rolling it out k further steps at temperature 0 and reading the PRM at the
roll-out's end. The roll-out must not disturb the candidate: instead of
copying the cache, `rollout_and_rollback` keeps only the candidate's cache
*bookkeeping* (`index`, `valid`, `next_pos`) and the decode state's small
per-row fields, lets the roll-out write past them, and then restores them
with `cache.rollback`. Keys and values written by the roll-out stay in the
buffers, masked and overwritten by the next step, so no `[batch, heads,
length, dim]` buffer is ever copied.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.decoding import DecodeState, Greedy, Sampler, Sampling
from ttcjax.search.base import PolicyFns


def decode_step(policy: PolicyFns, state: DecodeState, sampler: Sampler,
                frozen: np.ndarray) -> DecodeState:
  """Decodes one more step on every row not `frozen`.

  Frozen rows (dead beams, finished candidates, padding) are marked finished
  for the call, so they neither sample nor advance, then get their flag
  back.

  Args:
    policy: policy callbacks.
    state: the decode state.
    sampler: proposal or roll-out sampler.
    frozen: `[batch] bool` rows to leave alone.

  Returns:
    The state after every other row ended its step (delimiter, EOS, the
    token cap or the end of the cache).
  """
  frozen = jnp.asarray(frozen)
  was = state.finished
  state = policy.decoder.decode(policy.params, state.replace(
      finished=was | frozen), sampler, policy.decoder.max_gen, "step")
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
