"""`analyze`'s controls (issue 10): the paper's headline pools, cut-candidate
rates, verifier AUCs, the oracle-verifier section and the report's warnings,
on synthetic records whose answers are known by construction."""

import numpy as np
import pytest

from ttcjax.analysis import report, stats, verifier_quality

UIDS = [f"q{i:02d}" for i in range(20)]
BUDGETS = (4, 16)
WEIGHTED = {"selection": "weighted", "aggregation": "last"}


def record(uid, strategy, hparams, budget, correct, cands=None):
  cands = cands if cands is not None else [
      {"answer": "1", "score": 0.5, "finished": True, "correct": correct}]
  return {"uid": uid, "strategy": strategy, "hparams": hparams,
          "budget": budget, "generations": budget, "correct": bool(correct),
          "answer": "1", "candidates": cands, "policy_tokens": 10 * budget,
          "prompt_tokens": 5, "verifier_tokens": 10 * budget,
          "flops_policy": 1e6 * budget, "flops_verifier": 1e6 * budget}


def study(majority_wins=True, cut_beam=False):
  """Majority voting and DVTS solve everything; the paper's methods solve
  the first half (weighted best-of-N) or first 3/4 (beam). Difficulty
  samples: problem i has a pass rate falling with i."""
  recs = []
  for b in BUDGETS:
    for i, u in enumerate(UIDS):
      recs.append(record(u, "best_of_n", WEIGHTED, b, i < 10))
      recs.append(record(u, "best_of_n", dict(WEIGHTED, selection="majority"),
                         b, majority_wins or i < 5))
      recs.append(record(u, "dvts", dict(WEIGHTED, beam_width=4), b, True))
      beam_cands = [{"answer": "1", "score": 0.5, "finished": not cut_beam,
                     "correct": i < 15}] * 4
      recs.append(record(u, "beam", dict(WEIGHTED, beam_width=4), b, i < 15,
                         beam_cands))
  rng = np.random.default_rng(0)
  oracle, prm = {}, {}
  for i, u in enumerate(UIDS):
    correct = list(rng.random(8) < 1 - i / 20)
    oracle[u] = correct
    # The PRM ranks perfectly within a problem (correct ones score higher).
    prm[u] = [0.5 + 0.4 * c + 0.01 * j for j, c in enumerate(correct)]
  return recs, oracle, prm


CONFIG = {"n_bootstrap": 50, "n_bins": 2, "target_budgets": (16.0,)}


def test_headline_pool_excludes_majority_and_dvts():
  recs, oracle, prm = study()
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  co = a["compute_optimal"]
  assert co["search"]["headline_family"]
  assert not co["search_all"]["headline_family"]
  labels = {a["methods"][m]["label"] for m in co["search"]["methods"]}
  assert labels == {"best-of-N weighted", "beam weighted"}
  for kind in ("oracle", "predicted"):
    for p in co["search"]["kinds"][kind]["points"]:
      # Easy bin: a tie, so the baseline; hard bin: beam. Never majority.
      assert [p["bins"][b]["chosen_label"] for b in ("1", "2")] == [
          "best-of-N weighted", "beam weighted"]
      assert p["accuracy"]["value"] == pytest.approx(0.75)
    # The second pool may pick majority voting / DVTS, and says what it is.
    top = co["search_all"]["kinds"][kind]["points"][-1]
    assert top["accuracy"]["value"] == pytest.approx(1.0)
    assert "not the paper's pool" in co["search_all"]["label"]
  assert {p["pool"] for p in (co["search"]["kinds"]["oracle"],
                              co["search"]["kinds"]["oracle"]["other_pool"])
          } == {"equal", "at_most"}
  text = report.report_markdown(a)
  assert "### search (headline;" in text
  assert "### search_all (second pool, not a headline;" in text


