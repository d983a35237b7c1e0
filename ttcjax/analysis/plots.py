"""The report's figures, drawn from an `analyze` dict (no recomputation).

matplotlib is imported inside `figures` only, with the object-oriented Agg
canvas (no pyplot, no global backend switch), and PNGs are written without
the software/version metadata, so the same analysis gives the same bytes on
one installation.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Mapping


def _band(ax, points, label, key=None, style="-", shift=0.0):
  """A line with its CI band; `key(point) -> acc dict`."""
  key = key or (lambda p: p["accuracy"])
  pts = [(p["budget"] + shift, key(p)) for p in points
         if key(p) and key(p)["value"] is not None]
  if not pts:
    return
  xs = [x for x, _ in pts]
  line, = ax.plot(xs, [a["value"] for _, a in pts], style, marker="o",
                  markersize=3, label=label)
  if all(a["ci_low"] is not None for _, a in pts):
    ax.fill_between(xs, [a["ci_low"] for _, a in pts],
                    [a["ci_high"] for _, a in pts], alpha=0.15,
                    color=line.get_color(), linewidth=0)


def _axes(ax, title, xlabel="generation budget", log=True):
  ax.set_title(title, fontsize=9)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel("accuracy", fontsize=8)
  if log:
    ax.set_xscale("log", base=2)
  ax.tick_params(labelsize=7)
  ax.grid(alpha=0.3)


def _bins(a):
  return sorted(a["difficulty"]["oracle"]["bins"], key=int)


def _search_methods(fig, a):
  ax = fig.add_subplot(1, 1, 1)
  drawn = False
  for _, m in sorted(a["methods"].items()):
    if {"search", "search_all"} & set(m["families"]):
      _band(ax, m["points"], m["label"])
      drawn = True
  _axes(ax, "Search methods (Fig. 3 left)")
  ax.legend(fontsize=6)
  return drawn


def _search_bins(fig, a):
  fam = a["compute_optimal"].get("search")
  if not fam or not fam["baseline"]:
    return False
  wanted = set(a["config"]["comparison_strategies"])
  shown = [fam["baseline"]] + sorted(
      k for k, m in a["methods"].items() if m["strategy"] in wanted)
  bins = _bins(a)
  for i, b in enumerate(bins):
    ax = fig.add_subplot(1, len(bins), i + 1)
    for mid in shown:
      m = a["methods"][mid]
      _band(ax, m["points"], m["label"],
            key=lambda p, b=b: p["bins"]["oracle"][b])
    _axes(ax, f"oracle bin {b}")
  fig.axes[0].legend(fontsize=5)
  return True


def _revisions(fig, a):
  groups = a["revisions"]
  if not groups:
    return False
  left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  for _, g in sorted(groups.items()):
    _band(left, g["parallel"], f"parallel {g['label']}")
    _band(left, g["sequential"], f"sequential {g['label']}", style="--")
    pts = [dict(p, budget=p["L"]) for p in g["ratios"]]
    _band(right, pts, g["label"])
  _axes(left, "Sequential vs parallel (Fig. 6 left)")
  budgets = sorted({g["ratio_budget"] for g in groups.values()
                    if g["ratio_budget"]})
  _axes(right, f"Sequential length L at budget {budgets} (Fig. 6 right)",
        xlabel="L (sequential revisions per chain; P = N / L)")
  left.legend(fontsize=6)
  right.legend(fontsize=6)
  return True


def _revisions_bins(fig, a):
  groups = [g for _, g in sorted(a["revisions"].items()) if g["ratios"]]
  if not groups:
    return False
  for i, g in enumerate(groups):
    ax = fig.add_subplot(1, len(groups), i + 1)
    for b in _bins(a):
      pts = [dict(p, budget=p["L"]) for p in g["ratios"]]
      _band(ax, pts, f"bin {b}", key=lambda p, b=b: p["bins"]["oracle"][b])
    _axes(ax, f"{g['label']}: L:P per oracle bin, N={g['ratio_budget']} "
          "(Fig. 7)", xlabel="L (P = N / L)")
    ax.legend(fontsize=6)
  return True


def _compute_optimal(family, paper_figure):
  def draw(fig, a):
    fam = a["compute_optimal"].get(family)
    if not fam or not fam["kinds"]:
      return False
    ax = fig.add_subplot(1, 1, 1)
    if fam["baseline"]:
      _band(ax, a["methods"][fam["baseline"]]["points"],
            fam["baseline_label"], style="k-")
    for kind, k in sorted(fam["kinds"].items()):
      _band(ax, k["points"], f"compute-optimal ({kind} bins)")
      other = k.get("other_pool")
      if other and kind == "oracle":
        _band(ax, other["points"], f"compute-optimal ({kind}), cost <= B",
              style="--")
      if "difficulty_generations" in k:
        _band(ax, k["points"], f"compute-optimal ({kind}) + difficulty cost",
              style=":", shift=k["difficulty_generations"])
      for e in k["headline"]:
        if e["matched_budget"] is not None:
          ax.plot([e["matched_budget"], e["target_budget"]],
                  [e["baseline_accuracy"]["value"]] * 2, "k:", linewidth=0.8)
    oracle = ((a.get("oracle_verifier") or {}).get("compute_optimal")
              or {}).get(family)
    if oracle and "oracle" in oracle["kinds"]:
      _band(ax, oracle["kinds"]["oracle"]["points"],
            "compute-optimal, oracle verifier (oracle bins)", style="g-.")
    _axes(ax, f"Compute-optimal {family} vs baseline ({paper_figure})")
    ax.legend(fontsize=6)
    return True
  return draw


def _flops_matched(fig, a):
  f = a["flops_matched"]
  if not f:
    return False
  groups = _bins(a) + ["all"]
  headline = set(a["config"].get("headline_families") or ())
  families = sorted({fam for e in f["by_ratio"] for fam in e["families"]
                     if "compute_optimal" in e["families"][fam]
                     and (not headline or fam in headline)})
  if not families:
    return False
  for i, family in enumerate(families):
    for j, e in enumerate(f["by_ratio"]):
      ax = fig.add_subplot(len(families), len(f["by_ratio"]),
                           i * len(f["by_ratio"]) + j + 1)
      rows = e["families"][family]["compute_optimal"]["oracle"]
      for offset, (what, label) in enumerate(
          (("small", "small + test-time compute"), ("large", "large greedy"))):
        xs = [g + offset * 0.4 for g in range(len(groups))]
        accs = [rows[g][what] or {} for g in groups]  # {}: X unreadable
        nan = float("nan")
        vals = [x.get("value", nan) for x in accs]
        err = [[v - x["ci_low"] if x.get("ci_low") is not None else 0.0
                for v, x in zip(vals, accs)],
               [x["ci_high"] - v if x.get("ci_high") is not None else 0.0
                for v, x in zip(vals, accs)]]
        ax.bar(xs, vals, width=0.4, yerr=err, label=label, capsize=2)
      ax.set_xticks([g + 0.2 for g in range(len(groups))], groups)
      _axes(ax, f"{family}, R={e['R']:g}, X={e['budget']:.3g} (Fig. 9)",
            xlabel="oracle bin", log=False)
  fig.axes[0].legend(fontsize=6)
  return True


DRAWERS: dict[str, tuple[Callable[[Any, Mapping[str, Any]], bool],
                         tuple[float, float]]] = {
    "search_methods": (_search_methods, (6, 4)),
    "search_bins": (_search_bins, (16, 3.5)),
    "revisions": (_revisions, (11, 4)),
    "revisions_bins": (_revisions_bins, (6, 4)),
    "compute_optimal_search": (_compute_optimal("search", "Fig. 4"),
                               (6, 4)),
    "compute_optimal_revisions": (_compute_optimal("revisions", "Fig. 8"),
                                  (6, 4)),
    "flops_matched": (_flops_matched, (14, 7)),
}


def figures(analysis: Mapping[str, Any]) -> dict[str, bytes]:
  """name -> PNG bytes of every figure the analysis has data for."""
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  # pylint: enable=g-import-not-at-top
  out = {}
  for name, (draw, size) in DRAWERS.items():
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    if not draw(fig, analysis):
      continue
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    out[name] = buf.getvalue()
  return out
