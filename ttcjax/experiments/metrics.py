"""Metrics of step scores shared by the embedded study's stages: ROC AUC,
and how well step scores rank a task's ideal step values.

`mc_labels` (`ttcjax.experiments.embedded`) measures its Monte-Carlo labels
with `value_metrics`, and `eval_prm` (`ttcjax.experiments.evaluate`, which
re-exports these) measures the PRM's scores with it; this module imports
neither.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
  """Exact ROC AUC (Mann-Whitney U), ties counting one half.

  Args:
    scores: `[n]` higher means "more likely positive".
    labels: `[n]` bool, True for positives.

  Returns:
    P(score of a random positive > that of a random negative) + 0.5 P(tie);
    nan without both classes.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f"roc_auc: scores {scores.shape} and labels "
                     f"{labels.shape} must be equal 1-D shapes")
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  _, inverse, counts = np.unique(scores, return_inverse=True,
                                 return_counts=True)
  ends = np.cumsum(counts)  # 1-based rank of each value group's last member
  ranks = (ends - (counts - 1) / 2.0)[inverse]  # average rank within ties
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def finite(value):
  """NaN (no sample of a class, an empty bin) as None, for strict JSON."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: finite(v) for k, v in value.items()}
  if isinstance(value, list):
    return [finite(v) for v in value]
  return value


def ideal_values(task) -> Any:
  """The task's ideal value function `(problem, text) -> [bool] a step`
  (can the target still be reached after the step?), or None when it has
  none (arithmetic, MATH)."""
  return getattr(task, "reachable_after_steps", None)


def value_metrics(values: Sequence[Sequence[bool]],
                  step_scores: Sequence[Sequence[float]]) -> dict:
  """How well per-step scores rank the ideal step values.

  Args:
    values: per solution, the ideal value of each step (`ideal_values`).
    step_scores: per solution, a score per step (PRM scores or MC labels).

  Returns:
    `value_auc` over the steps before the last (where a value differs from
    the solution's correctness), `value_auc_all` over every step, the step
    counts, and `misaligned`: solutions whose step counts differ (left out).
    An AUC without both classes is None.
  """
  inner, every, misaligned = ([], []), ([], []), 0
  for v, sc in zip(values, step_scores):
    if len(v) != len(sc):
      misaligned += 1
      continue
    for i, (ok, x) in enumerate(zip(v, sc)):
      every[0].append(x)
      every[1].append(ok)
      if i < len(v) - 1:
        inner[0].append(x)
        inner[1].append(ok)
  auc = lambda xy: finite(roc_auc(*xy)) if xy[0] else None
  return {"value_auc": auc(inner), "value_auc_all": auc(every),
          "value_steps": len(inner[0]),
          "value_steps_reachable": int(sum(inner[1])),
          "misaligned": misaligned}
