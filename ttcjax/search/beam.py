"""PRM beam search and lookahead search (Snell et al. 2024, Sec. 5).

Beam search with budget N and beam width M: sample N first steps (one
prefill per problem, fanned out), score them with the PRM, keep the best N/M,
expand each into M next steps, and repeat for up to `max_rounds` rounds.
Beams that end (EOS or a final-answer step) leave the pool and are kept;
the search stops once N have ended (if more end in the same round, the
best-valued fill the N). Beams cut by the token cap or the cache's end
leave as unfinished candidates, as do the kept beams when `max_rounds` runs
out; unfinished candidates are never chosen. The answer is chosen among
the ended beams with `SearchConfig.selection` (weighted best-of-N in the
paper).

Lookahead search is beam search whose step values come from rolling each
candidate out k steps at temperature 0 and reading the PRM at the
roll-out's end; it costs N * (k + 1) generations.
"""

from __future__ import annotations

from typing import Sequence

import jax

from ttcjax.search.base import (PolicyFns, SearchConfig, SearchProblem,
                                SearchResult, TaskFns, VerifierFns)
from ttcjax.search.tree import TreeShape, tree_search


def beam_search(problems: Sequence[SearchProblem], budget: int,
                policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
                config: SearchConfig, key: jax.Array) -> list[SearchResult]:
  """PRM beam search with N = `budget` beams and M = `config.width(N)`.

  Args:
    problems: the queries; all of a batch and their beams decode as rows of
      one batch.
    budget: N, beams (generations).
    policy: policy callbacks.
    verifier: PRM; one call per round scores every new step of the batch.
    task: answer extraction (also detects final-answer steps) and
      equivalence.
    config: `beam_width`, `max_rounds`, `aggregation`, `selection`,
      `stop_at_answer`, `lookahead` (when strategy is 'lookahead').
    key: base key; see `base.search_key`.

  Returns:
    One `SearchResult` per problem.
  """
  width = config.width(budget)
  shape = TreeShape(group_size=budget, keep=budget // width,
                    lookahead=config.lookahead)
  return tree_search(problems, budget, policy, verifier, task, config, key,
                     shape)


def lookahead_search(problems: Sequence[SearchProblem], budget: int,
                     policy: PolicyFns, verifier: VerifierFns,
                     task: TaskFns, config: SearchConfig,
                     key: jax.Array) -> list[SearchResult]:
  """Beam search whose step values come from k-step greedy roll-outs.

  `config.strategy` must be 'lookahead' and `config.lookahead` is k. Each
  result's `generations_used` is N * (k + 1).
  """
  if config.strategy != "lookahead":
    raise ValueError(f"lookahead_search needs SearchConfig.strategy="
                     f"'lookahead', got {config.strategy!r}")
  return beam_search(problems, budget, policy, verifier, task, config, key)
