"""Bootstrap confidence intervals and log-budget curve helpers.

Every accuracy in the study is a weighted mean of per-problem 0/1
correctness, and every one is computed for a stack of *weight rows* over the
problems: row 0 is all ones (the point estimate) and rows 1..B are bootstrap
resamples (multinomial counts: problems drawn with replacement). Computing all
quantities with the same rows pairs them: a difference or a ratio of two
accuracies gets its interval from the same resampled problems, and a
selection (compute-optimal choice) is redone inside every resample.

Intervals are percentile intervals of rows 1..B, ignoring NaN rows (a resample
that drew no problem of a small bin).

Budgets are positive; curves over budgets are interpolated linearly in
`log(budget)`, never extrapolated: outside the measured range the value is NaN.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def bootstrap_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
  """Weight rows `[1 + n_resamples, n]`: ones, then resample counts.

  Args:
    n: problems.
    n_resamples: bootstrap resamples B (0: the point estimate only).
    seed: numpy seed; same seed, same rows.

  Returns:
    float64 array; row 0 is all ones, each later row sums to `n`.
  """
  if n < 1:
    raise ValueError(f"bootstrap_weights needs n >= 1 problems, got {n}")
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
  return np.concatenate([np.ones((1, n)), counts.astype(np.float64)])


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Per-row weighted mean; NaN for a row whose weights sum to 0.

  Args:
    weights: `[rows, n]`.
    values: `[n]` or `[n, k]`.

  Returns:
    `[rows]` or `[rows, k]`.
  """
  weights = np.asarray(weights, np.float64)
  values = np.asarray(values, np.float64)
  total = weights.sum(axis=1)
  num = weights @ values
  with np.errstate(invalid="ignore", divide="ignore"):
    if values.ndim == 1:
      return np.where(total > 0, num / np.where(total > 0, total, 1), np.nan)
    safe = np.where(total > 0, total, 1)[:, None]
    return np.where(total[:, None] > 0, num / safe, np.nan)


def summarize(rows: np.ndarray, level: float = 0.95) -> dict[str, Any]:
  """Point estimate (row 0) and percentile interval of rows 1..B.

  Args:
    rows: `[1 + B]` values.
    level: interval coverage, e.g. 0.95.

  Returns:
    `{"value", "ci_low", "ci_high"}`; the bounds are None without finite
    resamples, the value None when NaN.
  """
  rows = np.asarray(rows, np.float64)
  value = float(rows[0]) if np.isfinite(rows[0]) else None
  boot = rows[1:][np.isfinite(rows[1:])]
  if boot.size == 0:
    return {"value": value, "ci_low": None, "ci_high": None}
  alpha = (1.0 - level) / 2.0
  low, high = np.quantile(boot, [alpha, 1.0 - alpha])
  return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def _log_budgets(budgets: Sequence[float]) -> np.ndarray:
  budgets = np.asarray(budgets, np.float64)
  if budgets.ndim != 1 or budgets.size == 0 or np.any(budgets <= 0):
    raise ValueError(f"budgets must be a non-empty list of positive numbers, "
                     f"got {budgets.tolist()}")
  if np.any(np.diff(budgets) <= 0):
    raise ValueError(f"budgets must increase strictly, got {budgets.tolist()}")
  return np.log(budgets)


def log_interp(budgets: Sequence[float], curves: np.ndarray,
               x: float) -> np.ndarray:
  """Values of curves at budget `x`, linear in log-budget, NaN outside.

  Args:
    budgets: `[k]` increasing positive budgets.
    curves: `[rows, k]` values at those budgets.
    x: the budget to read.

  Returns:
    `[rows]`: exact at a measured budget; NaN when `x` is outside
    `[budgets[0], budgets[-1]]`.
  """
  logs = _log_budgets(budgets)
  curves = np.atleast_2d(np.asarray(curves, np.float64))
  if x <= 0:
    return np.full(curves.shape[0], np.nan)
  lx = np.log(x)
  if lx < logs[0] - 1e-12 or lx > logs[-1] + 1e-12:
    return np.full(curves.shape[0], np.nan)
  hi = int(np.clip(np.searchsorted(logs, lx), 0, logs.size - 1))
  if abs(logs[hi] - lx) <= 1e-12 or hi == 0:
    return curves[:, hi].copy()
  lo = hi - 1
  frac = (lx - logs[lo]) / (logs[hi] - logs[lo])
  return curves[:, lo] + frac * (curves[:, hi] - curves[:, lo])


def floor_index(budgets: Sequence[float], x: float) -> int | None:
  """Index of the largest measured budget <= x (None if x is below all)."""
  budgets = np.asarray(budgets, np.float64)
  below = np.nonzero(budgets <= x * (1 + 1e-12))[0]
  return int(below[-1]) if below.size else None


def first_reach(budgets: Sequence[float], curves: np.ndarray,
                targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Smallest budget at which each curve reaches its target.

  The curve is scanned from the smallest budget; the first measured budget
  whose value is >= the target ends the scan and the crossing is placed by
  linear interpolation in log-budget between it and the previous budget.
  Nothing is extrapolated: a curve already at the target at its smallest
  budget gives that budget (an upper bound on the true crossing), one that
  never reaches it gives +inf.

  Args:
    budgets: `[k]` increasing positive budgets.
    curves: `[rows, k]`.
    targets: `[rows]` (NaN target: NaN result).

  Returns:
    `(budget [rows], status [rows])`, status 0 = interpolated crossing,
    1 = reached at the smallest budget, 2 = never reached, 3 = NaN input.
  """
  logs = _log_budgets(budgets)
  curves = np.atleast_2d(np.asarray(curves, np.float64))
  targets = np.asarray(targets, np.float64).reshape(-1)
  reached = np.nan_to_num(curves, nan=-np.inf) >= targets[:, None]
  first = reached.argmax(axis=1)
  any_reached = reached.any(axis=1)
  rows = np.arange(curves.shape[0])
  prev = np.maximum(first - 1, 0)
  v0, v1 = curves[rows, prev], curves[rows, first]
  with np.errstate(invalid="ignore", divide="ignore"):
    frac = np.where(v1 > v0, (targets - v0) / (v1 - v0), 1.0)
  frac = np.clip(frac, 0.0, 1.0)
  log_b = logs[prev] + frac * (logs[first] - logs[prev])
  out = np.where(first == 0, np.exp(logs[0]), np.exp(log_b))
  status = np.where(first == 0, 1, 0)
  out = np.where(any_reached, out, np.inf)
  status = np.where(any_reached, status, 2)
  bad = ~np.isfinite(targets) | (any_reached & ~np.isfinite(v0) & (first > 0))
  out = np.where(bad, np.nan, out)
  status = np.where(bad, 3, status)
  return out, status
