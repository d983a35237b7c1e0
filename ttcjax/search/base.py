"""The one interface every search strategy shares: inputs, config, results.

A strategy takes problems (`SearchProblem`: uid and prompt ids), a budget and
three bundles of callbacks, and never sees which model is behind them:

* `PolicyFns`: a `ttcjax.decoding.Decoder` (its `step_fn`, EOS and step
  delimiters), the policy's params, a cache factory and the sampler;
* `VerifierFns`: a `score_fn` (see `ttcjax.verifiers`), its params, and how
  to lay out the verifier input from prompt ids and solution ids;
* `TaskFns`: `answer_fn(token_ids) -> str | None` and `equiv_fn(a, b)`.

Each strategy's hyper-parameters are its own config class
(`ttcjax.search.strategy.SearchConfig` subclasses, one module per strategy).
Budgets are counted in *generations*: best-of-N, beam search and DVTS with
budget N use N generations; lookahead search with k roll-out steps uses
N * (k + 1) (Snell et al. 2024, Sec. 5). Every `SearchResult` also carries
exact token counts (tokens the policy sampled, prompt tokens prefilled once
per problem, tokens the verifier read), so FLOPs follow exactly from
`ttcjax.analysis.flops.search_flops`.

Randomness: `search_key(key, uid, strategy, budget)` folds a problem's uid
(hashed stably), the strategy name and the budget into the base key, so a
problem's samples depend on nothing else: not on the other problems of its
batch, and not on which other budgets are run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from ttcjax.keys import stable_hash
from ttcjax.decoding import Decoder, Sampler, Sampling
from ttcjax.verifiers.scoring import ScoreFn

SELECTIONS = ("plain", "weighted", "majority")


@dataclasses.dataclass(frozen=True)
class SearchProblem:
  """One query: a stable id (it seeds the search) and its prompt ids."""
  uid: str
  prompt_ids: tuple[int, ...]

  def __post_init__(self):
    object.__setattr__(self, "prompt_ids", tuple(int(i) for i in
                                                 self.prompt_ids))
    if not self.prompt_ids:
      raise ValueError(f"SearchProblem {self.uid!r} has an empty prompt")


def concat_input(prompt_ids: Sequence[int], solution_ids: Sequence[int],
                 step_ends: Sequence[int]) -> tuple[list[int], list[int]]:
  """Verifier input = prompt then solution; a step's score is read at its
  last token (the delimiter).

  Args:
    prompt_ids: the policy prompt.
    solution_ids: generated ids, EOS removed.
    step_ends: exclusive end of each step in `solution_ids`.

  Returns:
    `(verifier_ids, score_positions)`, one position per step.
  """
  offset = len(prompt_ids)
  return list(prompt_ids) + list(solution_ids), [offset + e - 1
                                                 for e in step_ends]


@dataclasses.dataclass(frozen=True)
class StepTagInput:
  """Verifier input with tag ids inserted after every step (Math-Shepherd
  style PRMs); the score is read at each tag's last id."""
  tag_ids: tuple[int, ...]

  def __call__(self, prompt_ids, solution_ids, step_ends):
    ids, positions, start = list(prompt_ids), [], 0
    for end in step_ends:
      ids += list(solution_ids[start:end]) + list(self.tag_ids)
      positions.append(len(ids) - 1)
      start = end
    return ids, positions


BuildInput = Callable[[Sequence[int], Sequence[int], Sequence[int]],
                      tuple[list[int], list[int]]]


PromptFn = Callable[["SearchProblem", list[list[int]]], list[int]]