def test_cut_rate_over_threshold_is_in_the_first_lines():
  recs, oracle, prm = study(cut_beam=True)
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  u = a["unfinished"]
  beam = [m for m in u["by_method"].values() if m["label"].startswith("beam")]
  assert beam[0]["rate"] == 1.0 and beam[0]["candidates"] == 160
  assert {o["label"] for o in u["over_threshold"]} == {"beam weighted"}
  first = report.report_markdown(a).splitlines()[2:2 + len(a["warnings"])]
  assert any("cut more than 1%" in line and "beam weighted" in line
             for line in first)
  clean = report.analyze(*study(), config=CONFIG)
  assert not clean["unfinished"]["over_threshold"]
  assert not any("cut" in w for w in clean["warnings"])
  # These records carry no reason (written before reasons were recorded).
  assert beam[0]["by_reason"] == {"unknown": 160}


def test_cut_candidates_are_counted_per_reason():
  recs, oracle, prm = study()
  for r in recs:
    if r["strategy"] == "beam":  # 3 of 4 cut: 2 by the cache, 1 by the cap
      r["candidates"] = [dict(r["candidates"][0], finished=False, cut=why)
                         for why in ("cache_end", "cache_end", "token_cap")
                         ] + [r["candidates"][0]]
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  beam = [m for m in a["unfinished"]["by_method"].values()
          if m["label"].startswith("beam")][0]
  assert beam["by_reason"] == {"cache_end": 80, "token_cap": 40}
  assert beam["unfinished"] == 120 and beam["rate"] == 0.75
  worst = a["unfinished"]["over_threshold"][0]
  assert worst["by_reason"] == {"cache_end": 40, "token_cap": 20}
  assert any("75.0% (cache_end 40, token_cap 20)" in w
             for w in a["warnings"])
  assert "cache_end 80, token_cap 40" in report.report_markdown(a)


def test_direction_warning_points_at_committed_results():
  recs, oracle, prm = study()  # best-of-N weighted is flat in N
  a = report.analyze(recs, oracle, prm, config=dict(
      CONFIG, notice="smoke preset: wiring only"))
  assert a["direction"]["shown"] is False
  assert a["warnings"][0] == "smoke preset: wiring only"
  assert "docs/results/arith_cpu/" in a["warnings"][1]
  lines = report.report_markdown(a).splitlines()
  assert lines[2] == "**smoke preset: wiring only**"


def brute_auc(scores, labels):
  pos = [s for s, y in zip(scores, labels) if y]
  neg = [s for s, y in zip(scores, labels) if not y]
  total = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return total / (len(pos) * len(neg))


def test_auc_rows_match_brute_force_and_resample_problems():
  rng = np.random.default_rng(3)
  scores = [list(np.round(rng.random(6), 1)) for _ in range(7)]
  labels = [list(rng.random(6) < 0.5) for _ in range(7)]
  labels[0] = [True] * 6  # one class only: out of the within mean
  weights = stats.bootstrap_weights(7, 30, 1)
  across, within, both = verifier_quality.auc_rows(scores, labels, weights)
  flat_s = sum(scores, [])
  flat_y = sum(labels, [])
  assert across[0] == pytest.approx(brute_auc(flat_s, flat_y))
  per = [brute_auc(s, y) for s, y in zip(scores, labels) if 0 < sum(y) < 6]
  assert both == len(per)
  assert within[0] == pytest.approx(np.mean(per))
  # A resample row = the problems repeated by their counts.
  row = weights[5].astype(int)
  rep_s = sum([s * c for s, c in zip(scores, row)], [])
  rep_y = sum([y * c for y, c in zip(labels, row)], [])
  assert across[5] == pytest.approx(brute_auc(rep_s, rep_y))


def test_verifier_section_within_vs_across():
  recs, oracle, prm = study()
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  q = a["verifier"]["prm"]
  assert q["within"]["value"] == pytest.approx(1.0)  # perfect by design
  assert q["n_candidates"] == 8 * len(UIDS)
  assert q["within"]["ci_low"] is not None
  assert set(q["bins"]) == {"oracle", "predicted"}
  assert set(q["bins"]["oracle"]) == {"1", "2"}
  assert "orm" not in a["verifier"]
  with pytest.raises(ValueError, match="same candidates"):
    report.analyze(recs, oracle, {u: s[:-1] for u, s in prm.items()},
                   config=CONFIG)


