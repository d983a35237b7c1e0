"""Verifiers: PRM/ORM step scoring in one forward pass, step aggregation,
input layouts of public PRMs (`prm_inputs`), Monte-Carlo step labels
(`labeling`), revision/ORM data (`revision_data`)."""

from ttcjax.verifiers.scoring import (AGGREGATIONS, ScoreFn, aggregate,
                                      chunked_score_fn, reward_head_score_fn,
                                      reward_probs, step_scores,
                                      step_tag_probs, step_tag_score_fn)
from ttcjax.verifiers import labeling, prm_inputs, revision_data

__all__ = [
    "AGGREGATIONS", "ScoreFn", "aggregate", "chunked_score_fn", "labeling",
    "prm_inputs",
    "revision_data", "reward_head_score_fn", "reward_probs", "step_scores",
    "step_tag_probs", "step_tag_score_fn",
]
