"""How well a verifier ranks candidates: ROC AUC across and within problems.

For a set of problems, each with S candidates (a verifier score and a 0/1
correctness each):

- *across* problems: the AUC of all candidates pooled, i.e. the chance that
  a random correct candidate scores above a random incorrect one (ties count
  half), from any problems. A verifier that only recognises easy problems
  scores well here.
- *within* a problem: the AUC of each problem's own candidates, averaged
  over the problems that have both a correct and an incorrect candidate.
  This is what best-of-N and search need: ranking the solutions of one
  question.

Both are computed for every weight row of `ttcjax.analysis.stats` (row 0
the point estimate, rows 1..B bootstrap resamples of problems; a problem
drawn twice counts its candidates twice), so intervals resample problems,
not candidates.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ttcjax.analysis import stats

_ROW_CHUNK = 32  # weight rows at a time (memory: rows x candidates)


def _problem_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """AUC of one problem's candidates (NaN without both classes)."""
  pos, neg = scores[labels], scores[~labels]
  if pos.size == 0 or neg.size == 0:
    return float("nan")
  greater = (pos[:, None] > neg[None, :]).sum()
  equal = (pos[:, None] == neg[None, :]).sum()
  return float((greater + 0.5 * equal) / (pos.size * neg.size))


def auc_rows(scores: Sequence[Sequence[float]],
             correct: Sequence[Sequence[bool]], weights: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, int]:
  """Across- and within-problem AUC for every weight row.

  Args:
    scores: per problem, its candidates' verifier scores.
    correct: per problem, its candidates' correctness (same lengths).
    weights: `[R, n_problems]` weight rows.

  Returns:
    `(across [R], within [R], both)`: NaN where a row has no correct or no
    incorrect candidate (across) or no problem with both (within); `both`
    is how many problems have both classes.
  """
  if len(scores) != len(correct) or len(scores) != weights.shape[1]:
    raise ValueError(f"auc_rows: {len(scores)} score lists, {len(correct)} "
                     f"correctness lists, weights for {weights.shape[1]} "
                     "problems")
  s_list, y_list, p_list = [], [], []
  within = np.full(len(scores), np.nan)
  for p, (s, y) in enumerate(zip(scores, correct)):
    s = np.asarray(s, np.float64).reshape(-1)
    y = np.asarray(y, bool).reshape(-1)
    if s.shape != y.shape:
      raise ValueError(f"auc_rows: problem {p} has {s.size} scores and "
                       f"{y.size} correctness values")
    within[p] = _problem_auc(s, y)
    s_list.append(s)
    y_list.append(y)
    p_list.append(np.full(s.size, p))
  s, y, prob = (np.concatenate(s_list), np.concatenate(y_list),
                np.concatenate(p_list))
  order = np.argsort(s, kind="stable")
  s, y, prob = s[order], y[order], prob[order]
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups
  across = np.empty(weights.shape[0])
  for start in range(0, weights.shape[0], _ROW_CHUNK):
    w = weights[start:start + _ROW_CHUNK][:, prob]  # [r, candidates]
    w_pos = np.add.reduceat(w * y, starts, axis=1)  # [r, levels]
    w_neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg
    num = (w_pos * (below + 0.5 * w_neg)).sum(axis=1)
    den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      across[start:start + _ROW_CHUNK] = np.where(den > 0, num / den, np.nan)
  valid = np.isfinite(within)
  within_rows = stats.weighted_mean(weights[:, valid], within[valid]) if (
      valid.any()) else np.full(weights.shape[0], np.nan)
  return across, within_rows, int(valid.sum())


def quality(uids: Sequence[str], scores: Mapping[str, Sequence[float]],
            correct: Mapping[str, Sequence[bool]], weights: np.ndarray,
            bin_cols: Mapping[str, Mapping[int, np.ndarray]],
            level: float = 0.95) -> dict[str, Any]:
  """A verifier's AUCs over all problems and per bin, with intervals.

  Args:
    uids: the study's problems, in the column order of `weights`.
    scores: uid -> candidate scores (every uid).
    correct: uid -> candidate correctness.
    weights: `[R, len(uids)]` weight rows.
    bin_cols: kind -> bin -> problem columns.
    level: interval coverage.

  Returns:
    `{n_problems, n_candidates, correct_rate, across: acc, within: acc,
    within_problems, bins: {kind: {bin: {across, within, within_problems}}}}`
    (an "acc" is `stats.summarize`'s dict).
  """
  missing = [u for u in uids if u not in scores or u not in correct]
  if missing:
    raise ValueError(f"verifier samples lack {len(missing)} problems, e.g. "
                     f"{missing[:3]}")
  s = [scores[u] for u in uids]
  y = [correct[u] for u in uids]

  def one(cols):
    if len(cols) == 0:
      empty = stats.summarize(np.full(weights.shape[0], np.nan), level)
      return {"across": empty, "within": dict(empty), "within_problems": 0}
    across, within, both = auc_rows([s[i] for i in cols],
                                    [y[i] for i in cols], weights[:, cols])
    return {"across": stats.summarize(across, level),
            "within": stats.summarize(within, level),
            "within_problems": both}

  out = one(np.arange(len(uids)))
  flat = np.concatenate([np.asarray(v, bool).reshape(-1) for v in y])
  out.update(n_problems=len(uids), n_candidates=int(flat.size),
             correct_rate=float(flat.mean()) if flat.size else None,
             bins={kind: {b: one(cols) for b, cols in sorted(by_bin.items())}
                   for kind, by_bin in bin_cols.items()})
  return out
