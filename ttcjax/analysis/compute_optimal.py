"""Compute-optimal choice of method per difficulty bin and budget.

A *method* is a strategy plus its hyper-parameters (beam search with M = 4,
lookahead with k = 3, revisions with L sequential attempts per chain, each
with its answer selection), identified across budgets: hparams that only
restate the budget (`chains`, `ratio` of revisions: P = N / L) are dropped
from the identity. A *cell* is one method at one budget over every problem.

Budgets are in generations by default (the record's `generations`: N, or
N * (k + 1) for lookahead), as in Snell et al. 2024, Sec. 5.

Compute-optimal (Snell et al. 2024, Sec. 3.2, Eq. 1) picks, per bin and
budget, the cell with the best accuracy, and is scored with 2-fold
cross-validation inside each bin: the bin's problems are split into two
folds (`cv_folds`: by SHA-256 of `seed:uid`, alternating in that order, so
folds are balanced and do not depend on numpy), the method is chosen on one
fold and scored on the other, and vice versa. The bin's accuracy is the mean
held-out correctness over all its problems (the size-weighted average of the
two fold scores). Ties go to the cheaper cell (lower budget), then to the
family's baseline, then to the method id that sorts first: a tie (e.g. two
methods at 0% in a hard bin) never credits compute-optimal with a win the
baseline did not lose. The selection is redone inside every bootstrap resample (see
`ttcjax.analysis.stats`), so intervals include selection noise.

Candidates at budget B are the family's cells costing exactly B (`pool =
'equal'`, the paper's choice among hyper-parameters at one budget) or at
most B (`'at_most'`: spending less is allowed too, so the in-sample curve
never falls as B grows).

A family's pool is a list of method specs (`in_pool`): a strategy name (all
its methods) or `{'strategy', 'hparams'}` (the methods whose identity
hparams contain those items), e.g. only best-of-N with weighted selection.

Each cell also carries how many of its candidates ended unfinished (cut by
the token cap, the cache's end or the round limit; records' per-candidate
`finished`) and how many of its problems got no answer at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ttcjax.analysis import stats

BUDGET_DEPENDENT_HPARAMS = ("chains", "ratio")
BUDGET_FIELDS = ("generations", "budget")
POOLS = ("equal", "at_most")
COST_FIELDS = {  # summary name -> record fields tried in order
    "generations": ("generations", "generations_used"),
    "policy_tokens": ("policy_tokens", "policy_tokens_generated"),
    "prompt_tokens": ("prompt_tokens", "prompt_tokens_prefilled"),
    "verifier_tokens": ("verifier_tokens", "verifier_tokens_read"),
    "policy_flops": ("policy_flops", "flops_policy"),
    "verifier_flops": ("verifier_flops", "flops_verifier"),
}
_SHORT = {"beam_width": "M", "lookahead": "k", "revision_length": "L",
          "aggregation": "agg", "revision_context": "ctx",
          "max_rounds": "rounds"}
_NAMES = {"best_of_n": "best-of-N", "beam": "beam", "lookahead": "lookahead",
          "dvts": "DVTS", "revisions": "revisions"}


def method_id(strategy: str, hparams: Mapping[str, Any],
              drop: Sequence[str] = BUDGET_DEPENDENT_HPARAMS) -> str:
  """`strategy` + its hparams (minus budget-dependent ones) as sorted JSON."""
  kept = {k: v for k, v in dict(hparams).items() if k not in drop}
  return strategy + json.dumps(kept, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class Cell:
  """One method at one budget.

  Attributes:
    method: `method_id`.
    strategy: strategy name.
    hparams: identity hparams (budget-dependent ones dropped).
    budget: x coordinate (generations by default).
    budget_n: the records' budget N.
    correct: `[n_problems]` float 0/1, in the study's uid order.
    cost: per-problem means of `COST_FIELDS` (None where records lack one)
      and `flops` (policy + verifier).
    unfinished: `{'candidates', 'unfinished', 'rate', 'by_reason',
      'no_answer_rate'}`: candidates over all problems, how many ended
      unfinished, their fraction, how many per `search.base.CUT_REASONS`
      reason (None without per-candidate records; 'unknown' for records
      that predate reasons), and the fraction of problems whose record has
      no answer.
  """
  method: str
  strategy: str
  hparams: dict[str, Any]
  budget: float
  budget_n: int
  correct: np.ndarray
  cost: dict[str, float | None]
  unfinished: dict[str, Any] = dataclasses.field(default_factory=dict)


def _field(record: Mapping[str, Any], names: Sequence[str]) -> Any:
  for name in names:
    if record.get(name) is not None:
      return record[name]
  return None


def build_cells(records: Iterable[Mapping[str, Any]], uids: Sequence[str], *,
                budget_field: str = "generations",
                drop: Sequence[str] = BUDGET_DEPENDENT_HPARAMS
                ) -> tuple[list[Cell], dict[str, Any]]:
  """Groups records into cells covering every problem of `uids`.

  Args:
    records: search record dicts (uid, strategy, hparams, budget, correct,
      generations, token counts, FLOPs).
    uids: the study's problems, in order.
    budget_field: 'generations' (x = generations used) or 'budget' (x = N).
    drop: hparams left out of the method identity.

  Returns:
    `(cells, info)`: complete cells sorted by (method, budget); info counts
    records used / outside `uids` and lists incomplete cells (left out).
  """
  if budget_field not in BUDGET_FIELDS:
    raise ValueError(f"budget_field must be one of {BUDGET_FIELDS}, got "
                     f"{budget_field!r}")
  index = {u: i for i, u in enumerate(uids)}
  groups: dict[tuple[str, int], dict[str, Any]] = {}
  outside = 0
  for r in records:
    missing = [k for k in ("uid", "strategy", "budget", "correct")
               if k not in r]
    if missing:
      raise ValueError(f"record {dict(r).get('uid')!r} lacks {missing}: not "
                       "a graded search record (ttcjax.search.records)")
    uid = str(r["uid"])
    if uid not in index:
      outside += 1
      continue
    hp = {k: v for k, v in dict(r.get("hparams") or {}).items()
          if k not in drop}
    mid = method_id(r["strategy"], hp, ())
    g = groups.setdefault((mid, int(r["budget"])), {
        "strategy": r["strategy"], "hparams": hp, "rows": {}})
    correct = bool(r["correct"])
    if uid in g["rows"] and g["rows"][uid][0] != correct:
      raise ValueError(f"problem {uid!r} has records of {mid} N="
                       f"{r['budget']} that disagree on correctness")
    g["rows"].setdefault(uid, (correct, r))
  cells, incomplete = [], []
  for (mid, n_budget), g in sorted(groups.items()):
    if len(g["rows"]) < len(uids):
      incomplete.append({"method": mid, "budget_n": n_budget,
                         "problems": len(g["rows"]), "needed": len(uids)})
      continue
    correct = np.zeros(len(uids))
    cost_rows = {name: [] for name in COST_FIELDS}
    for uid, (ok, r) in g["rows"].items():
      correct[index[uid]] = float(ok)
      for name, fields in COST_FIELDS.items():
        cost_rows[name].append(_field(r, fields))
    cost = {name: (None if any(v is None for v in vals) else
                   float(np.mean(np.asarray(vals, np.float64))))
            for name, vals in cost_rows.items()}
    if cost["generations"] is None:
      cost["generations"] = float(n_budget)
    cost["flops"] = (None if cost["policy_flops"] is None else
                     cost["policy_flops"] + (cost["verifier_flops"] or 0.0))
    x = cost["generations"] if budget_field == "generations" else n_budget
    cells.append(Cell(mid, g["strategy"], g["hparams"], float(x), n_budget,
                      correct, cost, _unfinished(
                          [r for _, r in g["rows"].values()])))
  used = sum(len(g["rows"]) for g in groups.values())
  return cells, {"records_in_cells": used, "records_outside_problems": outside,
                 "incomplete_cells": incomplete}


def _unfinished(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  total = cut = 0
  known = True
  reasons: dict[str, int] = {}
  for r in rows:
    cands = r.get("candidates")
    if cands is None:
      known = False
      continue
    total += len(cands)
    for c in cands:
      if not bool(c.get("finished", True)):
        cut += 1
        # Records written before candidates carried a reason: 'unknown'.
        why = c.get("cut") or "unknown"
        reasons[why] = reasons.get(why, 0) + 1
  no_answer = sum(r.get("answer") is None for r in rows)
  return {"candidates": total if known else None,
          "unfinished": cut if known else None,
          "rate": (cut / total) if known and total else None,
          "by_reason": dict(sorted(reasons.items())) if known else None,
          "no_answer_rate": no_answer / len(rows) if rows else None}


def in_pool(cell: Cell, specs: Sequence[str | Mapping[str, Any]]) -> bool:
  """Whether a cell's method is in a pool of specs (a strategy name, or
  `{'strategy', 'hparams'}` as in `matches`)."""
  return any(cell.strategy == s if isinstance(s, str) else matches(cell, s)
             for s in specs)


def method_labels(cells: Sequence[Cell]) -> dict[str, str]:
  """Short readable names: strategy plus the hparams that vary within it
  (the selection is always shown)."""
  by_strategy: dict[str, dict[str, dict[str, Any]]] = {}
  for c in cells:
    by_strategy.setdefault(c.strategy, {})[c.method] = c.hparams
  labels = {}
  for strategy, methods in by_strategy.items():
    keys = sorted({k for hp in methods.values() for k in hp})
    varying = [k for k in keys
               if len({json.dumps(hp.get(k)) for hp in methods.values()}) > 1]
    for mid, hp in methods.items():
      parts = [_NAMES.get(strategy, strategy)]
      parts += [f"{_SHORT.get(k, k)}={hp.get(k)}" for k in varying
                if k != "selection"]
      if "selection" in hp:
        parts.append(str(hp["selection"]))
      labels[mid] = " ".join(parts)
  return labels


def matches(cell: Cell, spec: Mapping[str, Any]) -> bool:
  """Whether a cell's method fits `{'strategy': ..., 'hparams': {...}}`
  (hparams: items its identity hparams must contain)."""
  if cell.strategy != spec.get("strategy"):
    return False
  return all(cell.hparams.get(k) == v
             for k, v in dict(spec.get("hparams") or {}).items())


def find_method(cells: Sequence[Cell], spec: Mapping[str, Any]
                ) -> str | None:
  """The one method id matching `spec`; None if none; error if several."""
  found = sorted({c.method for c in cells if matches(c, spec)})
  if len(found) > 1:
    raise ValueError(f"baseline spec {dict(spec)} matches several methods "
                     f"{found}; add hparams to pick one")
  return found[0] if found else None


def curve(cells: Sequence[Cell], method: str, weights: np.ndarray,
          cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A method's accuracy rows over its budgets, on problems `cols`.

  Returns:
    `(budgets [k], rows [R, k])`.
  """
  mine = sorted((c for c in cells if c.method == method),
                key=lambda c: c.budget)
  budgets = np.array([c.budget for c in mine])
  if not mine:
    return budgets, np.zeros((weights.shape[0], 0))
  values = np.stack([c.correct[cols] for c in mine], axis=1)
  return budgets, stats.weighted_mean(weights[:, cols], values)


