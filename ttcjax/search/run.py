"""One entry for every strategy: `run_search(config, ...)`."""

from __future__ import annotations

from typing import Sequence

import jax

from ttcjax.search.base import (PolicyFns, SearchProblem, SearchResult,
                                TaskFns, VerifierFns)
from ttcjax.search.strategy import SearchConfig


def run_search(config: SearchConfig, problems: Sequence[SearchProblem],
               budget: int, policy: PolicyFns, verifier: VerifierFns,
               task: TaskFns, key: jax.Array) -> list[SearchResult]:
  """Runs `config`'s strategy with budget N on `problems`; see the
  strategy's module. Results come in the order of `problems`."""
  return config.run(problems, budget, policy, verifier, task, key)
