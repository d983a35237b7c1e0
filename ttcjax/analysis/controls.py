"""Controls of a study's claims: cut candidates, the headline's direction,
verifier quality, and the warnings that open the report.

- `unfinished`: per method, the candidates that ended unfinished (token
  cap, the tree cache's end, the round limit; never selected, so a problem
  whose candidates are all cut counts wrong) and the cells over
  `AnalysisConfig.cut_rate_threshold`.
- `direction`: the search baseline's accuracy change from its smallest to
  its largest budget, with a paired bootstrap interval; "shown" when the
  interval is above 0.
- `verifier`: ROC AUCs (`ttcjax.analysis.verifier_quality`) of the PRM on
  the difficulty samples and of the ORM on parallel revision attempts.
- `warnings`: lines the report and console start with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ttcjax.analysis import compute_optimal as co
from ttcjax.analysis import difficulty, stats, verifier_quality

RESULTS_POINTER = ("docs/results/arith_cpu/ (the full arithmetic study: a "
                   "negative control, its PRM does not rank one problem's "
                   "solutions; the oracle-verifier control does)")


def unfinished(cfg, cells, labels):
  """Per method, candidates cut (unfinished) over all its budgets, and the
  cells over `cut_rate_threshold`."""
  by_method: dict[str, dict[str, Any]] = {}
  over = []
  for c in cells:
    u = c.unfinished
    m = by_method.setdefault(c.method, {"label": labels[c.method],
                                        "candidates": 0, "unfinished": 0,
                                        "by_reason": {},
                                        "known": True, "max_rate": None})
    if u.get("candidates") is None:
      m["known"] = False
      continue
    m["candidates"] += u["candidates"]
    m["unfinished"] += u["unfinished"]
    for why, n in (u.get("by_reason") or {}).items():
      m["by_reason"][why] = m["by_reason"].get(why, 0) + n
    if u["rate"] is not None:
      m["max_rate"] = max(m["max_rate"] or 0.0, u["rate"])
      if u["rate"] > cfg.cut_rate_threshold:
        over.append({"method": c.method, "label": labels[c.method],
                     "budget": c.budget, "rate": u["rate"],
                     "by_reason": dict(u.get("by_reason") or {})})
  for m in by_method.values():
    m["rate"] = (m["unfinished"] / m["candidates"]
                 if m["known"] and m["candidates"] else None)
    m["by_reason"] = dict(sorted(m["by_reason"].items()))
    if not m.pop("known"):
      m["candidates"] = m["unfinished"] = m["by_reason"] = None
  return {"threshold": cfg.cut_rate_threshold, "by_method": by_method,
          "over_threshold": sorted(over, key=lambda o: (-o["rate"],
                                                        o["label"],
                                                        o["budget"]))}


def direction(cfg, cells, labels, weights):
  """Whether the search baseline (PRM-weighted best-of-N) gains from its
  smallest to its largest budget, with a paired bootstrap interval."""
  spec = cfg.baselines.get("search")
  base = co.find_method(cells, spec) if spec else None
  if base is None:
    return None
  budgets, rows = co.curve(cells, base, weights, np.arange(weights.shape[1]))
  if budgets.size < 2:
    return None
  gain = stats.summarize(rows[:, -1] - rows[:, 0], cfg.ci_level)
  shown = gain["ci_low"] is not None and gain["ci_low"] > 0
  return {"method": base, "label": labels[base], "from_budget": budgets[0],
          "to_budget": budgets[-1], "gain": gain, "shown": bool(shown)}


def warnings(cfg, cut, trend, oracle_cut=None) -> list[str]:
  """The report's first lines (module docstring)."""
  out = []
  if cfg.notice:
    out.append(cfg.notice)
  if trend is not None and not trend["shown"]:
    g = trend["gain"]
    out.append(
        f"The direction of the effect is not shown here: {trend['label']}"
        f" gains {_fmt_acc(g)} from {trend['from_budget']:g} to "
        f"{trend['to_budget']:g} generations (95% CI not above 0). See "
        f"the committed arith_cpu results in {RESULTS_POINTER}.")
  for what, u in (("", cut), ("oracle verifier: ", oracle_cut)):
    if u and u["over_threshold"]:
      worst = u["over_threshold"][0]
      names = sorted({o["label"] for o in u["over_threshold"]})
      out.append(
          f"{what}{len(u['over_threshold'])} method/budget cells cut more "
          f"than {u['threshold']:.0%} of their candidates (unfinished: token "
          f"cap, cache end or round limit; counted wrong), worst "
          f"{worst['label']} at {worst['budget']:g}: {worst['rate']:.1%}"
          f"{_reasons(worst.get('by_reason'))}. "
          f"Methods: {', '.join(names)}.")
  return out


def _reasons(by_reason) -> str:
  """' (token_cap 3, cache_end 1)': cut candidates per reason."""
  if not by_reason:
    return ""
  return " (" + ", ".join(f"{k} {v}" for k, v in sorted(
      by_reason.items(), key=lambda kv: (-kv[1], kv[0]))) + ")"


def _fmt_acc(a):
  if a.get("value") is None:
    return "n/a"
  text = f"{a['value']:+.3f}"
  if a.get("ci_low") is not None:
    text += f" [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}]"
  return text


def _orm_samples(cfg, records, uids):
  """uid -> (correctness, scores) of the ORM spec's candidates at its largest
  budget, or None without such records for every problem."""
  spec = cfg.orm_spec
  mine = [r for r in records if r.get("strategy") == spec.get("strategy")
          and all((r.get("hparams") or {}).get(k) == v
                  for k, v in dict(spec.get("hparams") or {}).items())
          and r.get("candidates")]
  if not mine:
    return None
  budget = max(int(r["budget"]) for r in mine)
  try:
    correct, scores = difficulty.samples_from_records(
        mine, strategy=spec["strategy"], budget=budget,
        hparams=spec.get("hparams"))
  except ValueError:
    return None
  if any(u not in correct for u in uids):
    return None
  return budget, correct, scores


def verifier(cfg, uids, oracle_samples, prm_scores, records,
                      weights, bin_cols):
  out = {}
  if prm_scores is not None:
    uneven = [u for u in uids
              if len(prm_scores[u]) != len(oracle_samples[u])]
    if uneven:
      raise ValueError(f"prm_scores and oracle_samples differ in length for "
                       f"{len(uneven)} problems, e.g. {uneven[:3]}: they "
                       "must be the same candidates")
    out["prm"] = dict(verifier_quality.quality(
        uids, prm_scores, oracle_samples, weights, bin_cols, cfg.ci_level),
                      source="difficulty samples (a draw of their own): "
                             "final PRM score")
  orm = _orm_samples(cfg, records, uids)
  if orm is not None:
    budget, correct, scores = orm
    out["orm"] = dict(verifier_quality.quality(
        uids, scores, correct, weights, bin_cols, cfg.ci_level),
                      source=f"{cfg.orm_spec['strategy']} "
                             f"{dict(cfg.orm_spec.get('hparams') or {})} at "
                             f"N={budget}: ORM score of each attempt")
  return out
