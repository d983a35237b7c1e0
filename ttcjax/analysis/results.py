"""`analyze`: search records + difficulty samples -> one JSON-ready dict.

The dict holds every number `ttcjax.analysis.report.write_report` prints or
plots; its layout is `ttcjax.analysis.report.RESULTS_SCHEMA`. All numbers come
from the same bootstrap weight rows (`ttcjax.analysis.stats`), seeded by
`AnalysisConfig.seed`, so the same inputs give the same dict, and
`results.json` is byte-identical across reruns.

Difficulty samples (the bins, the verifier AUCs) must be a draw of their own,
never the candidates of an evaluated cell: a problem binned as 0/64 from the
very samples best-of-N@64 picks from scores 0 there by construction
(`ttcjax.experiments.embedded_study` draws them with their own key).

Compute-optimal families: the headline ones are the paper's pools (PRM
search: best-of-N weighted, beam search, lookahead; revisions: the L:P
ratios with the paper's hierarchical weighted selection). Majority voting
and DVTS enter only a second, labelled pool (`search_all`,
`revisions_all`). Records of an oracle verifier (an exact step checker in
place of the PRM) form their own section, never a headline pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ttcjax.analysis import compute_optimal as co
from ttcjax.analysis import controls, difficulty, flops_matched, stats

SCHEMA_VERSION = 3
KINDS = ("oracle", "predicted")
POOL_OTHER = {"equal": "at_most", "at_most": "equal"}
FAMILY_LABELS = {
    "search": "PRM search, the paper's pool (best-of-N weighted, beam, "
              "lookahead)",
    "revisions": "revisions, the paper's pool (L:P ratios, weighted "
                 "selection)",
    "search_all": "all search methods incl. majority voting, plain "
                  "best-of-N and DVTS (not the paper's pool)",
    "revisions_all": "revisions with every selection incl. majority (not "
                     "the paper's pool)",
}


def _default_families() -> dict[str, tuple[Any, ...]]:
  weighted = {"selection": "weighted"}
  return {
      "search": ({"strategy": "best_of_n", "hparams": weighted},
                 {"strategy": "beam", "hparams": weighted},
                 {"strategy": "lookahead", "hparams": weighted}),
      "revisions": ({"strategy": "revisions", "hparams": weighted},),
      "search_all": ("best_of_n", "beam", "lookahead", "dvts"),
      "revisions_all": ("revisions",),
  }


def _default_baselines() -> dict[str, dict[str, Any]]:
  search = {"strategy": "best_of_n", "hparams": {"selection": "weighted"}}
  revisions = {"strategy": "revisions",
               "hparams": {"revision_length": 1, "selection": "weighted"}}
  return {"search": search, "revisions": revisions,
          "search_all": search, "revisions_all": revisions}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnalysisConfig:
  """Choices of the analysis (written to results.json as `config`).

  Attributes:
    n_bins: difficulty bins (5 quantiles).
    tie_break: 'uid' or 'hash' (`ttcjax.analysis.difficulty`).
    seed: bootstrap rows and CV folds.
    n_bootstrap: resamples B.
    ci_level: interval coverage.
    budget_field: x axis, 'generations' or 'budget' (records' N).
    budget_dependent_hparams: left out of a method's identity.
    families: family -> pool of method specs (`compute_optimal.in_pool`:
      a strategy name or `{'strategy', 'hparams'}`); compute-optimal
      chooses within one pool.
    headline_families: the families whose compute-optimal curve is a
      headline (the paper's pools); the others are reported as second
      pools, labelled as such.
    baselines: family -> `{'strategy', 'hparams'}` matching one method (the
      paper: weighted best-of-N; for revisions, parallel sampling L = 1).
    pool: the headline's candidates at budget B: 'equal' (cells costing
      exactly B, the paper's) or 'at_most' (`ttcjax.analysis.
      compute_optimal`); the other is reported beside it.
    target_budgets: baseline budgets of the headline (16, 64, 256).
    comparison_strategies: strategies set against the search baseline per
      bin (paper Fig. 3 right).
    revision_strategy: the strategy with sequential/parallel ratios.
    ratio_budget: budget of the L:P comparison (None: the largest with at
      least two ratios).
    flops_ratios: R = D_inf / D_pre values (0.16, 0.79, 22).
    flops_convention: '2nd' or '4nd'.
    flops_matched_mode: 'interpolate' or 'floor'
      (`ttcjax.analysis.flops_matched`).
    orm_spec: the revision records whose candidates measure the ORM's AUC
      (its largest budget; parallel attempts by default).
    oracle_families: the families computed for oracle-verifier records.
    cut_rate_threshold: a method whose unfinished-candidate rate exceeds
      this is named in the report's first lines.
    notice: a line put first in the report (e.g. that a preset cannot show
      the headline's direction); None: none.
  """
  n_bins: int = 5
  tie_break: str = "uid"
  seed: int = 0
  n_bootstrap: int = 1000
  ci_level: float = 0.95
  budget_field: str = "generations"
  budget_dependent_hparams: tuple[str, ...] = co.BUDGET_DEPENDENT_HPARAMS
  families: Mapping[str, tuple[Any, ...]] = dataclasses.field(
      default_factory=_default_families)
  headline_families: tuple[str, ...] = ("search", "revisions")
  baselines: Mapping[str, Mapping[str, Any]] = dataclasses.field(
      default_factory=_default_baselines)
  pool: str = "equal"
  target_budgets: tuple[float, ...] = (16, 64, 256)
  comparison_strategies: tuple[str, ...] = ("beam",)
  revision_strategy: str = "revisions"
  ratio_budget: float | None = None
  flops_ratios: tuple[float, ...] = flops_matched.PAPER_RATIOS
  flops_convention: str = "2nd"
  flops_matched_mode: str = "interpolate"
  orm_spec: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {
      "strategy": "revisions",
      "hparams": {"revision_length": 1, "selection": "weighted"}})
  oracle_families: tuple[str, ...] = ("search", "search_all")
  cut_rate_threshold: float = 0.01
  notice: str | None = None

  def __post_init__(self):
    for name in ("budget_dependent_hparams", "target_budgets",
                 "comparison_strategies", "flops_ratios",
                 "headline_families", "oracle_families"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    object.__setattr__(self, "families", {
        k: tuple(dict(s) if isinstance(s, Mapping) else s for s in v)
        for k, v in dict(self.families).items()})
    bad_specs = [(f, s) for f, v in self.families.items() for s in v
                 if not isinstance(s, (str, Mapping)) or (
                     isinstance(s, Mapping) and "strategy" not in s)]
    checks = [
        (self.n_bins >= 1, "n_bins must be >= 1"),
        (self.n_bootstrap >= 0, "n_bootstrap must be >= 0"),
        (0 < self.ci_level < 1, "ci_level must be in (0, 1)"),
        (self.tie_break in difficulty.TIE_BREAKS,
         f"tie_break must be one of {difficulty.TIE_BREAKS}"),
        (self.budget_field in co.BUDGET_FIELDS,
         f"budget_field must be one of {co.BUDGET_FIELDS}"),
        (self.pool in co.POOLS, f"pool must be one of {co.POOLS}"),
        (self.flops_matched_mode in flops_matched.MODES,
         f"flops_matched_mode must be one of {flops_matched.MODES}"),
        (all(t > 0 for t in self.target_budgets),
         "target_budgets must be positive"),
        (not bad_specs, f"families entries must be a strategy name or "
         f"{{'strategy', 'hparams'}}, got {bad_specs}"),
        (set(self.headline_families) <= set(self.families),
         f"headline_families {self.headline_families} must be families "
         f"{sorted(self.families)}"),
        (set(self.oracle_families) <= set(self.families),
         f"oracle_families {self.oracle_families} must be families "
         f"{sorted(self.families)}"),
        (0 <= self.cut_rate_threshold <= 1,
         "cut_rate_threshold must be in [0, 1]"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f"AnalysisConfig: {message}")


def _clean(obj: Any) -> Any:
  """JSON-ready copy: numpy -> python, floats to 10 significant digits,
  NaN/inf -> None, tuples -> lists, keys -> str."""
  if isinstance(obj, Mapping):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _clean(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    x = float(obj)
    return float(f"{x:.10g}") if math.isfinite(x) else None
  return obj


def _large_correct(results: Any, uids: Sequence[str]) -> np.ndarray:
  """uid -> correct mapping, or records with uid/correct, aligned to uids."""
  if isinstance(results, Mapping):
    table = {str(k): v for k, v in results.items()}
  else:
    table = {str(r["uid"]): r["correct"] for r in results}
  missing = [u for u in uids if u not in table]
  if missing:
    raise ValueError(f"large_model_results lacks {len(missing)} problems, "
                     f"e.g. {missing[:3]}")
  return np.array([float(bool(table[u])) for u in uids])


def _difficulty_section(cfg, uids, oracle_samples, prm_scores, cells,
                        baseline, flops_info):
  values = {"oracle": difficulty.pass_at_1(
      {u: oracle_samples[u] for u in uids})}
  samples = {"oracle": {u: len(oracle_samples[u]) for u in uids}}
  if prm_scores is not None:
    missing = [u for u in uids if u not in prm_scores]
    if missing:
      raise ValueError(f"prm_scores lacks {len(missing)} problems of "
                       f"oracle_samples, e.g. {missing[:3]}")
    values["predicted"] = difficulty.mean_final_score(
        {u: prm_scores[u] for u in uids})
    samples["predicted"] = {u: len(prm_scores[u]) for u in uids}
  bins = {k: difficulty.quantile_bins(v, cfg.n_bins, cfg.tie_break)
          for k, v in values.items()}
  out = {k: {"samples_per_problem": float(np.mean(list(samples[k].values()))),
             "bins": difficulty.bin_summary(values[k], bins[k], cfg.n_bins),
             "assignment": bins[k], "values": values[k]} for k in bins}
  if "predicted" in bins:
    out["agreement"] = difficulty.agreement(
        bins["oracle"], bins["predicted"], values["oracle"],
        values["predicted"], cfg.n_bins)
    info = dict((flops_info or {}).get("difficulty") or {})
    source = "flops_info" if info else None
    s = out["predicted"]["samples_per_problem"]
    if not info and baseline is not None:  # FLOPs of the baseline at N = S
      for c in cells:
        if (c.method == baseline and c.budget_n == round(s) and
            c.cost["policy_flops"] is not None):
          info = {"policy_flops_per_sample": c.cost["policy_flops"] / s,
                  "verifier_flops_per_sample":
                      (c.cost["verifier_flops"] or 0.0) / s}
          source = f"{baseline} at N={c.budget_n}"
    out["cost"] = difficulty.difficulty_cost(
        samples["predicted"],
        policy_flops_per_sample=info.get("policy_flops_per_sample"),
        verifier_flops_per_sample=info.get("verifier_flops_per_sample"))
    out["cost"]["flops_source"] = source
  return bins, out


def _optimal_points(cfg, opt, labels):
  points = []
  for j, budget in enumerate(opt.budgets):
    per_bin = {}
    for b, choice in opt.choices[j].items():
      per_bin[b] = dict(choice, chosen_label=labels[choice["chosen"]],
                        accuracy=stats.summarize(opt.bin_rows[b][:, j],
                                                 cfg.ci_level))
    points.append({"budget": budget, "bins": per_bin,
                   "accuracy": stats.summarize(opt.rows[:, j],
                                               cfg.ci_level),
                   "in_sample_accuracy": opt.in_sample[j]})
  return points


def _family_section(cfg, cells, labels, kinds, weights, bin_cols, folds,
                    difficulty_generations, families=None):
  out, curves = {}, {}
  names = sorted(cfg.families) if families is None else sorted(families)
  other_pool = POOL_OTHER[cfg.pool]
  for family in names:
    specs = cfg.families[family]
    mine = [c for c in cells if co.in_pool(c, specs)]
    spec = cfg.baselines.get(family)
    baseline = co.find_method(cells, spec) if spec else None
    entry = {"pool": list(specs), "label": FAMILY_LABELS.get(family, family),
             "headline_family": family in cfg.headline_families,
             "methods": sorted({c.method for c in mine}),
             "baseline": baseline, "baseline_label": labels.get(baseline),
             "kinds": {}}
    all_cols = np.arange(weights.shape[1])
    base_b, base_rows = (co.curve(cells, baseline, weights, all_cols)
                         if baseline else (np.zeros(0), None))
    for kind in kinds:
      opt = co.compute_optimal(mine, bin_cols[kind], folds[kind], weights,
                               cfg.pool, baseline)
      if opt is None:
        continue
      curves[(family, kind)] = opt

      def headline(budgets, rows, bb=base_b, br=base_rows):
        if br is None:
          return []
        return [co.efficiency(bb, br, budgets, rows, t, cfg.ci_level)
                for t in cfg.target_budgets]

      k_entry = {"pool": cfg.pool, "points": _optimal_points(cfg, opt, labels),
                 "headline": headline(opt.budgets, opt.rows), "bins": {}}
      for b, cols in bin_cols[kind].items():
        bb, br = (co.curve(cells, baseline, weights, cols) if baseline
                  else (np.zeros(0), None))
        k_entry["bins"][b] = {"headline": headline(opt.budgets,
                                                   opt.bin_rows[b], bb, br)}
      if kind == "predicted" and difficulty_generations:
        k_entry["difficulty_generations"] = difficulty_generations
        k_entry["headline_with_difficulty_cost"] = headline(
            opt.budgets + difficulty_generations, opt.rows)
      alt = co.compute_optimal(mine, bin_cols[kind], folds[kind], weights,
                               other_pool, baseline)
      k_entry["other_pool"] = {
          "pool": other_pool, "points": _optimal_points(cfg, alt, labels),
          "headline": headline(alt.budgets, alt.rows)}
      entry["kinds"][kind] = k_entry
    out[family] = entry
  return out, curves


def _methods_section(cfg, cells, labels, kinds, weights, bin_cols):
  methods: dict[str, Any] = {}
  for c in cells:
    m = methods.setdefault(c.method, {
        "label": labels[c.method], "strategy": c.strategy,
        "hparams": c.hparams, "points": [],
        "families": sorted(f for f, specs in cfg.families.items()
                           if co.in_pool(c, specs))})
    point = {"budget": c.budget, "budget_n": c.budget_n, "cost": c.cost,
             "unfinished": c.unfinished,
             "accuracy": stats.summarize(
                 stats.weighted_mean(weights, c.correct), cfg.ci_level),
             "bins": {}}
    for kind in kinds:
      point["bins"][kind] = {b: stats.summarize(stats.weighted_mean(
          weights[:, cols], c.correct[cols]), cfg.ci_level)
                             for b, cols in bin_cols[kind].items()}
    m["points"].append(point)
  return methods


def _comparisons_section(cfg, cells, labels, kinds, weights, bin_cols):
  """Each method of `comparison_strategies` minus the search baseline at the
  same budget, overall and per bin (paper Fig. 3 right, with the CI the
  figure lacks).

  Paired: both accuracies are taken on the same bootstrap rows, so the
  interval is that of the difference, not two overlapping intervals. A
  budget where the baseline has no cell is left out (counted)."""
  spec = cfg.baselines.get("search")
  base_id = co.find_method(cells, spec) if spec else None
  out = {"baseline": base_id,
         "baseline_label": labels.get(base_id) if base_id else None,
         "rows": [], "budgets_without_baseline": 0}
  if base_id is None:
    return out
  base = {c.budget: c for c in cells if c.method == base_id}
  for c in sorted(cells, key=lambda c: (c.method, c.budget)):
    if c.strategy not in cfg.comparison_strategies:
      continue
    b = base.get(c.budget)
    if b is None:
      out["budgets_without_baseline"] += 1
      continue
    diff = c.correct - b.correct
    row = {"method": c.method, "label": labels[c.method], "budget": c.budget,
           "difference": stats.summarize(stats.weighted_mean(weights, diff),
                                         cfg.ci_level),
           "bins": {}}
    for kind in kinds:
      row["bins"][kind] = {
          bn: stats.summarize(stats.weighted_mean(weights[:, cols],
                                                  diff[cols]), cfg.ci_level)
          for bn, cols in bin_cols[kind].items()}
    out["rows"].append(row)
  return out


def _revisions_section(cfg, cells, labels, kinds, weights, bin_cols):
  mine = [c for c in cells if c.strategy == cfg.revision_strategy
          and "revision_length" in c.hparams]
  groups: dict[str, list[co.Cell]] = {}
  for c in mine:
    other = {k: v for k, v in c.hparams.items() if k != "revision_length"}
    groups.setdefault(co.method_id(c.strategy, other, ()), []).append(c)
  out = {}

  def point(c):
    p = {"budget": c.budget, "budget_n": c.budget_n, "method": c.method,
         "label": labels[c.method], "L": c.hparams["revision_length"],
         "P": c.budget_n // c.hparams["revision_length"],
         "accuracy": stats.summarize(stats.weighted_mean(weights, c.correct),
                                     cfg.ci_level), "bins": {}}
    p["ratio"] = f"{p['L']}:{p['P']}"
    for kind in kinds:
      p["bins"][kind] = {b: stats.summarize(stats.weighted_mean(
          weights[:, cols], c.correct[cols]), cfg.ci_level)
                         for b, cols in bin_cols[kind].items()}
    return p

  for gid, group in sorted(groups.items()):
    group.sort(key=lambda c: (c.budget, c.hparams["revision_length"]))
    by_budget: dict[int, list[co.Cell]] = {}
    for c in group:
      by_budget.setdefault(c.budget_n, []).append(c)
    multi = [n for n, cs in by_budget.items() if len(cs) >= 2]
    ratio_n = cfg.ratio_budget if cfg.ratio_budget else (
        max(multi) if multi else None)
    selection = group[0].hparams.get("selection")
    out[gid] = {
        "label": " ".join(str(v) for v in (cfg.revision_strategy, selection)
                          if v is not None),
        "parallel": [point(c) for c in group
                     if c.hparams["revision_length"] == 1],
        "sequential": [point(c) for c in group
                       if c.hparams["revision_length"] == c.budget_n],
        "ratio_budget": ratio_n,
        "ratios": [point(c) for c in by_budget.get(ratio_n, [])],
    }
  return out


def _flops_section(cfg, cells, families, curves, kinds, weights, bin_cols,
                   flops_info, large_model_results, uids):
  needed = ("n_small", "n_large", "d_pretrain")
  if not flops_info or large_model_results is None or any(
      k not in flops_info for k in needed):
    return None
  out = flops_matched.matched_budgets(
      flops_info["n_small"], flops_info["n_large"], flops_info["d_pretrain"],
      cfg.flops_ratios, cfg.flops_convention)
  out["mode"] = cfg.flops_matched_mode
  large = _large_correct(large_model_results, uids)
  all_cols = np.arange(len(uids))
  large_rows = {kind: {"all": stats.weighted_mean(weights, large)}
                for kind in kinds}
  for kind in kinds:
    for b, cols in bin_cols[kind].items():
      large_rows[kind][str(b)] = stats.weighted_mean(weights[:, cols],
                                                     large[cols])
  out["large_model"] = {
      kind: {g: stats.summarize(r, cfg.ci_level) for g, r in rows.items()}
      for kind, rows in large_rows.items()}
  for entry in out["by_ratio"]:
    entry["families"] = {}
    for family, fam in families.items():
      f_out = {}
      for kind in kinds:
        opt = curves.get((family, kind))
        if opt is not None:
          small = {"all": opt.rows}
          small.update({str(b): r for b, r in opt.bin_rows.items()})
          f_out.setdefault("compute_optimal", {})[kind] = flops_matched.compare(
              opt.budgets, small, large_rows[kind], entry["budget"],
              cfg.flops_matched_mode, cfg.ci_level)
        if fam["baseline"]:
          bud, rows = co.curve(cells, fam["baseline"], weights, all_cols)
          small = {"all": rows}
          for b, cols in bin_cols[kind].items():
            small[str(b)] = co.curve(cells, fam["baseline"], weights, cols)[1]
          f_out.setdefault("baseline", {})[kind] = flops_matched.compare(
              bud, small, large_rows[kind], entry["budget"],
              cfg.flops_matched_mode, cfg.ci_level)
      entry["families"][family] = f_out
  return out


def _oracle_section(cfg, records, uids, kinds, weights, bin_cols, folds):
  """The same sweep with an exact step checker as the verifier."""
  cells, info = co.build_cells(records, uids, budget_field=cfg.budget_field,
                               drop=cfg.budget_dependent_hparams)
  labels = co.method_labels(cells)
  families, _ = _family_section(cfg, cells, labels, kinds, weights, bin_cols,
                                folds, None, cfg.oracle_families)
  for fam in families.values():
    fam["headline_family"] = False
  return {"label": "oracle verifier (exact step checker in place of the "
                   "PRM): the ceiling of search with a perfect verifier",
          "problems": info,
          "methods": _methods_section(cfg, cells, labels, kinds, weights,
                                      bin_cols),
          "comparisons": _comparisons_section(cfg, cells, labels, kinds,
                                              weights, bin_cols),
          "compute_optimal": families,
          "unfinished": controls.unfinished(cfg, cells, labels)}


def analyze(records: Iterable[Mapping[str, Any]],
            oracle_samples: Mapping[str, Sequence[bool]],
            prm_scores: Mapping[str, Sequence[float]] | None = None,
            large_model_results: Any = None,
            flops_info: Mapping[str, Any] | None = None,
            config: AnalysisConfig | Mapping[str, Any] | None = None,
            oracle_records: Iterable[Mapping[str, Any]] | None = None
            ) -> dict[str, Any]:
  """The whole study analysis, as a JSON-ready dict (`RESULTS_SCHEMA`).

  Args:
    records: search record dicts (`ttcjax.search.records`); records of
      problems outside `oracle_samples` are ignored (counted), and cells
      that miss some problem are left out (listed).
    oracle_samples: uid -> correctness of the S difficulty samples (a draw
      independent of the evaluated cells); defines the study's problems and
      the oracle bins.
    prm_scores: uid -> final PRM score of the same S samples (predicted
      bins, the PRM's AUCs); None skips both.
    large_model_results: uid -> greedy correctness of the larger model (or
      records with uid/correct); None skips the FLOPs-matched comparison.
    flops_info: `{'n_small', 'n_large', 'd_pretrain'}` (FLOPs-matched) and
      optionally `'difficulty': {'policy_flops_per_sample',
      'verifier_flops_per_sample'}`.
    config: an `AnalysisConfig` or its fields as a dict.
    oracle_records: records of the same sweep with an oracle verifier (an
      exact step checker); None: no `oracle_verifier` section.

  Returns:
    The analysis dict.
  """
  cfg = (config if isinstance(config, AnalysisConfig)
         else AnalysisConfig(**dict(config or {})))
  records = list(records)
  uids = sorted(str(u) for u in oracle_samples)
  oracle_samples = {str(k): v for k, v in oracle_samples.items()}
  if prm_scores is not None:
    prm_scores = {str(k): v for k, v in prm_scores.items()}
  cells, cell_info = co.build_cells(records, uids,
                                    budget_field=cfg.budget_field,
                                    drop=cfg.budget_dependent_hparams)
  labels = co.method_labels(cells)
  search_spec = cfg.baselines.get("search")
  search_base = co.find_method(cells, search_spec) if search_spec else None
  bins, diff_out = _difficulty_section(cfg, uids, oracle_samples, prm_scores,
                                       cells, search_base, flops_info)
  kinds = [k for k in KINDS if k in bins]
  weights = stats.bootstrap_weights(len(uids), cfg.n_bootstrap, cfg.seed)
  index = {u: i for i, u in enumerate(uids)}
  bin_cols, folds = {}, {}
  for kind in kinds:
    bin_cols[kind], folds[kind] = {}, {}
    for b in range(1, cfg.n_bins + 1):
      members = [u for u in uids if bins[kind][u] == b]
      bin_cols[kind][b] = np.array([index[u] for u in members], dtype=int)
      folds[kind][b] = co.cv_folds(members, cfg.seed)

  s_pred = (diff_out["predicted"]["samples_per_problem"]
            if "predicted" in diff_out else None)
  families, curves = _family_section(cfg, cells, labels, kinds, weights,
                                     bin_cols, folds, s_pred)
  unfinished = controls.unfinished(cfg, cells, labels)
  oracle = (None if oracle_records is None else _oracle_section(
      cfg, list(oracle_records), uids, kinds, weights, bin_cols, folds))
  direction = controls.direction(cfg, cells, labels, weights)
  analysis = {
      "schema_version": SCHEMA_VERSION,
      "warnings": controls.warnings(cfg, unfinished, direction,
                                    oracle["unfinished"] if oracle else None),
      "config": dataclasses.asdict(cfg),
      "problems": dict(cell_info, n=len(uids), uids_sha256=hashlib.sha256(
          json.dumps(uids).encode("utf-8")).hexdigest()),
      "difficulty": diff_out,
      "methods": _methods_section(cfg, cells, labels, kinds, weights,
                                  bin_cols),
      "comparisons": _comparisons_section(cfg, cells, labels, kinds,
                                          weights, bin_cols),
      "unfinished": unfinished,
      "direction": direction,
      "verifier": controls.verifier(cfg, uids, oracle_samples, prm_scores,
                                    records, weights, bin_cols),
      "compute_optimal": families,
      "oracle_verifier": oracle,
      "revisions": _revisions_section(cfg, cells, labels, kinds, weights,
                                      bin_cols),
      "flops_matched": _flops_section(cfg, cells, families, curves, kinds,
                                      weights, bin_cols, flops_info,
                                      large_model_results, uids),
  }
  return _clean(analysis)
