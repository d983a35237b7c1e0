"""report.md, results.json and figures from an `analyze` dict.

`write_report(workdir, analysis)` writes, atomically:

- `results.json`: the analysis dict, `json.dumps(sort_keys=True, indent=1)`,
  every number of the report and figures (same inputs and config: the same
  bytes);
- `report.md`: tables (all read from the dict);
- `figures/*.png` (matplotlib, Agg, imported only here):
  `search_methods.png` (accuracy vs budget per search method with 95% bands;
  paper Fig. 3 left), `search_bins.png` (baseline vs compared strategies per
  oracle bin; Fig. 3 right), `revisions.png` (sequential vs parallel, and
  accuracy vs L:P at one budget; Fig. 6), `revisions_bins.png` (L:P per
  bin; Fig. 7), `compute_optimal_<family>.png` (compute-optimal vs
  baseline; Figs. 4 and 8), `flops_matched.png` (small model at the matched
  budget vs the large model per bin and R; Fig. 9).

results.json schema (`RESULTS_SCHEMA`; budgets in generations unless
`config.budget_field == 'budget'`; an "acc" is `{"value", "ci_low",
"ci_high"}`: point estimate and bootstrap percentile interval, each a float
in [0, 1] or null; bins are "1" (easiest) .. "5"):

{RESULTS_SCHEMA}"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ttcjax.analysis.results import AnalysisConfig, analyze  # re-exported

__all__ = ["AnalysisConfig", "RESULTS_SCHEMA", "analyze", "write_report"]

RESULTS_SCHEMA = """\
schema_version: 3
warnings: [str]                        # the report's and console's first
                                       # lines: config notice, headline
                                       # direction not shown, cut rates
config: AnalysisConfig fields (n_bins, tie_break, seed, n_bootstrap,
  ci_level, budget_field, budget_dependent_hparams, families,
  headline_families, baselines, pool, target_budgets, comparison_strategies,
  revision_strategy, ratio_budget, flops_ratios, flops_convention,
  flops_matched_mode, orm_spec, oracle_families, cut_rate_threshold, notice)
problems: {n, uids_sha256, records_in_cells, records_outside_problems,
  incomplete_cells: [{method, budget_n, problems, needed}]}
difficulty:                            # from samples of their own, never
                                       # an evaluated cell's candidates
  oracle | predicted: {samples_per_problem,
    bins: {bin: {n, min, mean, max}}   # of pass@1 | mean final PRM score
    assignment: {uid: bin}, values: {uid: pass@1 | mean score}}
  agreement: {n, same_bin, within_one_bin, confusion[oracle-1][pred-1],
    spearman}                          # only with predicted
  cost: {problems, samples_per_problem, generations_total,
    policy_flops_per_sample, verifier_flops_per_sample,
    policy_flops_per_problem, verifier_flops_per_problem, flops_per_problem,
    policy_flops_total, verifier_flops_total, flops_total, flops_source}
methods: {method_id: {label, strategy, hparams, families: [family],
  points: [{budget, budget_n, accuracy: acc,
    cost: {generations, policy_tokens, prompt_tokens, verifier_tokens,
           policy_flops, verifier_flops, flops},   # per-problem means
    unfinished: {candidates, unfinished, rate, by_reason, no_answer_rate},
    bins: {kind: {bin: acc}}}]}}
comparisons: {baseline: method_id, baseline_label, budgets_without_baseline,
  rows: [{method, label, budget, difference: acc,   # method - baseline,
    bins: {kind: {bin: acc}}}]}        # paired bootstrap (Fig. 3 right)
unfinished: {threshold, by_method: {method_id: {label, candidates,
    unfinished, rate, max_rate, by_reason: {reason: n}}},   # candidates
  over_threshold: [{method, label, budget, rate, by_reason}]}  # cut:
      # token_cap, cache_end, round_limit, left_behind (DVTS siblings);
      # unknown for records written before candidates carried a reason
direction: null | {method, label, from_budget, to_budget, gain: acc,
  shown}                               # search baseline, largest - smallest
                                       # budget (paired bootstrap)
verifier: {prm | orm: {source, n_problems, n_candidates, correct_rate,
  across: acc, within: acc, within_problems,   # ROC AUC pooled / mean over
  bins: {kind: {bin: {across, within, within_problems}}}}}  # problems with
                                       # both classes; CIs resample problems