@dataclasses.dataclass(frozen=True)
class PolicyFns:
  """The policy, as callbacks and values.

  Attributes:
    decoder: drives the policy's `step_fn`; gives `eos_id`, the step
      delimiters `stop_ids` and `max_gen` (tokens per candidate).
    params: passed to the decoder's `step_fn`.
    init_cache: `(batch, max_len) -> empty cache`: a `KVCache` or any
      `ttcjax.decoding.cache.Cache` (the written protocol of what search
      calls on a cache; `grow` only with `grow_cache`).
    max_len: cache slots per row. Every decode iteration of a search takes
      one slot for all rows, so tree searches need more than prompt width +
      `max_gen`; rows still going when the cache is full end unfinished.
    sampler: proposal sampler (roll-outs use the same at temperature 0).
    pad_id: prompt padding id.
    prompt_len: fixed prompt width (None: the longest prompt of a batch);
      fixing it avoids recompiling for every batch.
    detokenize: optional ids -> text, filling `Candidate.text`.
    shard: optional placement of a pytree whose arrays have rows on axis 0,
      e.g. `functools.partial(partitioning.shard_rows, mesh=mesh)`.
    grow_cache: tree searches start with a cache of the next power of two
      slots above the prompt width and double it (`cache.grow`, up to
      `max_len`) whenever a step fills it, so attention reads about as
      many slots as are in use rather than `max_len`. Results are those of
      a full-size cache (up to float rounding of the masked slots).
    straggler_fraction: once at most this fraction of a tree search's rows
      are still in their step, they finish it as a batch of that size
      (gathered, then scattered back) instead of the whole batch idling
      along: a round lasts as long as its longest step. 0 disables it;
      it is off with `shard`.
    prompt_fn: for strategies that prompt with previous attempts
      (revisions): `(problem, previous_attempt_ids) -> prompt ids`,
      attempts oldest first, EOS removed, `[]` for a first attempt; e.g.
      `ttcjax.data.examples.revision_prompt_ids` over decoded attempts.
      Its prompts must fit `prompt_len` (when set), and prompt plus
      `decoder.max_gen` the cache. None: the strategy uses
      `SearchProblem.prompt_ids`.
  """
  decoder: Decoder
  params: Any
  init_cache: Callable[[int, int], Any]
  max_len: int
  sampler: Sampler = Sampling(1.0)
  pad_id: int = 0
  prompt_len: int | None = None
  detokenize: Callable[[Sequence[int]], str] | None = None
  shard: Callable[[Any], Any] | None = None
  grow_cache: bool = True
  straggler_fraction: float = 0.125
  prompt_fn: PromptFn | None = None


@dataclasses.dataclass(frozen=True)
class IncrementalVerifier:
  """A verifier that keeps a key/value cache per row and reads only the
  tokens a row adds (tree searches; see `ttcjax.search.incremental`).

  Attributes:
    init_cache: `(rows, slots) -> empty cache`, a `KVCache` or any
      `ttcjax.decoding.cache.Cache` (`take`, `grow` and `rollback` are
      used).
    extend_fn: `(params, tokens[n, t], token_mask[n, t], cache) ->
      (scores[n, t], cache)`: reads `tokens` after what the cache holds
      (writing them at slots `cache.index + arange(t)`; False in
      `token_mask` is padding, left or right) and scores every position
      as `VerifierFns.score_fn` would on the whole row; keep one object
      (it is a static jit argument).
    max_len: most cache slots per row. The cache starts short and doubles
      as it fills; every call takes as many slots for all rows as its
      widest row, so a search needs more than its longest verifier input.
      A batch that would need more falls back to full re-scoring.
    rows: most rows one call reads (None: every row of the batch); more
      are fed in groups of this many, each group's cache rows gathered and
      put back (bounds the activation peak; `VerifierFns.shard` must be
      able to split a group).
  """
  init_cache: Callable[[int, int], Any]
  extend_fn: Callable[..., Any]
  max_len: int
  rows: int | None = None

  def __post_init__(self):
    if not isinstance(self.max_len, int) or self.max_len < 1:
      raise ValueError(f"IncrementalVerifier.max_len must be a positive "
                       f"int, got {self.max_len!r}")
    if self.rows is not None and (not isinstance(self.rows, int)
                                  or self.rows < 1):
      raise ValueError(f"IncrementalVerifier.rows must be a positive int "
                       f"or None, got {self.rows!r}")


@dataclasses.dataclass(frozen=True)
class VerifierFns:
  """The verifier (PRM/ORM), as callbacks and values.

  Attributes:
    score_fn: `(params, tokens[n, L], token_mask[n, L]) -> [n, L]` scores
      in [0, 1]; keep one object (it is a static jit argument).
    params: passed to `score_fn`.
    max_len: longest verifier input `L`; a call pads its inputs to a
      power of two up to it (`batching.score_rows`).
    build_input: `(prompt_ids, solution_ids, step_ends) -> (ids,
      score_positions)`; `concat_input` or a `StepTagInput`.
    pad_id: padding id.
    shard: like `PolicyFns.shard`, for the verifier batch (and its cache).
    incremental: optional; tree searches then keep the verifier's cache per
      row and feed it only each round's new tokens instead of re-scoring
      every prefix with `score_fn`. `build_input` must then lay out a
      longer solution as an extension of a shorter one's ids (it does for
      `concat_input` and `StepTagInput`); a batch where it does not falls
      back to full re-scoring.
  """
  score_fn: ScoreFn
  params: Any
  max_len: int
  build_input: BuildInput = concat_input
  pad_id: int = 0
  shard: Callable[[Any], Any] | None = None
  incremental: IncrementalVerifier | None = None


@dataclasses.dataclass(frozen=True)
class TaskFns:
  """Task callbacks: final answer of generated ids, answer equivalence."""
  answer_fn: Callable[[Sequence[int]], str | None]
  equiv_fn: Callable[[str, str], bool]


