"""PRM beam search (Snell et al. 2024, Sec. 5).

Beam search with budget N and beam width M: sample N first steps (one
prefill per problem, fanned out), score them with the PRM, keep the best N/M,
expand each into M next steps, and repeat for up to `max_rounds` rounds.
Beams that end (EOS or a final-answer step) leave the pool and are kept;
the search stops once N have ended (if more end in the same round, the
best-valued fill the N). Beams cut by the token cap or the cache's end
leave as unfinished candidates, as do the kept beams when `max_rounds` runs
out; unfinished candidates are never chosen. The answer is chosen among
the ended beams with `selection` (weighted best-of-N in the paper).
"""

from __future__ import annotations

import dataclasses

from ttcjax.search.strategy import register
from ttcjax.search.tree import Group, Pruned, WidthConfig


def keep_best(group: Group, keep: int) -> Pruned:
  """Beam search's rule: completed rows leave (the best, up to N found in
  all), cut rows leave, and the best `keep` continuing rows survive with
  `size / keep` children each."""
  rows = group.rows
  complete = group.order(group.where("complete"))[:group.budget -
                                                  group.finished]
  kept = group.order(group.where("step"))[:keep]
  return Pruned(complete=tuple(rows[i] for i in complete),
                truncated=tuple(rows[i] for i in group.where("truncated")),
                children=tuple((rows[i], group.size // keep) for i in kept))


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class BeamConfig(WidthConfig):
  """PRM beam search: N beams, the best N/M kept, M children each
  (`beam_width` is M)."""
  strategy = "beam"

  def prune(self, group: Group, budget: int) -> Pruned:
    return keep_best(group, budget // self.width(budget))
