"""Lookahead search (Snell et al. 2024, Sec. 5).

Beam search whose step values come from rolling each candidate out k steps
at temperature 0 and reading the PRM at the roll-out's end (the roll-out is
undone by `stepping.rollout_and_rollback`); it costs N * (k + 1)
generations.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ttcjax.search.beam import BeamConfig
from ttcjax.search.strategy import register


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class LookaheadConfig(BeamConfig):
  """Beam search valued by k-step greedy roll-outs.

  Attributes:
    lookahead: k, greedy roll-out steps per candidate (0: beam search's
      values, at lookahead's key and cost).
  """
  strategy = "lookahead"
  lookahead: int = 0

  def __post_init__(self):
    super().__post_init__()
    if self.lookahead < 0:
      raise ValueError(f"{self._where('lookahead')} must be >= 0, got "
                       f"{self.lookahead}")

  def identity(self, budget: int) -> dict[str, Any]:
    return {**super().identity(budget), "lookahead": self.lookahead}

  def rollout_steps(self) -> int:
    return self.lookahead

  def generations(self, budget: int) -> int:
    return budget * (self.lookahead + 1)
