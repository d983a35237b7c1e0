"""Diverse verifier tree search (DVTS; Beeching et al. 2024).

The N beams of a problem are split into N/M independent subtrees of M rows.
Each subtree greedily follows its best child: every round it samples M next
steps from its current beam, keeps the highest-valued one and expands it M
times again. A subtree ends when its best child has ended (EOS or a
final-answer step) or was cut, or in round `max_rounds`, which decodes
every live row to EOS (search-and-learn's last iteration).

As in huggingface/search-and-learn (`recipes/.../dvts.py`, which copies
"the results from the last iteration in to beam_width beams as otherwise
we would only have n/m results"), an ended subtree contributes all M rows
of its last expansion, so a problem has N candidates: the rows that ended
(EOS or a final answer) as finished candidates, the others (ended only a
step, or cut) as unfinished ones, counted but never chosen, since they
have no final answer. The answer is chosen among the finished ones with
`selection`."""

from __future__ import annotations

import dataclasses

from ttcjax.search.strategy import register
from ttcjax.search.tree import Group, Pruned, WidthConfig


def follow_best(group: Group) -> Pruned:
  """DVTS's rule: the group's best child (cut rows last) wins; if it goes
  on, it is expanded into the whole group; if it has ended, the group ends
  and leaves all its rows as candidates (best first): the ended ones
  finished, the rest unfinished."""
  order = sorted(range(len(group.rows)), key=lambda i: (
      group.status[i] == "truncated", -group.value[i], group.rows[i]))
  best = order[0]
  if group.status[best] == "step":
    return Pruned(children=((group.rows[best], group.size),))
  return Pruned(
      complete=tuple(group.rows[i] for i in order
                     if group.status[i] == "complete"),
      truncated=tuple(group.rows[i] for i in order
                      if group.status[i] != "complete"))


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class DvtsConfig(WidthConfig):
  """DVTS: N/M subtrees of M rows (`beam_width` is M), each following its
  best child."""
  strategy = "dvts"

  def group_size(self, budget: int) -> int:
    return self.width(budget)

  def prune(self, group: Group, budget: int) -> Pruned:
    del budget
    return follow_best(group)
