"""Diverse verifier tree search (DVTS; Beeching et al. 2024).

The N beams of a problem are split into N/M independent subtrees of M rows.
Each subtree greedily follows its best child: every round it samples M next
steps from its current beam, keeps the highest-valued one and expands it M
times again. A subtree ends when its best child has ended (EOS or a
final-answer step) or was cut; the subtree then contributes that one
candidate. Subtrees still going after `max_rounds` contribute unfinished
candidates, which are never chosen as answers. The answer is chosen among
the N/M subtree results with `SearchConfig.selection`.
"""

from __future__ import annotations

from typing import Sequence

import jax

from ttcjax.search.base import (PolicyFns, SearchConfig, SearchProblem,
                                SearchResult, TaskFns, VerifierFns)
from ttcjax.search.tree import TreeShape, tree_search


def dvts(problems: Sequence[SearchProblem], budget: int, policy: PolicyFns,
         verifier: VerifierFns, task: TaskFns, config: SearchConfig,
         key: jax.Array) -> list[SearchResult]:
  """DVTS with N = `budget` rows in N/M subtrees of M = `config.width(N)`.

  Arguments are those of `beam.beam_search`. Returns one `SearchResult` per
  problem, with one candidate per subtree.
  """
  width = config.width(budget)
  shape = TreeShape(group_size=width, keep=1, greedy=True)
  return tree_search(problems, budget, policy, verifier, task, config, key,
                     shape)