def test_orm_auc_from_parallel_revision_records():
  recs, oracle, prm = study()
  hp = {"selection": "weighted", "revision_length": 1, "chains": 4,
        "ratio": "1:4", "revision_context": 4}
  for i, u in enumerate(UIDS):
    cands = [{"answer": "1", "score": 0.9 if j < 2 else 0.1,
              "finished": True, "correct": j < 2} for j in range(4)]
    recs.append(record(u, "revisions", hp, 4, True, cands))
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  orm = a["verifier"]["orm"]
  assert orm["across"]["value"] == pytest.approx(1.0)
  assert orm["within_problems"] == len(UIDS)
  assert "N=4" in orm["source"]


def test_oracle_verifier_records_are_their_own_family():
  recs, oracle, prm = study()
  oracle_recs = []
  for b in BUDGETS:
    for i, u in enumerate(UIDS):
      oracle_recs.append(record(u, "best_of_n", WEIGHTED, b, i < 18))
      oracle_recs.append(record(u, "beam", dict(WEIGHTED, beam_width=4), b,
                                i < 19))
  without = report.analyze(recs, oracle, prm, config=CONFIG)
  a = report.analyze(recs, oracle, prm, config=CONFIG,
                     oracle_records=oracle_recs)
  assert without["oracle_verifier"] is None
  o = a["oracle_verifier"]
  # The learned PRM's sections are untouched by the oracle's records.
  for key in ("methods", "compute_optimal", "unfinished", "verifier"):
    assert a[key] == without[key], key
  assert set(o["compute_optimal"]) == {"search", "search_all"}
  assert not any(f["headline_family"] for f in o["compute_optimal"].values())
  top = o["compute_optimal"]["search"]["kinds"]["oracle"]["points"][-1]
  assert top["in_sample_accuracy"] == pytest.approx(0.95)
  assert 0.9 <= top["accuracy"]["value"] <= 0.95  # CV: one fold ties
  bon = [m for m in o["methods"].values() if m["label"] ==
         "best-of-N weighted"][0]
  assert bon["points"][0]["accuracy"]["value"] == pytest.approx(0.9)
  assert set(bon["points"][0]["bins"]["oracle"]) == {"1", "2"}
  text = report.report_markdown(a)
  assert "## Oracle-verifier control" in text


def test_results_with_every_control_are_byte_identical_across_reruns():
  def once():
    recs, oracle, prm = study(cut_beam=True)
    oracle_recs = [record(u, "beam", dict(WEIGHTED, beam_width=4), b, True)
                   for b in BUDGETS for u in UIDS]
    return report.results_json(report.analyze(
        recs, oracle, prm, config=CONFIG, oracle_records=oracle_recs))
  assert once() == once()


def test_beam_minus_baseline_per_bin_is_a_paired_interval():
  recs, oracle, prm = study()
  # Beam alone at 64: no baseline cell there, so counted, not compared.
  recs += [record(u, "beam", dict(WEIGHTED, beam_width=4), 64, True)
           for u in UIDS]
  a = report.analyze(recs, oracle, prm, config=CONFIG)
  c = a["comparisons"]
  assert c["baseline_label"] == "best-of-N weighted"
  assert c["budgets_without_baseline"] == 1
  assert [r["budget"] for r in c["rows"]] == [4, 16]
  bins = a["difficulty"]["oracle"]["assignment"]
  hard = [i for i, u in enumerate(UIDS) if bins[u] == 2]
  assert len(hard) == 10
  for row in c["rows"]:
    # Beam solves i < 15, best-of-N i < 10: the difference is 1 on 10..14.
    assert row["difference"]["value"] == pytest.approx(0.25)
    # Paired: every problem's difference is >= 0, so is every resample's.
    assert row["difference"]["ci_low"] >= 0
    diff = np.array([1.0 if 10 <= i < 15 else 0.0 for i in range(20)])
    w = stats.bootstrap_weights(20, CONFIG["n_bootstrap"], 0)
    want = stats.summarize(stats.weighted_mean(w[:, hard], diff[hard]))
    assert row["bins"]["oracle"]["2"] == pytest.approx(want)
  text = report.report_markdown(a)
  assert "## Compared methods vs the baseline per bin" in text
  assert "at a budget the baseline lacks" in text
