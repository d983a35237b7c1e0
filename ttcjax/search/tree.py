"""The step-level tree search engine behind beam search, lookahead and DVTS.

All problems of a batch and all their beams are rows of ONE decode state:
row `p * N + j` is slot `j` of problem `p`. Each round

1. every live row decodes one step (one `decode_step` for the batch; it
   grows the cache as it fills and finishes the last few rows' steps in a
   smaller batch, see `stepping.decode_step`);
2. lookahead only: live rows that continue roll out k greedy steps, and
   the cache is rolled back (see `stepping.rollout_and_rollback`);
3. every row with a new step is scored in ONE verifier call; the step's
   value is the score at its end (or at its roll-out's end);
4. per group of rows, rows that completed (EOS, or a final-answer step)
   and rows that were cut (token cap, cache end) leave the pool, the best
   `keep` continuing rows survive, and each is expanded into
   `group_size / keep` children (`DecodeState.take` + fresh keys).

Beam search uses one group of N rows per problem and keeps N/M; DVTS uses
N/M groups of M rows and keeps one (`TreeShape`). Row keys depend only on
(problem key, round, slot) and selection only compares rows of the same
problem, so a problem's result does not depend on the rest of its batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.search import base, batching
from ttcjax.search.base import (PolicyFns, RoundTrace, SearchConfig,
                                SearchProblem, SearchResult, TaskFns,
                                VerifierFns)
from ttcjax.search.stepping import (cache_slots, decode_step,
                                    rollout_and_rollback, step_ended)
from ttcjax.search.selection import select
from ttcjax.verifiers.scoring import aggregate


@dataclasses.dataclass(frozen=True)
class TreeShape:
  """How a tree search prunes.

  Attributes:
    group_size: rows per group (beam search: N; DVTS: M).
    keep: rows a group keeps per round (beam search: N/M; DVTS: 1).
    greedy: DVTS: a group's best child wins even if it completed, which
      ends the group; beam search: completed rows leave, the best
      continuing rows survive, until N have completed.
    lookahead: k roll-out steps per candidate (0: none).
  """
  group_size: int
  keep: int
  greedy: bool = False
  lookahead: int = 0

  def __post_init__(self):
    if self.group_size < 1 or self.keep < 1 or self.group_size % self.keep:
      raise ValueError(f"TreeShape: keep={self.keep} must divide "
                       f"group_size={self.group_size}")


def tree_search(problems: Sequence[SearchProblem], budget: int,
                policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
                config: SearchConfig, key: jax.Array,
                shape: TreeShape) -> list[SearchResult]:
  """Runs the engine over `problems`, `problems_per_batch` at a time."""
  if budget % shape.group_size:
    raise ValueError(f"budget N={budget} is not a multiple of the group size "
                     f"{shape.group_size}")
  results = []
  for real, padded in batching.chunks(problems, config):
    results += _Batch(real, padded, budget, policy, verifier, task, config,
                      key, shape).run()
  return results


def _aggregate_rows(values: Sequence[Sequence[float]], how: str) -> np.ndarray:
  width = max([len(v) for v in values] + [1])
  scores = np.zeros((len(values), width), np.float32)
  mask = np.zeros((len(values), width), bool)
  for r, v in enumerate(values):
    scores[r, :len(v)] = v
    mask[r, :len(v)] = True
  return aggregate(scores, mask, how)


class _Batch:
  """One batch of problems x N rows, searched round by round."""

  def __init__(self, real, padded, budget, policy, verifier, task, config,
               key, shape):
    self.real, self.padded, self.n = real, padded, budget
    self.policy, self.verifier, self.task = policy, verifier, task
    self.config, self.shape = config, shape
    rows = len(padded) * budget
    self.problem = np.repeat(np.arange(len(padded)), budget)
    self.slot = np.tile(np.arange(budget), len(padded))
    self.alive = self.problem < len(real)
    self.parent = np.full(rows, -1)
    self.ends = [[] for _ in range(rows)]
    self.values = [[] for _ in range(rows)]
    self.problem_keys = jnp.stack([
        base.search_key(key, p.uid, config.strategy, budget) for p in padded])
    self.generated = np.zeros(len(real), np.int64)
    self.read = np.zeros(len(real), np.int64)
    self.finished = [[] for _ in real]
    self.unfinished = [[] for _ in real]
    self.done = np.zeros(len(real), bool)
    self.group_done = np.zeros((len(real), budget // shape.group_size), bool)
    self.traces = [[] for _ in real]

  def _shard(self, tree):
    return tree if self.policy.shard is None else self.policy.shard(tree)

  def _is_final(self, ids) -> bool:
    return self.config.stop_at_answer and self.task.answer_fn(
        [int(i) for i in ids]) is not None

  def _candidate(self, r, tokens, num, finished):
    return batching.make_candidate(tokens[r, :num[r]], self.ends[r],
                               self.values[r], self.config.aggregation,
                               finished, self.policy, self.task)

  def run(self) -> list[SearchResult]:
    policy, dec = self.policy, self.policy.decoder
    prompts, mask = batching.pad_prompts(self.padded, policy.pad_id,
                                     policy.prompt_len)
    # A short cache that `decode_step` grows as it fills (`grow_cache`).
    cache = policy.init_cache(len(self.padded),
                              cache_slots(policy, prompts.shape[1]))
    inputs = self._shard((prompts, mask, cache,
                          batching.row_keys(self.problem_keys, self.n, 0)))
    state = dec.prefill(policy.params, *inputs[:3], policy.sampler,
                        inputs[3], self.n)
    state = self._shard(state)
    num_before = np.zeros(len(self.problem), np.int64)
    for rnd in range(self.config.max_rounds):
      live = self.alive.copy()
      if not live.any():
        break
      frozen = ~live
      if rnd == 0:  # a first token that ends a step came from the prefill
        tokens, num = jax.device_get((state.tokens, state.num_generated))
        frozen |= step_ended(policy, tokens, num, live)
      state = decode_step(policy, state, policy.sampler, frozen)
      state, num = self._round(rnd, state, live, num_before)
      num_before = num
    return self._results()

  def _round(self, rnd, state, live, num_before):
    """One round; returns the expanded state and its rows' token counts."""
    dec, cfg = self.policy.decoder, self.config
    tokens, num = jax.device_get((state.tokens, state.num_generated))
    rows = np.flatnonzero(live)
    status, new_step = {}, {}
    for r in rows:
      last = int(tokens[r, num[r] - 1]) if num[r] else -1
      end = num[r] - (last == dec.eos_id)
      new_step[r] = end > (self.ends[r][-1] if self.ends[r] else 0)
      if new_step[r]:
        self.ends[r].append(int(end))
      # A row that made no progress found the cache full.
      can_go_on = num[r] < dec.max_gen and num[r] > num_before[r]
      if last == dec.eos_id or (last in dec.stop_ids and
                                self._is_final(tokens[r, :num[r]])):
        status[r] = "complete"
      elif last in dec.stop_ids and can_go_on:
        status[r] = "step"
      else:
        status[r] = "truncated"

    # Lookahead: continuing rows roll out; the state comes back unchanged.
    rollout_new = dict.fromkeys(rows, 0)
    score_tokens, score_num, score_ends = tokens, num, {
        r: self.ends[r] for r in rows}
    go = np.zeros(len(live), bool)
    go[[r for r in rows if status[r] == "step"]] = True
    if self.shape.lookahead and go.any():
      rolled, state, _ = rollout_and_rollback(self.policy, state, go,
                                              self.shape.lookahead,
                                              self._is_final)
      score_tokens, score_num = jax.device_get((rolled.tokens,
                                                rolled.num_generated))
      del rolled
      for r in np.flatnonzero(go):
        rollout_new[r] = int(score_num[r] - num[r])
        last = int(score_tokens[r, score_num[r] - 1])
        end = score_num[r] - (last == dec.eos_id)
        if end > num[r]:
          score_ends[r] = self.ends[r] + batching.step_ends_of(
              score_tokens[r], num[r], end, dec.stop_ids)

    # One verifier call for every new step of the batch.
    solutions = [None] * len(live)
    for r in rows:
      if new_step[r]:
        solutions[r] = score_tokens[r, :score_ends[r][-1]]
    prompts = [self.padded[p].prompt_ids for p in self.problem]
    scores, read = batching.score_rows(self.verifier, prompts, solutions,
                                   [score_ends.get(r, []) for r in
                                    range(len(live))])
    value = {}
    for r in rows:
      value[r] = scores[r][-1] if new_step[r] else math.nan
      if new_step[r]:
        self.values[r].append(float(value[r]))
      p = self.problem[r]
      self.generated[p] += num[r] - num_before[r] + rollout_new[r]
      self.read[p] += read[r]

    agg = _aggregate_rows(self.values, cfg.aggregation)
    by_problem = {}
    for r in rows:
      by_problem.setdefault(int(self.problem[r]), []).append(r)
    survivors = self._select(rnd, by_problem, status, agg, tokens, num)
    for p, mine in by_problem.items() if cfg.trace else ():
      self.traces[p].append(RoundTrace(
          slots=tuple(int(self.slot[r]) for r in mine),
          parents=tuple(int(self.parent[r]) for r in mine),
          new_tokens=tuple(int(num[r] - num_before[r]) for r in mine),
          rollout_tokens=tuple(rollout_new[r] for r in mine),
          values=tuple(float(value[r]) for r in mine),
          status=tuple(status[r] for r in mine),
          survivors=tuple(int(self.slot[r]) for g in survivors.get(p, {})
                          .values() for r in g)))
    return self._expand(rnd, state, survivors), num

  def _select(self, rnd, by_problem, status, agg, tokens, num):
    """Moves completed/cut rows out; returns {problem: {group: rows}}."""
    size, keep = self.shape.group_size, self.shape.keep
    last_round = rnd == self.config.max_rounds - 1
    order = lambda rs: sorted(rs, key=lambda r: (-agg[r], r))
    survivors = {}
    for p, rows in by_problem.items():
      groups = {}
      for r in rows:
        groups.setdefault(self.slot[r] // size, []).append(r)
      for g, members in groups.items():
        if self.shape.greedy:  # DVTS: the best child, cut rows last
          best = min(members, key=lambda r: (status[r] == "truncated",
                                             -agg[r], r))
          if status[best] != "step":
            out = self.finished if status[best] == "complete" else (
                self.unfinished)
            out[p].append(self._candidate(best, tokens, num,
                                          status[best] == "complete"))
            self.group_done[p, g] = True
          else:
            survivors.setdefault(p, {})[g] = [best]
          continue
        complete = order([r for r in members if status[r] == "complete"])
        room = self.n - len(self.finished[p])
        self.finished[p] += [self._candidate(r, tokens, num, True)
                             for r in complete[:room]]
        self.unfinished[p] += [self._candidate(r, tokens, num, False)
                               for r in members if status[r] == "truncated"]
        kept = order([r for r in members if status[r] == "step"])[:keep]
        if kept:
          survivors.setdefault(p, {})[g] = kept
      finished_all = (self.group_done[p].all() if self.shape.greedy else
                      len(self.finished[p]) >= self.n)
      if finished_all or p not in survivors:
        self.done[p] = True
        survivors.pop(p, None)
      elif last_round:  # rounds exhausted: survivors end unfinished
        self.unfinished[p] += [self._candidate(r, tokens, num, False)
                               for g in survivors[p].values() for r in g]
        self.done[p] = True
    return survivors

  def _expand(self, rnd, state, survivors):
    """Each survivor becomes `group_size / keep` consecutive rows."""
    size = self.shape.group_size
    per = size // self.shape.keep
    src = np.arange(len(self.problem))
    alive = np.zeros(len(src), bool)
    parent = np.full(len(src), -1)
    for p, groups in survivors.items():
      if self.done[p]:
        continue
      for g, kept in groups.items():
        for j in range(len(kept) * per):
          row = p * self.n + g * size + j
          src[row] = kept[j // per]
          alive[row] = True
          parent[row] = self.slot[kept[j // per]]
    self.alive, self.parent = alive, parent
    self.ends = [list(self.ends[s]) for s in src]
    self.values = [list(self.values[s]) for s in src]
    if not alive.any():
      return state
    state = state.take(jnp.asarray(src)).with_rngs(
        batching.row_keys(self.problem_keys, self.n, rnd + 1))
    return self._shard(state)

  def _results(self) -> list[SearchResult]:
    out = []
    for p, problem in enumerate(self.real):
      candidates = tuple(self.finished[p] + self.unfinished[p])
      chosen = select(candidates, self.config.selection, self.task.equiv_fn)
      out.append(SearchResult(
          uid=problem.uid, strategy=self.config.strategy, budget=self.n,
          candidates=candidates, chosen=chosen,
          answer=candidates[chosen].answer if chosen >= 0 else None,
          policy_tokens_generated=int(self.generated[p]),
          prompt_tokens_prefilled=len(problem.prompt_ids),
          verifier_tokens_read=int(self.read[p]),
          generations_used=self.config.generations(self.n),
          trace=tuple(self.traces[p]) if self.config.trace else None))
    return out
