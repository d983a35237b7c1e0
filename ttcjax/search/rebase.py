"""REBASE, reward-balanced search (Wu et al. 2024, "Inference Scaling
Laws", Sec. 4).

Like beam search, a problem's N rows sample first steps from one prefill and
are valued by the PRM every round, completed candidates (EOS or a
final-answer step) leave the pool and cut ones leave unfinished. Unlike beam
search, no fixed number of beams survives: the width still to spend,
B = N - (candidates completed so far), is shared among the continuing rows
by a softmax of their values at temperature T,

    w_i = B * exp(v_i / T) / sum_j exp(v_j / T),

and row i is expanded into round(w_i) children, so high-valued steps are
explored more and low-valued ones may get none. The rounding here is by
largest remainder (ties: higher value, then lower row), so the children sum
to exactly B and the budget is neither over- nor under-spent. A small T
approaches greedy search from the best step; a large T spreads the width
evenly. The answer is chosen among the completed candidates with
`selection`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ttcjax.search.strategy import register
from ttcjax.search.tree import Group, Pruned, TreeConfig


def widths(values, total: int, temperature: float) -> np.ndarray:
  """`[k] int` children per row: `total` shared by a softmax of `values`
  at `temperature`, rounded by largest remainder (sum exactly `total`)."""
  values = np.asarray(values, np.float64)
  if not len(values) or total <= 0:
    return np.zeros(len(values), np.int64)
  logits = values / temperature
  weights = np.exp(logits - logits.max())
  share = total * weights / weights.sum()
  out = np.floor(share).astype(np.int64)
  order = sorted(range(len(values)),
                 key=lambda i: (-(share[i] - out[i]), -values[i], i))
  out[order[:total - int(out.sum())]] += 1
  return out


def balance(group: Group, temperature: float) -> Pruned:
  """REBASE's rule: completed and cut rows leave; the width left,
  N - completed, is shared among continuing rows (`widths`)."""
  rows = group.rows
  complete = group.order(group.where("complete"))[:group.budget -
                                                  group.finished]
  going = group.order(group.where("step"))
  left = group.budget - group.finished - len(complete)
  counts = widths([group.value[i] for i in going], left, temperature)
  return Pruned(complete=tuple(rows[i] for i in complete),
                truncated=tuple(rows[i] for i in group.where("truncated")),
                children=tuple((rows[i], int(c))
                               for i, c in zip(going, counts) if c))


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class RebaseConfig(TreeConfig):
  """REBASE: each continuing row's children allotted by a softmax of PRM
  values.

  Attributes:
    temperature: T of the softmax over values (> 0).
  """
  strategy = "rebase"
  temperature: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    if not self.temperature > 0:
      raise ValueError(f"{self._where('temperature')} must be > 0, got "
                       f"{self.temperature!r}")

  def identity(self, budget: int) -> dict[str, Any]:
    return {**super().identity(budget), "temperature": self.temperature}

  def prune(self, group: Group, budget: int) -> Pruned:
    del budget
    return balance(group, self.temperature)