def cv_folds(uids: Sequence[str], seed: int) -> np.ndarray:
  """Fold (0/1) of each uid: alternate in the order of SHA-256(seed:uid)."""
  keys = [hashlib.sha256(f"{seed}:{u}".encode("utf-8")).hexdigest()
          for u in uids]
  folds = np.zeros(len(uids), dtype=int)
  for rank, i in enumerate(sorted(range(len(uids)), key=lambda i: keys[i])):
    folds[i] = rank % 2
  return folds


def cv_select(correct: np.ndarray, folds: np.ndarray, weights: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
  """2-fold cross-validated accuracy of choosing the best candidate.

  Args:
    correct: `[n, m]` 0/1 of each candidate on each problem; candidates in
      order of preference (ties go to the first).
    folds: `[n]` 0/1.
    weights: `[R, n]` weight rows.

  Returns:
    `(held_out [R], choice [R, 2])`: the weighted count of held-out correct
    answers, and the candidate applied to fold f (chosen on the other fold).
  """
  n_rows, m = weights.shape[0], correct.shape[1]
  held = np.zeros(n_rows)
  choice = np.zeros((n_rows, 2), dtype=int)
  for f in (0, 1):
    train, test = folds != f, folds == f
    acc = stats.weighted_mean(weights[:, train], correct[train])
    acc = np.nan_to_num(acc.reshape(n_rows, m), nan=-1.0)
    choice[:, f] = acc.argmax(axis=1)
    if test.any():
      picked = correct[test][:, choice[:, f]]  # [n_test, R]
      held += np.einsum("rn,nr->r", weights[:, test], picked)
  return held, choice


@dataclasses.dataclass(frozen=True)
class OptimalCurve:
  """Compute-optimal accuracy of one family under one binning.

  Attributes:
    budgets: `[k]` budgets.
    rows: `[R, k]` cross-validated accuracy over all problems.
    bin_rows: bin -> `[R, k]` cross-validated accuracy in that bin.
    in_sample: `[k]` accuracy when choosing on all of each bin (optimistic).
    choices: per budget index, bin -> dict of the fold choices, the
      full-bin choice and its in-sample accuracy.
  """
  budgets: np.ndarray
  rows: np.ndarray
  bin_rows: dict[int, np.ndarray]
  in_sample: np.ndarray
  choices: list[dict[int, dict[str, Any]]]


def compute_optimal(cells: Sequence[Cell], bins: Mapping[int, np.ndarray],
                    folds: Mapping[int, np.ndarray], weights: np.ndarray,
                    pool: str = "equal", baseline: str | None = None
                    ) -> OptimalCurve | None:
  """Cross-validated compute-optimal curve over the budgets of `cells`.

  Args:
    cells: the family's cells (all problems).
    bins: bin -> problem columns.
    folds: bin -> `[len(cols)]` folds.
    weights: `[R, n_problems]` weight rows.
    pool: 'equal' or 'at_most' (module docstring).
    baseline: the family's baseline method id; wins ties between cells of
      the same budget.

  Returns:
    An `OptimalCurve`, or None without cells.
  """
  if pool not in POOLS:
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
  if not cells:
    return None
  budgets = np.array(sorted({c.budget for c in cells}))
  n_rows = weights.shape[0]
  total = sum(weights[:, cols].sum(axis=1) for cols in bins.values())
  rows = np.zeros((n_rows, budgets.size))
  bin_rows = {b: np.zeros((n_rows, budgets.size)) for b in bins}
  in_sample = np.zeros(budgets.size)
  choices = []
  for j, budget in enumerate(budgets):
    pool_cells = sorted(
        (c for c in cells if (c.budget == budget if pool == "equal"
                              else c.budget <= budget)),
        key=lambda c: (c.budget, c.method != baseline, c.method))
    held_all, at_budget, best_all = np.zeros(n_rows), {}, 0.0
    for b, cols in sorted(bins.items()):
      values = np.stack([c.correct[cols] for c in pool_cells], axis=1)
      held, choice = cv_select(values, folds[b], weights[:, cols])
      held_all += held
      with np.errstate(invalid="ignore", divide="ignore"):
        bin_rows[b][:, j] = held / weights[:, cols].sum(axis=1)
      full = values.mean(axis=0)
      k = int(full.argmax())
      best_all += full[k] * len(cols)
      at_budget[b] = {
          "fold_choices": [pool_cells[i].method for i in choice[0]],
          "fold_budgets": [pool_cells[i].budget for i in choice[0]],
          "chosen": pool_cells[k].method, "chosen_budget": pool_cells[k].budget,
          "in_sample_accuracy": float(full[k])}
    rows[:, j] = held_all / total
    in_sample[j] = best_all / sum(len(c) for c in bins.values())
    choices.append(at_budget)
  return OptimalCurve(budgets, rows, bin_rows, in_sample, choices)


def efficiency(base_budgets: np.ndarray, base_rows: np.ndarray,
               opt_budgets: np.ndarray, opt_rows: np.ndarray,
               target: float, level: float = 0.95) -> dict[str, Any]:
  """Smallest budget at which the optimal curve matches the baseline at
  `target`, and the ratio target / that budget.

  The baseline's accuracy at `target` is read in log-budget (exact when
  measured; None outside its measured range). The crossing follows
  `stats.first_reach`, with no extrapolation.

  Returns:
    A dict: baseline accuracy, matched budget, status ('matched',
    'matched_at_smallest_budget': the optimal curve is already there at its
    smallest budget, so the ratio is a lower bound; 'not_matched': never
    within the measured budgets, the ratio is below `ratio_upper_bound`;
    'target_not_measured'), the ratio with a bootstrap interval (resamples
    that never match count as ratio 0) and the fraction of such resamples.
  """
  out = {"target_budget": float(target), "baseline_accuracy": None,
         "matched_budget": None, "status": "target_not_measured",
         "ratio": None, "ratio_ci_low": None, "ratio_ci_high": None,
         "ratio_upper_bound": None, "unmatched_resamples": None}
  if base_budgets.size == 0 or opt_budgets.size == 0:
    return out
  base = stats.log_interp(base_budgets, base_rows, target)
  if not np.isfinite(base[0]):
    return out
  out["baseline_accuracy"] = stats.summarize(base, level)
  matched, status = stats.first_reach(opt_budgets, opt_rows, base)
  names = {0: "matched", 1: "matched_at_smallest_budget", 2: "not_matched",
           3: "undefined"}
  out["status"] = names[int(status[0])]
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(np.isinf(matched), 0.0, target / matched)
  if np.isfinite(matched[0]):
    out["matched_budget"] = float(matched[0])
    out["ratio"] = float(ratio[0])
  else:
    out["ratio_upper_bound"] = float(target / opt_budgets[-1])
  summary = stats.summarize(ratio, level)
  out["ratio_ci_low"], out["ratio_ci_high"] = (summary["ci_low"],
                                               summary["ci_high"])
  boot = matched[1:]
  if boot.size:
    out["unmatched_resamples"] = float(np.mean(np.isinf(boot)))
  return out