compute_optimal: {family: {pool: [spec], label, headline_family: bool,
  methods: [method_id], baseline: method_id, baseline_label,
  kinds: {kind: {
    pool: equal | at_most,
    points: [{budget, accuracy: acc (2-fold CV), in_sample_accuracy,
      bins: {bin: {accuracy: acc, chosen, chosen_label, chosen_budget,
        in_sample_accuracy, fold_choices: [m0, m1], fold_budgets}}}],
    headline: [efficiency], bins: {bin: {headline: [efficiency]}},
    other_pool: {pool, points, headline},      # the other candidate pool
    difficulty_generations, headline_with_difficulty_cost: [efficiency]
  }}}}                                 # the last two: predicted only
  efficiency: {target_budget, baseline_accuracy: acc, matched_budget,
    status: matched | matched_at_smallest_budget | not_matched |
      target_not_measured | undefined,
    ratio, ratio_ci_low, ratio_ci_high, ratio_upper_bound,
    unmatched_resamples}
oracle_verifier: null | {label, problems: {records_in_cells,
  records_outside_problems, incomplete_cells}, methods: {as methods},
  compute_optimal: {family: as compute_optimal}, unfinished: {as
  unfinished}}                         # same bins; never a headline
revisions: {group_id: {label, ratio_budget,
  parallel | sequential | ratios: [{budget, budget_n, method, label, L, P,
    ratio: "L:P", accuracy: acc, bins: {kind: {bin: acc}}}]}}
flops_matched: null | {n_small, n_large, size_ratio, d_pretrain, convention,
  mode, large_model: {kind: {all | bin: acc}},
  by_ratio: [{R, d_inference, budget: X,
    families: {family: {compute_optimal | baseline: {kind: {all | bin: {
      small: acc, small_interpolated: acc, small_floor: acc, floor_budget,
      status, large: acc, difference: acc}}}}}}]}