# Why a candidate ended unfinished (`Candidate.cut`): its tokens reached
# max_gen; its rows' cache had no slot left (tree searches: all rows of a
# batch share one cache index); the tree search ran out of rounds while it
# was going on; or its DVTS subtree ended on a sibling while it had only
# ended a step.
CUT_REASONS = ("token_cap", "cache_end", "round_limit", "left_behind")


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One solution a search produced.

  Attributes:
    token_ids: generated ids (EOS included when sampled).
    step_ends: exclusive end of each step in `token_ids` (EOS excluded).
    step_scores: the value the search gave each step (the PRM score at the
      step's end; for lookahead, at the end of the step's roll-out).
    score: `step_scores` aggregated with the config's `aggregation`.
    answer: `answer_fn(token_ids)`.
    finished: ended with EOS or (stop_at_answer) a final-answer step;
      unfinished candidates (cut by max_gen, the cache or max_rounds) are
      never chosen.
    cut: why an unfinished candidate ended (one of `CUT_REASONS`); None
      for a finished one.
    verifier_tokens: tokens the verifier read for this candidate alone
      (best-of-N); None where prefixes were shared (tree searches).
    text: `detokenize(token_ids)`, if a detokenizer was given.
  """
  token_ids: tuple[int, ...]
  step_ends: tuple[int, ...]
  step_scores: tuple[float, ...]
  score: float
  answer: str | None
  finished: bool
  verifier_tokens: int | None = None
  text: str | None = None
  cut: str | None = None

  def __post_init__(self):
    if self.finished != (self.cut is None) or (
        self.cut is not None and self.cut not in CUT_REASONS):
      raise ValueError(f"Candidate: finished={self.finished} needs cut=None"
                       f" and an unfinished one a cut in {CUT_REASONS}, got "
                       f"cut={self.cut!r}")


@dataclasses.dataclass(frozen=True)
class RoundTrace:
  """What one round of a tree search did to one problem (debugging, tests).

  Attributes:
    slots: slots (row within the problem) that decoded a step.
    parents: per slot, the previous round's slot it was expanded from (-1 in
      round 0).
    new_tokens: per slot, tokens sampled for its step.
    rollout_tokens: per slot, tokens sampled by its roll-out (lookahead).
    values: per slot, the value given to its step (nan: no new step).
    status: per slot, 'step', 'complete' or 'truncated'.
    survivors: slots kept for expansion.
  """
  slots: tuple[int, ...]
  parents: tuple[int, ...]
  new_tokens: tuple[int, ...]
  rollout_tokens: tuple[int, ...]
  values: tuple[float, ...]
  status: tuple[str, ...]
  survivors: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """A strategy's output for one problem.

  Attributes:
    uid: the problem's uid.
    strategy: the strategy's registered name.
    budget: N.
    candidates: final candidates (finished ones, then unfinished ones).
    chosen: index of the chosen candidate, -1 if none qualifies.
    answer: the chosen answer (None if no finished candidate has one).
    policy_tokens_generated: tokens the policy sampled, roll-outs included;
      a prefix shared by several beams counts once.
    prompt_tokens_prefilled: prompt tokens fed (once per problem).
    verifier_tokens_read: tokens the verifier read, over all its calls.
    generations_used: the budget in generations (see module docstring).
    trace: per-round `RoundTrace`s when the config's `trace` is set.
  """
  uid: str
  strategy: str
  budget: int
  candidates: tuple[Candidate, ...]
  chosen: int
  answer: str | None
  policy_tokens_generated: int
  prompt_tokens_prefilled: int
  verifier_tokens_read: int
  generations_used: int
  trace: tuple[RoundTrace, ...] | None = None

  def to_record(self) -> dict[str, Any]:
    """A JSON-ready summary (no token ids)."""
    return {
        "uid": self.uid, "strategy": self.strategy, "budget": self.budget,
        "answer": self.answer, "chosen": self.chosen,
        "policy_tokens_generated": self.policy_tokens_generated,
        "prompt_tokens_prefilled": self.prompt_tokens_prefilled,
        "verifier_tokens_read": self.verifier_tokens_read,
        "generations_used": self.generations_used,
        "candidates": [{"answer": c.answer, "score": c.score,
                        "finished": c.finished, "steps": len(c.step_ends),
                        "tokens": len(c.token_ids)} for c in self.candidates],
    }


def search_key(key: jax.Array, uid: str, strategy: str,
               budget: int) -> jax.Array:
  """The key of one problem's search: base key folded with uid, strategy
  and budget."""
  key = jax.random.fold_in(key, stable_hash(uid))
  key = jax.random.fold_in(key, stable_hash(strategy))
  return jax.random.fold_in(key, budget)
