"""Choosing a final answer among candidates: plain, weighted, majority.

Only finished candidates with an answer take part. Answers are grouped into
equivalence classes with the task's `equiv_fn` (each answer joins the first
earlier class whose first answer it is equivalent to), then

* 'plain': the single highest-scoring candidate (Snell et al.'s best-of-N);
* 'weighted': the class with the largest sum of candidate scores (the
  paper's "best-of-N weighted", its choice for every search);
* 'majority': the class with the most members.

Ties go to the candidate (or class) that appears first, so a choice never
depends on anything but the order and content of the candidate list.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ttcjax.search.base import SELECTIONS, Candidate


def group_answers(answers: Sequence[str | None],
                  equiv_fn: Callable[[str, str], bool]) -> np.ndarray:
  """Class id of each answer (ids in order of first appearance; -1: None)."""
  heads: list[str] = []
  ids = np.full(len(answers), -1, np.int64)
  for i, answer in enumerate(answers):
    if answer is None:
      continue
    for c, head in enumerate(heads):
      if answer == head or equiv_fn(answer, head):
        ids[i] = c
        break
    else:
      ids[i] = len(heads)
      heads.append(answer)
  return ids


def choose(class_ids: np.ndarray, scores: np.ndarray, valid: np.ndarray,
           how: str) -> int:
  """Index of the chosen candidate, or -1 when none is valid.

  Args:
    class_ids: `[n]` equivalence class per candidate (from `group_answers`).
    scores: `[n]` candidate scores.
    valid: `[n] bool` candidates that may be chosen.
    how: 'plain', 'weighted' or 'majority'.

  Returns:
    For 'plain' the best valid candidate; otherwise the first valid member of
    the winning class.
  """
  if how not in SELECTIONS:
    raise ValueError(f"selection must be one of {SELECTIONS}, got {how!r}")
  valid = np.asarray(valid, bool) & (np.asarray(class_ids) >= 0)
  if not valid.any():
    return -1
  scores = np.asarray(scores, np.float64)
  if how == "plain":
    return int(np.argmax(np.where(valid, scores, -np.inf)))
  weights = scores if how == "weighted" else np.ones_like(scores)
  idx = np.flatnonzero(valid)
  cls = np.asarray(class_ids)[idx]
  totals = np.bincount(cls, weights=weights[idx])
  first = np.full(totals.shape, len(class_ids))
  np.minimum.at(first, cls, idx)
  present = np.bincount(cls) > 0
  best = np.max(totals[present])
  winners = present & (totals == best)
  return int(np.min(first[winners]))


def select(candidates: Sequence[Candidate], how: str,
           equiv_fn: Callable[[str, str], bool]) -> int:
  """Index of the chosen candidate (-1: no finished candidate has an answer).
  """
  answers = [c.answer for c in candidates]
  valid = np.array([c.finished and c.answer is not None for c in candidates],
                   bool)
  scores = np.array([c.score for c in candidates], np.float64)
  return choose(group_answers(answers, equiv_fn), scores, valid, how)
