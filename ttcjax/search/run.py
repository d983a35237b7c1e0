"""One entry for every strategy: `run_search(config, ...)`."""

from __future__ import annotations

from typing import Sequence

import jax

from ttcjax.search.base import (PolicyFns, SearchConfig, SearchProblem,
                                SearchResult, TaskFns, VerifierFns)
from ttcjax.search.beam import beam_search, lookahead_search
from ttcjax.search.best_of_n import best_of_n
from ttcjax.search.dvts import dvts
from ttcjax.search.revisions import revisions

_STRATEGIES = {
    "best_of_n": best_of_n,
    "beam": beam_search,
    "lookahead": lookahead_search,
    "dvts": dvts,
    "revisions": revisions,  # `policy` must be a `RevisionPolicyFns`
}


def run_search(config: SearchConfig, problems: Sequence[SearchProblem],
               budget: int, policy: PolicyFns, verifier: VerifierFns,
               task: TaskFns, key: jax.Array) -> list[SearchResult]:
  """Runs `config.strategy` with budget N on `problems`; see the strategy's
  docstring. Results come in the order of `problems`."""
  return _STRATEGIES[config.strategy](problems, budget, policy, verifier,
                                      task, config, key)