"""
__doc__ = __doc__.replace("{RESULTS_SCHEMA}", RESULTS_SCHEMA)


def _write(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def results_json(analysis: Mapping[str, Any]) -> str:
  """The canonical text of results.json."""
  return json.dumps(analysis, sort_keys=True, indent=1,
                    allow_nan=False) + "\n"


def _acc(a: Mapping[str, Any] | None, digits: int = 3) -> str:
  if not a or a.get("value") is None:
    return "-"
  text = f"{a['value']:.{digits}f}"
  if a.get("ci_low") is not None:
    text += f" [{a['ci_low']:.{digits}f}, {a['ci_high']:.{digits}f}]"
  return text


def _num(x: Any, fmt: str = ".4g") -> str:
  return "-" if x is None else format(x, fmt)


def _pct(x: Any) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return lines + [""]


def _bins(analysis):
  return sorted(analysis["difficulty"]["oracle"]["bins"], key=int)


def _kinds(analysis):
  return [k for k in ("oracle", "predicted") if k in analysis["difficulty"]]


def _difficulty_md(analysis):
  d = analysis["difficulty"]
  out = ["## Difficulty bins", ""]
  for kind in _kinds(analysis):
    what = "pass@1" if kind == "oracle" else "mean final PRM score"
    out += [f"{kind} ({what} over {d[kind]['samples_per_problem']:.4g} "
            "samples per problem; bin 1 = easiest):", ""]
    out += _table(["bin", "problems", "min", "mean", "max"],
                  [[b, str(v["n"]), _num(v["min"], ".3f"),
                    _num(v["mean"], ".3f"), _num(v["max"], ".3f")]
                   for b, v in sorted(d[kind]["bins"].items(),
                                      key=lambda kv: int(kv[0]))])
  if "agreement" in d:
    a = d["agreement"]
    out += [f"Predicted vs oracle bins: same bin {a['same_bin']:.3f}, within "
            f"one bin {a['within_one_bin']:.3f}, Spearman "
            f"{_num(a['spearman'], '.3f')} ({a['n']} problems).", ""]
    c = d["cost"]
    out += [f"Cost of predicted difficulty (left out by the paper): "
            f"{c['samples_per_problem']:.4g} generations per problem "
            f"({c['generations_total']:.4g} in all), "
            f"{_num(c['flops_per_problem'])} FLOPs per problem "
            f"(policy {_num(c['policy_flops_per_problem'])}, verifier "
            f"{_num(c['verifier_flops_per_problem'])}), "
            f"{_num(c['flops_total'])} FLOPs in all; FLOPs from "
            f"{c['flops_source'] or 'nowhere (not given)'}.", ""]
  return out


def _methods_md(analysis, methods=None, title="## Accuracy per method"):
  methods = analysis["methods"] if methods is None else methods
  out = [title, "",
         "Accuracy [95% bootstrap CI] over all problems; cost per problem; "
         "'cut candidates': candidates ended unfinished (token cap, cache "
         "end, round limit; never selected); 'no answer': problems whose "
         "search returned no answer (counted wrong).", ""]
  rows = []
  for mid, m in sorted(methods.items()):
    for p in m["points"]:
      c = p["cost"]
      u = p.get("unfinished") or {}
      rows.append([m["label"], _num(p["budget"]), str(p["budget_n"]),
                   _acc(p["accuracy"]), _num(c["policy_tokens"]),
                   _num(c["verifier_tokens"]), _num(c["flops"]),
                   _pct(u.get("rate")), _pct(u.get("no_answer_rate"))])
  out += _table(["method", "budget (gen.)", "N", "accuracy",
                 "policy tokens", "verifier tokens", "FLOPs",
                 "cut candidates", "no answer"], rows)
  bins = _bins(analysis)
  for kind in _kinds(analysis):
    out += [f"Accuracy per {kind} bin:", ""]
    rows = [[m["label"], _num(p["budget"])] +
            [_acc(p["bins"][kind][b], 2) for b in bins]
            for _, m in sorted(methods.items())
            for p in m["points"]]
    out += _table(["method", "budget"] + [f"bin {b}" for b in bins], rows)
  return out


def _efficiency_rows(effs):
  return [[_num(e["target_budget"]), _acc(e["baseline_accuracy"]),
           _num(e["matched_budget"]), e["status"],
           (_num(e["ratio"], ".3g") if e["ratio"] is not None else
            f"< {_num(e['ratio_upper_bound'], '.3g')}"),
           f"[{_num(e['ratio_ci_low'], '.3g')}, "
           f"{_num(e['ratio_ci_high'], '.3g')}]",
           _num(e["unmatched_resamples"], ".3f")] for e in effs]


_EFF_HEADER = ["baseline budget", "baseline accuracy", "matched budget",
               "status", "ratio", "ratio 95% CI", "unmatched resamples"]


def _compute_optimal_md(analysis, families=None, methods=None,
                        title="## Compute-optimal scaling"):
  families = analysis["compute_optimal"] if families is None else families
  methods = analysis["methods"] if methods is None else methods
  out = [title, "",
         "Per bin and budget the best method is chosen on one CV fold and "
         "scored on the other (2 folds, swapped); intervals redo the choice "
         "in every bootstrap resample; ties go to the cheaper method, then "
         "to the baseline. 'ratio' = baseline budget / smallest budget at "
         "which compute-optimal matches the baseline's accuracy (log-budget "
         "interpolation, no extrapolation). Headline families are the "
         "paper's pools; the others are second pools, never the headline.",
         ""]
  bins = _bins(analysis)
  order = sorted(families.items(),
                 key=lambda kv: (not kv[1].get("headline_family"), kv[0]))
  for family, fam in order:
    tag = ("headline" if fam.get("headline_family") else
           "second pool, not a headline")
    out += [f"### {family} ({tag}; baseline: "
            f"{fam['baseline_label'] or 'none'})", "",
            f"Pool: {fam.get('label', family)}.", ""]
    base = {p["budget"]: p for p in methods.get(fam["baseline"] or "",
                                                {}).get("points", [])}
    for kind, k in sorted(fam["kinds"].items()):
      for points, pool in ((k["points"], k.get("pool", "equal")),
                           (k.get("other_pool", {}).get("points"),
                            k.get("other_pool", {}).get("pool"))):
        if not points:
          continue
        rows = []
        for p in points:
          b_point = base.get(p["budget"])
          rows.append([_num(p["budget"]),
                       _acc(b_point["accuracy"]) if b_point else "-",
                       _acc(p["accuracy"]),
                       _num(p["in_sample_accuracy"], ".3f")]
                      + [p["bins"][b]["chosen_label"] for b in bins])
        what = ("cells costing exactly the budget" if pool == "equal" else
                "cells costing at most the budget")
        out += [f"{kind} bins, {what}:", ""]
        out += _table(["budget", "baseline", "compute-optimal (CV)",
                       "in-sample"] + [f"chosen bin {b}" for b in bins], rows)
      out += [f"Headline ({kind} bins, all problems, "
              f"{k.get('pool', 'equal')} pool):", ""]
      out += _table(_EFF_HEADER, _efficiency_rows(k["headline"]))
      if "headline_with_difficulty_cost" in k:
        out += [f"Counting the {k['difficulty_generations']:.4g} generations "
                "per problem spent predicting difficulty:", ""]
        out += _table(_EFF_HEADER,
                      _efficiency_rows(k["headline_with_difficulty_cost"]))
      rows = [[b] + r for b in bins
              for r in _efficiency_rows(k["bins"][b]["headline"])]
      out += [f"Per {kind} bin:", ""]
      out += _table(["bin"] + _EFF_HEADER, rows)
  return out


def _comparisons_md(analysis, comparisons=None,
                    title="## Compared methods vs the baseline per bin"):
  c = analysis["comparisons"] if comparisons is None else comparisons
  if not c or not c["rows"]:
    return []
  out = [title, "", f"Accuracy of each method minus {c['baseline_label']} "
         f"at the same budget [95% CI of the difference: paired bootstrap "
         f"over problems] (paper Fig. 3 right).", ""]
  if c["budgets_without_baseline"]:
    out += [f"Left out: {c['budgets_without_baseline']} method/budget cells "
            f"at a budget the baseline lacks.", ""]
  bins = _bins(analysis)
  for kind in _kinds(analysis):
    out += [f"{kind} bins:", ""]
    rows = [[r["label"], _num(r["budget"]), _acc(r["difference"], 2)]
            + [_acc(r["bins"][kind][b], 2) for b in bins] for r in c["rows"]]
    out += _table(["method", "budget", "all"] + [f"bin {b}" for b in bins],
                  rows)
  return out


def _unfinished_md(analysis):
  u = analysis["unfinished"]
  out = ["## Cut candidates", "",
         f"Candidates that ended unfinished (token cap, cache end, round "
         f"limit), per method over all its budgets; over "
         f"{u['threshold']:.0%} in some cell: "
         f"{len(u['over_threshold'])} cells.", ""]
  rows = [[m["label"], _num(m["candidates"], "d") if m["candidates"]
           is not None else "-", _pct(m["rate"]), _pct(m["max_rate"]),
           ", ".join(f"{k} {v}" for k, v in (m.get("by_reason") or {})
                     .items()) or "-"]
          for _, m in sorted(u["by_method"].items())]
  return out + _table(["method", "candidates", "cut", "worst cell",
                       "cut by reason"], rows)


def _verifier_md(analysis):
  v = analysis.get("verifier") or {}
  out = ["## Verifier quality", ""]
  if not v:
    return out + ["No verifier scores given.", ""]
  out += ["ROC AUC of correct vs incorrect candidates [95% CI, resampling "
          "problems]: 'across' pools every problem's candidates; 'within' "
          "is the mean AUC over problems with both correct and incorrect "
          "candidates (what ranking one question's solutions needs).", ""]
  bins = _bins(analysis)
  for name, q in sorted(v.items()):
    out += [f"### {name.upper()}: {q['source']}", "",
            f"{q['n_problems']} problems, {q['n_candidates']} candidates, "
            f"{_pct(q['correct_rate'])} correct.", ""]
    rows = [["all", _acc(q["across"]), _acc(q["within"]),
             str(q["within_problems"])]]
    for kind in sorted(q["bins"]):
      rows += [[f"{kind} bin {b}", _acc(q["bins"][kind][b]["across"]),
                _acc(q["bins"][kind][b]["within"]),
                str(q["bins"][kind][b]["within_problems"])] for b in bins]
    out += _table(["problems", "AUC across", "AUC within",
                   "problems with both"], rows)
  return out


def _oracle_md(analysis):
  o = analysis.get("oracle_verifier")
  if not o:
    return []
  out = ["## Oracle-verifier control", "", f"{o['label']}.", ""]
  out += _methods_md(analysis, o["methods"], "### Accuracy per method "
                     "(oracle verifier)")
  out += _comparisons_md(analysis, o.get("comparisons"),
                         "### Compared methods vs the baseline per bin "
                         "(oracle verifier)")
  out += _compute_optimal_md(analysis, o["compute_optimal"], o["methods"],
                             "### Compute-optimal (oracle verifier)")
  return out


def _revisions_md(analysis):
  out = ["## Revisions: sequential vs parallel", ""]
  bins = _bins(analysis)
  for gid, g in sorted(analysis["revisions"].items()):
    out += [f"### {g['label']}", ""]
    rows = [[how, _num(p["budget"]), p["ratio"], _acc(p["accuracy"])]
            for how in ("parallel", "sequential") for p in g[how]]
    out += _table(["", "budget", "L:P", "accuracy"], rows)
    if g["ratios"]:
      out += [f"L:P at budget {g['ratio_budget']} per oracle bin:", ""]
      rows = [[p["ratio"], _acc(p["accuracy"], 2)] +
              [_acc(p["bins"]["oracle"][b], 2) for b in bins]
              for p in g["ratios"]]
      out += _table(["L:P", "all"] + [f"bin {b}" for b in bins], rows)
  return out


def _flops_md(analysis):
  f = analysis["flops_matched"]
  if not f:
    return ["## FLOPs-matched comparison", "", "Not run (no large-model "
            "results or model sizes).", ""]
  out = ["## FLOPs-matched comparison", "",
         f"N_small = {f['n_small']:.4g}, N_large = {f['n_large']:.4g} "
         f"(ratio {f['size_ratio']:.4f}), D_pre = {f['d_pretrain']:.4g}, "
         f"convention {f['convention']}, small-model accuracy read by "
         f"'{f['mode']}'.", ""]
  groups = ["all"] + _bins(analysis)
  out += ["Cells: small model at X vs large model greedy (small - large "
          "[95% CI]); n/a where X is outside the measured budgets.", ""]
  for entry in f["by_ratio"]:
    out += [f"### R = {entry['R']:g}: X = {entry['budget']:.4g} generations",
            ""]
    rows = []
    for family, curves in sorted(entry["families"].items()):
      for curve, kinds in sorted(curves.items()):
        for kind, by_group in sorted(kinds.items()):
          rows.append([family, curve, kind] +
                      [_versus(by_group[g]) for g in groups])
    out += _table(["family", "curve", "bins"] +
                  [g if g == "all" else f"bin {g}" for g in groups], rows)
  return out


def _versus(r):
  if r["small"] is None:
    return f"n/a ({r['status']})"
  d = r["difference"]
  ci = (f" [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
        if d["ci_low"] is not None else "")
  return (f"{r['small']['value']:.2f} vs {r['large']['value']:.2f} "
          f"({d['value']:+.2f}{ci})")


def report_markdown(analysis: Mapping[str, Any],
                    figures: tuple[str, ...] = ()) -> str:
  """report.md's text, linking `figures` (names under figures/)."""
  p = analysis["problems"]
  cfg = analysis["config"]
  lines = ["# Test-time compute study", ""]
  warnings = analysis.get("warnings") or []
  if warnings:
    lines += [f"**{w}**" for w in warnings] + [""]
  lines += [f"{p['n']} problems; {cfg['n_bootstrap']} bootstrap resamples, "
           f"{cfg['ci_level']:.0%} percentile intervals, seed {cfg['seed']}; "
           f"budgets in {cfg['budget_field']}. Every number here is in "
           "results.json.", ""]
  if p["incomplete_cells"]:
    lines += [f"Left out (not every problem has a record): "
              f"{len(p['incomplete_cells'])} method/budget cells.", ""]
  lines += _difficulty_md(analysis) + _verifier_md(analysis)
  lines += _methods_md(analysis) + _comparisons_md(analysis)
  lines += _unfinished_md(analysis)
  lines += _compute_optimal_md(analysis) + _oracle_md(analysis)
  lines += _revisions_md(analysis) + _flops_md(analysis)
  if figures:
    lines += ["## Figures", ""] + [f"![{name}](figures/{name}.png)"
                                   for name in figures] + [""]
  return "\n".join(lines)


def write_report(workdir: str | os.PathLike, analysis: Mapping[str, Any]
                 ) -> dict[str, str]:
  """Writes results.json, report.md and figures/*.png into `workdir`.

  Args:
    workdir: output directory (created if needed).
    analysis: from `analyze`.

  Returns:
    name -> path of every file written.
  """
  from ttcjax.analysis import plots  # pylint: disable=g-import-not-at-top
  workdir = os.fspath(workdir)
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  written = {}
  for name, fig_bytes in plots.figures(analysis).items():
    path = os.path.join(workdir, "figures", f"{name}.png")
    _write(path, fig_bytes)
    written[name] = path
  text = report_markdown(analysis, tuple(written))
  for name, data in (("results.json", results_json(analysis).encode()),
                     ("report.md", text.encode())):
    path = os.path.join(workdir, name)
    _write(path, data)
    written[name] = path
  return written
