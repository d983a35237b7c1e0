"""Verifiers: PRM/ORM step scoring in one forward pass, step aggregation."""

from ttcjax.verifiers.scoring import (AGGREGATIONS, ScoreFn, aggregate,
                                      reward_head_score_fn, step_scores,
                                      step_tag_score_fn)

__all__ = [
    "AGGREGATIONS", "ScoreFn", "aggregate", "reward_head_score_fn",
    "step_scores", "step_tag_score_fn",
]
