"""PRM beam search (Snell et al. 2024, Sec. 5).

Beam search with budget N and beam width M: sample N first steps (one
prefill per problem, fanned out), score them with the PRM, keep the best N/M,
expand each into M next steps, and repeat for up to `max_rounds` rounds.
Beams that end (EOS or a final-answer step) leave the pool and are kept;
the search stops once N have ended (if more end in the same round, the
best-valued fill the N): the paper's "N final answer candidates". The
answer is chosen among the ended beams with `selection` (weighted best-of-N
in the paper).

Where the paper is silent, this follows huggingface/search-and-learn
(`recipes/.../beam_search.py`):

* **Refill to N.** When fewer than N/M beams continue (the others ended or
  were cut), the survivors are expanded until the pool has N rows again,
  as evenly as possible (the best-valued get the extra children), instead
  of M each; search-and-learn repeats its active beams to N the same way.
* **The last round runs to EOS.** In round `max_rounds` every live beam
  decodes the rest of its solution (`tree.py`), so beams alive at the
  round limit end and can be chosen.

One argued difference: a beam cut by the token cap or the cache's end
leaves as an *unfinished* candidate, counted in `SearchResult` and the
study's cut rate but never chosen, where search-and-learn marks a
"length" stop completed. A cut beam never wrote its final answer (with
`stop_at_answer` the answer step ends a beam), so choosing it could only
pick a solution without an answer; counting it keeps the loss visible
(tests/search/test_search.py, `test_candidates_cut_by_max_gen_end_unfinished`)."""

from __future__ import annotations

import dataclasses

from ttcjax.search.strategy import register
from ttcjax.search.tree import Group, Pruned, WidthConfig


def refill(count: int, size: int) -> list[int]:
  """Children of each of `count` survivors (best first) so that they fill
  `size` rows: `size // count` each, the first `size % count` one more."""
  if count <= 0:
    return []
  return [size // count + (i < size % count) for i in range(count)]


def keep_best(group: Group, keep: int) -> Pruned:
  """Beam search's rule: completed rows leave (the best, up to N found in
  all), cut rows leave, and the best `keep` continuing rows survive, their
  children refilling all `size` rows of the group (`refill`; M each when
  `keep` continue)."""
  rows = group.rows
  complete = group.order(group.where("complete"))[:group.budget -
                                                  group.finished]
  kept = group.order(group.where("step"))[:keep]
  return Pruned(complete=tuple(rows[i] for i in complete),
                truncated=tuple(rows[i] for i in group.where("truncated")),
                children=tuple(zip((rows[i] for i in kept),
                                   refill(len(kept), group.size))))


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class BeamConfig(WidthConfig):
  """PRM beam search: N beams, the best N/M kept, M children each
  (`beam_width` is M)."""
  strategy = "beam"

  def prune(self, group: Group, budget: int) -> Pruned:
    return keep_best(group, budget // self.width(budget))
