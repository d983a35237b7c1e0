"""Diverse verifier tree search (DVTS; Beeching et al. 2024).

The N beams of a problem are split into N/M independent subtrees of M rows.
Each subtree greedily follows its best child: every round it samples M next
steps from its current beam, keeps the highest-valued one and expands it M
times again. A subtree ends when its best child has ended (EOS or a
final-answer step) or was cut; the subtree then contributes that one
candidate. Subtrees still going after `max_rounds` contribute unfinished
candidates, which are never chosen as answers. The answer is chosen among
the N/M subtree results with `selection`.
"""

from __future__ import annotations

import dataclasses

from ttcjax.search.strategy import register
from ttcjax.search.tree import Group, Pruned, WidthConfig


def follow_best(group: Group) -> Pruned:
  """DVTS's rule: the group's best child (cut rows last) wins; if it has
  ended, it is the group's one candidate and the group ends, else it is
  expanded into the whole group."""
  best = min(range(len(group.rows)), key=lambda i: (
      group.status[i] == "truncated", -group.value[i], group.rows[i]))
  row = group.rows[best]
  if group.status[best] == "complete":
    return Pruned(complete=(row,))
  if group.status[best] == "truncated":
    return Pruned(truncated=(row,))
  return Pruned(children=((row, group.size),))


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
