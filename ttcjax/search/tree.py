"""The step-level tree search engine behind beam search, lookahead and DVTS.

All problems of a batch and all their beams are rows of ONE decode state:
row `p * N + j` is slot `j` of problem `p`. Each round

1. every live row decodes one step (one `decode_step` for the batch; it
   grows the cache as it fills and finishes the last few rows' steps in a
   smaller batch, see `stepping.decode_step`);
2. lookahead only: live rows that continue roll out k greedy steps, and
   the cache is rolled back (see `stepping.rollout_and_rollback`);
3. every row with a new step is scored in ONE verifier call; the step's
   value is the score at its end (or at its roll-out's end). With
   `VerifierFns.incremental`, the verifier keeps a cache per row and reads
   only the round's new tokens (`ttcjax.search.incremental`), else every
   row's whole input is re-read (`batching.score_rows`);
4. per group of rows, the strategy's prune rule (`TreeConfig.prune`, a
   pure function of the group's `Group` view) says which rows leave the
   pool as finished or cut candidates and which survive with how many
   children; survivors are expanded into consecutive rows of their group
   (`DecodeState.take` + fresh keys).

The last round (`max_rounds`) decodes every live row to EOS instead of to
the end of its step, so no row is left alive at the round limit (as in
search-and-learn); the PRM scores each step it wrote.

The host-side bookkeeping of a batch is one `TreeState`; a round maps it to
the next. Beam search uses one group of N rows per problem and keeps the
best N/M continuing rows, refilled to N children (`beam.keep_best`); DVTS
uses N/M groups of M rows and follows each group's best child, an ended
group leaving all M rows as candidates (`dvts.follow_best`);
REBASE gives each continuing row a share of the remaining width by a
softmax of its value (`rebase.balance`). Row keys depend only on (problem
key, round, slot) and a rule only compares rows of the same group, so a
problem's result does not depend on the rest of its batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.search import base, batching, incremental
from ttcjax.search.base import (Candidate, PolicyFns, RoundTrace,
                                SearchProblem, SearchResult, TaskFns,
                                VerifierFns)
from ttcjax.search.selection import select
from ttcjax.search.stepping import (cache_slots, decode_step,
                                    rollout_and_rollback, step_ended)
from ttcjax.search.strategy import SearchConfig
from ttcjax.verifiers.scoring import aggregate

STATUSES = ("step", "complete", "truncated")

# What a tree search returns for a given key, hyper-parameters and models.
# Study stages that store search results hash it, so a change of semantics
# (2: beams refilled to N, DVTS's N candidates, last round to EOS; 3: a
# child no longer compared with its row's previous occupant, which cut
# children of shorter beams as if the cache were full) reruns
# them; record keys (`records.hparams_of`) do not change.
VERSION = 3


@dataclasses.dataclass(frozen=True)
class Group:
  """What a prune rule sees of one group of one problem in one round.

  Attributes:
    rows: `[k]` batch rows of the group that decoded this round, in row
      order.
    status: `[k]` per row: 'step' (ended a step, can go on), 'complete'
      (EOS or a final-answer step) or 'truncated' (token cap, cache end).
    value: `[k]` float, each row's candidate score (its step values
      aggregated with the config's `aggregation`).
    finished: candidates the problem has completed before this group.
    budget: N.
    size: rows per group (the most children a group can have).
  """
  rows: tuple[int, ...]
  status: tuple[str, ...]
  value: tuple[float, ...]
  finished: int
  budget: int
  size: int

  def order(self, keep: Sequence[int]) -> list[int]:
    """Positions `keep` by value, best first (ties: lower row first)."""
    return sorted(keep, key=lambda i: (-self.value[i], self.rows[i]))

  def where(self, status: str) -> list[int]:
    """Positions whose status is `status`."""
    return [i for i, s in enumerate(self.status) if s == status]


@dataclasses.dataclass(frozen=True)
class Pruned:
  """A prune rule's decision for one `Group` (rows are batch rows).

  Attributes:
    complete: rows that leave as finished candidates, in order.
    truncated: rows that leave as unfinished candidates, in order.
    children: `(row, count)` per survivor, in order: its `count` children
      fill the group's next rows; their sum is at most `Group.size`. None
      (or all counts 0) ends the group.
  """
  complete: tuple[int, ...] = ()
  truncated: tuple[int, ...] = ()
  children: tuple[tuple[int, int], ...] = ()

  def __post_init__(self):
    if any(c < 0 for _, c in self.children):
      raise ValueError(f"Pruned: negative child count in {self.children}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeConfig(SearchConfig):
  """Fields and hooks of the strategies the tree engine runs.

  A tree strategy subclasses this (or `WidthConfig`), registers itself and
  defines `prune`; it may override `group_size` (default: one group of N)
  and `rollout_steps` (lookahead).

  Attributes:
    max_rounds: most steps a tree search takes (the paper's 40).
    stop_at_answer: a step after which `answer_fn` finds an answer ends
      its candidate, as EOS does.
  """
  max_rounds: int = 40
  stop_at_answer: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.max_rounds < 1:
      raise ValueError(f"{self._where('max_rounds')} must be >= 1, got "
                       f"{self.max_rounds}")

  def identity(self, budget: int) -> dict[str, Any]:
    del budget
    return {"aggregation": self.aggregation, "max_rounds": self.max_rounds,
            "stop_at_answer": self.stop_at_answer}

  def rows(self, budget: int) -> int:
    budget = super().rows(budget)
    if budget % self.group_size(budget):
      raise ValueError(f"budget N={budget} is not a multiple of the group "
                       f"size {self.group_size(budget)}")
    return budget

  def group_size(self, budget: int) -> int:
    """Rows per group at budget N (N must be a multiple)."""
    return budget

  def rollout_steps(self) -> int:
    """Greedy roll-out steps that value a step (lookahead's k)."""
    return 0

  def prune(self, group: Group, budget: int) -> Pruned:
    """The pure prune rule: which rows of `group` leave, which survive."""
    raise NotImplementedError(f"{type(self).__name__}.prune")

  def run(self, problems, budget, policy, verifier, task, key):
    return tree_search(problems, budget, policy, verifier, task, self, key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WidthConfig(TreeConfig):
  """A tree search with a beam width M (beam search, lookahead, DVTS).

  Attributes:
    beam_width: M: an int (clamped to N), or 'sqrt' (the divisor of N
      closest to sqrt(N)).
  """
  beam_width: int | str = 4

  def __post_init__(self):
    super().__post_init__()
    if self.beam_width != "sqrt" and (not isinstance(self.beam_width, int)
                                      or self.beam_width < 1):
      raise ValueError(f"{self._where('beam_width')} must be a positive int "
                       f"or 'sqrt', got {self.beam_width!r}")

  def width(self, budget: int) -> int:
    """Beam width M for budget N; N must be a multiple of it."""
    if self.beam_width == "sqrt":
      divisors = [m for m in range(1, budget + 1) if budget % m == 0]
      return min(divisors, key=lambda m: (abs(m - math.sqrt(budget)), m))
    width = min(self.beam_width, budget)
    if budget % width:
      raise ValueError(f"budget N={budget} is not a multiple of "
                       f"{self._where('beam_width')}={width}")
    return width

  def identity(self, budget: int) -> dict[str, Any]:
    return {**super().identity(budget), "beam_width": self.width(budget)}

  def rows(self, budget: int) -> int:
    self.width(budget)
    return super().rows(budget)


@dataclasses.dataclass
class TreeState:
  """The host-side bookkeeping of one batch of P problems x N rows.

  Row `p * N + j` is slot `j` of problem `p`; `R = P * N` (padding problems
  included, never alive).

  Attributes:
    alive: `[R] bool` rows that decode in the next round.
    parent: `[R] int` slot each row was expanded from last round (-1: none).
    ends: `[R]` lists, exclusive end of each step of the row's solution.
    values: `[R]` lists, the value of each of those steps.
    finished: `[P_real]` lists of completed `Candidate`s.
    unfinished: `[P_real]` lists of cut `Candidate`s.
    done: `[P_real] bool` problems that have ended.
    group_done: `[P_real, N / group size] bool` groups that have ended.
    generated: `[P_real] int` policy tokens sampled (roll-outs included).
    read: `[P_real] int` verifier tokens read.
    traces: `[P_real]` lists of `RoundTrace`.
  """
  alive: np.ndarray
  parent: np.ndarray
  ends: list[list[int]]
  values: list[list[float]]
  finished: list[list[Candidate]]
  unfinished: list[list[Candidate]]
  done: np.ndarray
  group_done: np.ndarray
  generated: np.ndarray
  read: np.ndarray
  traces: list[list[RoundTrace]]

  @classmethod
  def initial(cls, real: int, padded: int, budget: int,
              groups: int) -> "TreeState":
    """Every real problem's N rows alive, nothing found yet."""
    rows = padded * budget
    return cls(alive=np.repeat(np.arange(padded), budget) < real,
               parent=np.full(rows, -1), ends=[[] for _ in range(rows)],
               values=[[] for _ in range(rows)],
               finished=[[] for _ in range(real)],
               unfinished=[[] for _ in range(real)],
               done=np.zeros(real, bool),
               group_done=np.zeros((real, groups), bool),
               generated=np.zeros(real, np.int64),
               read=np.zeros(real, np.int64),
               traces=[[] for _ in range(real)])


def tree_search(problems: Sequence[SearchProblem], budget: int,
                policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
                config: TreeConfig, key: jax.Array) -> list[SearchResult]:
  """Runs the engine over `problems`, `problems_per_batch` at a time."""
  config.rows(budget)  # validates N against the groups
  results = []
  for real, padded in batching.chunks(problems, config):
    results += _Batch(real, padded, budget, policy, verifier, task, config,
                      key).run()
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
  """One batch of problems x N rows: the fixed inputs of its rounds."""

  def __init__(self, real, padded, budget, policy, verifier, task, config,
               key):
    self.real, self.padded, self.n = real, padded, budget
    self.policy, self.verifier, self.task = policy, verifier, task
    self.config = config
    self.size = config.group_size(budget)
    self.problem = np.repeat(np.arange(len(padded)), budget)
    self.slot = np.tile(np.arange(budget), len(padded))
    self.rows_cache = None  # an incremental.RowCache while one is in use
    self.problem_keys = jnp.stack([
        base.search_key(key, p.uid, config.strategy, budget) for p in padded])

  def _shard(self, tree):
    return tree if self.policy.shard is None else self.policy.shard(tree)

  def _is_final(self, ids) -> bool:
    return self.config.stop_at_answer and self.task.answer_fn(
        [int(i) for i in ids]) is not None

  def _candidate(self, tree, r, tokens, num, cut=None):
    """Row `r`'s candidate: finished unless `cut` says why it ended."""
    return batching.make_candidate(tokens[r, :num[r]], tree.ends[r],
                                   tree.values[r], self.config.aggregation,
                                   cut is None, self.policy, self.task,
                                   cut=cut)

  def run(self) -> list[SearchResult]:
    policy, dec = self.policy, self.policy.decoder
    tree = TreeState.initial(len(self.real), len(self.padded), self.n,
                             self.n // self.size)
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
    if self.verifier.incremental is not None:
      try:
        self.rows_cache = incremental.RowCache(
            self.verifier, [p.prompt_ids for p in self.padded], self.n)
        tree.read += self.rows_cache.prompt_read[:len(self.real)]
      except incremental.Fallback:
        pass
    num_before = np.zeros(len(self.problem), np.int64)
    for rnd in range(self.config.max_rounds):
      live = tree.alive.copy()
      if not live.any():
        break
      # The last round decodes every live row to EOS (search-and-learn's
      # last iteration), so a beam alive at the round limit still ends.
      until = "eos" if rnd == self.config.max_rounds - 1 else "step"
      frozen = ~live
      if rnd == 0 and until == "step":
        # A first token that ends a step came from the prefill.
        tokens, num = jax.device_get((state.tokens, state.num_generated))
        frozen |= step_ended(policy, tokens, num, live)
      state = decode_step(policy, state, policy.sampler, frozen, until)
      tree, state, num = self._round(rnd, tree, state, live, num_before)
      num_before = num
    return self._results(tree)

  def _round(self, rnd, tree, state, live, num_before):
    """One round: the next `TreeState`, the expanded decode state and its
    rows' token counts."""
    dec, cfg = self.policy.decoder, self.config
    tokens, num = jax.device_get((state.tokens, state.num_generated))
    rows = np.flatnonzero(live)
    status, new_step = {}, {}
    old_steps, cut = {}, {}  # cut: why a 'truncated' row ended
    for r in rows:
      last = int(tokens[r, num[r] - 1]) if num[r] else -1
      end = num[r] - (last == dec.eos_id)
      old_steps[r] = len(tree.ends[r])
      start = tree.ends[r][-1] if tree.ends[r] else 0
      # One step per round; the last round (to EOS) may add several.
      new_step[r] = end > start
      if new_step[r]:
        tree.ends[r] += batching.step_ends_of(tokens[r], start, int(end),
                                              dec.stop_ids)
      # A row that made no progress found the cache full.
      can_go_on = num[r] < dec.max_gen and num[r] > num_before[r]
      if last == dec.eos_id or (last in dec.stop_ids and
                                self._is_final(tokens[r, :num[r]])):
        status[r] = "complete"
      elif last in dec.stop_ids and can_go_on:
        status[r] = "step"
      else:
        status[r] = "truncated"
        cut[r] = "token_cap" if num[r] >= dec.max_gen else "cache_end"

    # Lookahead: continuing rows roll out; the state comes back unchanged.
    rollout_new = dict.fromkeys(rows, 0)
    score_tokens, score_num, score_ends = tokens, num, {
        r: tree.ends[r] for r in rows}
    go = np.zeros(len(live), bool)
    go[[r for r in rows if status[r] == "step"]] = True
    steps = cfg.rollout_steps()
    if steps and go.any():
      rolled, state, _ = rollout_and_rollback(self.policy, state, go, steps,
                                              self._is_final)
      score_tokens, score_num = jax.device_get((rolled.tokens,
                                                rolled.num_generated))
      del rolled
      for r in np.flatnonzero(go):
        rollout_new[r] = int(score_num[r] - num[r])
        last = int(score_tokens[r, score_num[r] - 1])
        end = score_num[r] - (last == dec.eos_id)
        if end > num[r]:
          score_ends[r] = tree.ends[r] + batching.step_ends_of(
              score_tokens[r], num[r], end, dec.stop_ids)

    # One verifier call for every new step of the batch (incremental: one
    # for the steps, one for the roll-outs).
    prompts = [self.padded[p].prompt_ids for p in self.problem]
    scored = None
    if self.rows_cache is not None:
      steps = {r: (tokens[r, :tree.ends[r][-1]], tree.ends[r], old_steps[r])
               for r in rows if new_step[r]}
      rollouts = {r: (score_tokens[r, :score_ends[r][-1]], score_ends[r])
                  for r in steps if len(score_ends[r]) > len(tree.ends[r])}
      try:
        got, fed = self.rows_cache.score(prompts, steps, rollouts)
        scored = ([got.get(r, []) for r in range(len(live))],
                  [fed.get(r, 0) for r in range(len(live))])
      except incremental.Fallback:
        self.rows_cache = None  # this batch re-scores in full from now on
    if scored is None:
      solutions = [None] * len(live)
      for r in rows:
        if new_step[r]:
          solutions[r] = score_tokens[r, :score_ends[r][-1]]
      scored = batching.score_rows(self.verifier, prompts, solutions,
                                   [score_ends.get(r, []) for r in
                                    range(len(live))])
    scores, read = scored
    value = {}
    for r in rows:
      value[r] = scores[r][-1] if new_step[r] else math.nan
      if new_step[r] and rollout_new[r]:  # valued at the roll-out's end
        tree.values[r].append(float(value[r]))
      elif new_step[r]:
        tree.values[r] += [float(v) for v in
                           scores[r][old_steps[r]:len(tree.ends[r])]]
      p = self.problem[r]
      tree.generated[p] += num[r] - num_before[r] + rollout_new[r]
      tree.read[p] += read[r]

    agg = _aggregate_rows(tree.values, cfg.aggregation)
    by_problem = {}
    for r in rows:
      by_problem.setdefault(int(self.problem[r]), []).append(r)
    survivors = self._prune(rnd, tree, by_problem, status, cut, agg, tokens,
                            num)
    for p, mine in by_problem.items() if cfg.trace else ():
      tree.traces[p].append(RoundTrace(
          slots=tuple(int(self.slot[r]) for r in mine),
          parents=tuple(int(tree.parent[r]) for r in mine),
          new_tokens=tuple(int(num[r] - num_before[r]) for r in mine),
          rollout_tokens=tuple(rollout_new[r] for r in mine),
          values=tuple(float(value[r]) for r in mine),
          status=tuple(status[r] for r in mine),
          survivors=tuple(int(self.slot[r]) for g in survivors.get(p, {})
                          .values() for r, _ in g)))
    tree, state, src = self._expand(rnd, tree, state, survivors)
    # Token counts of the rows as they are now: a child in row r must be
    # compared with its parent's count next round, not with what row r held
    # (else a child of a shorter beam looks as if it made no progress and
    # is cut as 'cache_end').
    return tree, state, num[src]

  def _prune(self, rnd, tree, by_problem, status, cut, agg, tokens, num):
    """Applies the prune rule per group: moves leaving rows' candidates
    into `tree` (`cut`: why each truncated row ended); returns `{problem:
    {group: ((row, children), ...)}}`."""
    last_round = rnd == self.config.max_rounds - 1
    survivors = {}
    for p, rows in by_problem.items():
      groups = {}
      for r in rows:
        groups.setdefault(self.slot[r] // self.size, []).append(r)
      for g, members in groups.items():
        decision = self.config.prune(Group(
            rows=tuple(int(r) for r in members),
            status=tuple(status[r] for r in members),
            value=tuple(float(agg[r]) for r in members),
            finished=len(tree.finished[p]), budget=self.n, size=self.size),
                                     self.n)
        tree.finished[p] += [self._candidate(tree, r, tokens, num)
                             for r in decision.complete]
        # A row that had only ended a step leaves behind (DVTS siblings).
        tree.unfinished[p] += [self._candidate(
            tree, r, tokens, num, cut.get(r, "left_behind"))
                               for r in decision.truncated]
        kept = tuple((r, c) for r, c in decision.children if c)
        if sum(c for _, c in kept) > self.size:
          raise ValueError(f"{type(self.config).__name__}.prune gave "
                           f"{kept} children, more than a group's "
                           f"{self.size} rows")
        if kept:
          survivors.setdefault(p, {})[g] = kept
        else:
          tree.group_done[p, g] = True
      if (tree.group_done[p].all() or len(tree.finished[p]) >= self.n or
          p not in survivors):
        tree.done[p] = True
        survivors.pop(p, None)
      elif last_round:  # rounds exhausted: survivors end unfinished
        tree.unfinished[p] += [self._candidate(tree, r, tokens, num,
                                               "round_limit")
                               for g in survivors[p].values() for r, _ in g]
        tree.done[p] = True
    return survivors

  def _expand(self, rnd, tree, state, survivors):
    """Each survivor's children fill consecutive rows of its group; returns
    the tree, the decode state and `src` (the row each row now copies)."""
    src = np.arange(len(self.problem))
    alive = np.zeros(len(src), bool)
    parent = np.full(len(src), -1)
    for p, groups in survivors.items():
      if tree.done[p]:
        continue
      for g, kept in groups.items():
        row = p * self.n + g * self.size
        for r, count in kept:
          src[row:row + count] = r
          alive[row:row + count] = True
          parent[row:row + count] = self.slot[r]
          row += count
    tree = dataclasses.replace(
        tree, alive=alive, parent=parent,
        ends=[list(tree.ends[s]) for s in src],
        values=[list(tree.values[s]) for s in src])
    if not alive.any():
      return tree, state, src
    if self.rows_cache is not None:
      self.rows_cache.take(src)
    state = state.take(jnp.asarray(src)).with_rngs(
        batching.row_keys(self.problem_keys, self.n, rnd + 1))
    return tree, self._shard(state), src

  def _results(self, tree) -> list[SearchResult]:
    out = []
    for p, problem in enumerate(self.real):
      candidates = tuple(tree.finished[p] + tree.unfinished[p])
      chosen = select(candidates, self.config.selection, self.task.equiv_fn)
      out.append(SearchResult(
          uid=problem.uid, strategy=self.config.strategy, budget=self.n,
          candidates=candidates, chosen=chosen,
          answer=candidates[chosen].answer if chosen >= 0 else None,
          policy_tokens_generated=int(tree.generated[p]),
          prompt_tokens_prefilled=len(problem.prompt_ids),
          verifier_tokens_read=int(tree.read[p]),
          generations_used=self.config.generations(self.n),
          trace=tuple(tree.traces[p]) if self.config.trace else None))
    return out
