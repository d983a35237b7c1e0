"""FLOPs-matched comparison: a small model with test-time compute against a
~14x larger model answering greedily (Snell et al. 2024, Sec. 7, Fig. 9).

Pretraining plus inference FLOPs are matched with the paper's coarse
convention (`ttcjax.analysis.flops.flops_matched_budget`, `2 N D` inference by
default):

  6 N_s D_pre + 2 N_s D_inf X = 6 N_l D_pre + 2 N_l D_inf,

so with `M = N_l / N_s` and `R = D_inf / D_pre` the small model may spend
`X = M + 3 (M - 1) / R` generations per question where the large model
spends one. The paper's R values are 0.16, 0.79 and 22 (few, moderate and
many inference tokens per pretraining token).

The small model's accuracy at X is read from its accuracy-vs-budget curve
(budgets in generations) in one of two ways:

- `'interpolate'` (default): linear in log-budget between the two measured
  budgets around X; None when X is outside the measured range (reported as
  'beyond_measured' / 'below_measured', never extrapolated);
- `'floor'`: the accuracy at the largest measured budget <= X, i.e. spending
  no more than the FLOPs allow (conservative when accuracy rises with
  budget).

Both readings are kept in the output; `mode` says which one the comparison
(small minus large, with a paired bootstrap interval) uses.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ttcjax.analysis import flops, stats

PAPER_RATIOS = (0.16, 0.79, 22.0)
MODES = ("interpolate", "floor")


def matched_budgets(n_small: float, n_large: float, d_pretrain: float,
                    ratios: Sequence[float] = PAPER_RATIOS,
                    convention: str = "2nd") -> dict[str, Any]:
  """The test-time budget X that FLOPs-matches the large model, per R.

  Args:
    n_small: parameters of the small (policy) model N_s.
    n_large: parameters of the large model N_l.
    d_pretrain: pretraining tokens D_pre.
    ratios: R = D_inf / D_pre values.
    convention: '2nd' or '4nd' (see `ttcjax.analysis.flops.inference_flops`).

  Returns:
    `{"n_small", "n_large", "size_ratio", "d_pretrain", "convention",
    "by_ratio": [{"R", "d_inference", "budget"}]}`.
  """
  out = []
  for r in ratios:
    d_inference = float(r) * float(d_pretrain)
    x = flops.flops_matched_budget(n_small, n_large, d_pretrain, d_inference,
                                   convention)
    out.append({"R": float(r), "d_inference": d_inference, "budget": x})
  return {"n_small": float(n_small), "n_large": float(n_large),
          "size_ratio": float(n_large) / float(n_small),
          "d_pretrain": float(d_pretrain), "convention": convention,
          "by_ratio": out}


def read_at(budgets: np.ndarray, rows: np.ndarray, x: float, mode: str
            ) -> tuple[np.ndarray, dict[str, Any]]:
  """A curve's rows at budget x.

  Args:
    budgets: `[k]` measured budgets.
    rows: `[R, k]`.
    x: the matched budget.
    mode: 'interpolate' or 'floor' (module docstring).

  Returns:
    `(values [R] (NaN when unreadable), {"status", "budget_used"})`.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  nan = np.full(rows.shape[0], np.nan)
  if budgets.size == 0:
    return nan, {"status": "no_curve", "budget_used": None}
  if mode == "floor":
    i = stats.floor_index(budgets, x)
    if i is None:
      return nan, {"status": "below_measured", "budget_used": None}
    return rows[:, i].copy(), {"status": "floor",
                               "budget_used": float(budgets[i])}
  if x > budgets[-1] * (1 + 1e-12):
    return nan, {"status": "beyond_measured", "budget_used": None}
  if x < budgets[0] * (1 - 1e-12):
    return nan, {"status": "below_measured", "budget_used": None}
  return stats.log_interp(budgets, rows, x), {"status": "interpolated",
                                              "budget_used": float(x)}


def compare(budgets: np.ndarray, small_rows: Mapping[str, np.ndarray],
            large_rows: Mapping[str, np.ndarray], x: float,
            mode: str = "interpolate", level: float = 0.95
            ) -> dict[str, dict[str, Any]]:
  """Small model at budget x against the large model, per group (bin).

  Args:
    budgets: `[k]` budgets of the small model's curve.
    small_rows: group -> `[R, k]` accuracy rows of the small model.
    large_rows: group -> `[R]` greedy accuracy rows of the large model (same
      weight rows, so differences are paired).
    x: the matched budget.
    mode: which reading the difference uses.
    level: interval coverage.

  Returns:
    group -> `{"small", "small_interpolated", "small_floor",
    "floor_budget", "status", "large", "difference"}`; accuracies as
    `stats.summarize` dicts (None when unreadable).
  """
  out = {}
  for group in sorted(small_rows):
    readings = {m: read_at(budgets, small_rows[group], x, m) for m in MODES}
    large = large_rows[group]

    def summ(values):
      return stats.summarize(values, level) if np.isfinite(values[0]) else None

    small, info = readings[mode]
    out[group] = {
        "small": summ(small), "status": info["status"],
        "small_interpolated": summ(readings["interpolate"][0]),
        "small_floor": summ(readings["floor"][0]),
        "floor_budget": readings["floor"][1]["budget_used"],
        "large": summ(large),
        "difference": summ(small - large),
    }
  return out
