"""Compute-optimal selection, CV, efficiency ratios, FLOPs matching and the
bootstrap, on synthetic records whose answers are known by construction."""

import numpy as np
import pytest

from ttcjax.analysis import compute_optimal as co
from ttcjax.analysis import flops, flops_matched, stats

BEAM = {"strategy": "beam", "hparams": {"beam_width": 4,
                                        "selection": "weighted"}}
BON = {"strategy": "best_of_n", "hparams": {"selection": "weighted"}}


def records_of(spec, budget, correct, uids):
  return [{"uid": u, "strategy": spec["strategy"], "hparams": spec["hparams"],
           "budget": budget, "generations": budget, "correct": bool(c),
           "policy_tokens": 10 * budget, "prompt_tokens": 5,
           "verifier_tokens": 15 * budget, "flops_policy": 1e6 * budget,
           "flops_verifier": 2e6 * budget} for u, c in zip(uids, correct)]


def setup_bins(n_bins=5, per_bin=20):
  uids = [f"q{i:03d}" for i in range(n_bins * per_bin)]
  bins = {b: np.arange((b - 1) * per_bin, b * per_bin)
          for b in range(1, n_bins + 1)}
  folds = {b: co.cv_folds([uids[i] for i in cols], seed=0)
           for b, cols in bins.items()}
  return uids, bins, folds


def test_build_cells_groups_methods_and_skips_incomplete():
  uids = ["a", "b"]
  rev = lambda n, l: {"strategy": "revisions", "hparams": {
      "revision_length": l, "chains": n // l, "ratio": f"{l}:{n // l}"}}
  records = (records_of(rev(4, 2), 4, [1, 0], uids) +
             records_of(rev(8, 2), 8, [1, 1], uids) +
             records_of(BON, 4, [0], uids[:1]) +
             records_of(BON, 8, [1, 1, 1], uids + ["other"]))
  cells, info = co.build_cells(records, uids)
  methods = sorted({c.method for c in cells})
  assert len(methods) == 2  # revisions L=2 at N=4 and 8 is one method
  assert info["records_outside_problems"] == 1
  assert info["incomplete_cells"] == [{"method": co.method_id(
      "best_of_n", BON["hparams"]), "budget_n": 4, "problems": 1,
                                       "needed": 2}]
  rev_cells = [c for c in cells if c.strategy == "revisions"]
  assert [c.budget for c in rev_cells] == [4.0, 8.0]
  assert rev_cells[0].cost["flops"] == 12e6
  labels = co.method_labels(cells)
  assert labels[co.method_id("best_of_n", BON["hparams"])] == (
      "best-of-N weighted")
  with pytest.raises(ValueError, match="disagree"):
    co.build_cells(records_of(BON, 4, [1], ["a"]) +
                   records_of(BON, 4, [0], ["a"]), ["a"])


def test_method_better_only_on_hard_bins_is_chosen_only_there():
  uids, bins, folds = setup_bins()
  rng = np.random.default_rng(1)
  beam, bon = np.zeros(len(uids)), np.zeros(len(uids))
  for b, cols in bins.items():
    base = rng.random(cols.size) < 0.5
    extra = base | (rng.random(cols.size) < 0.5)  # a superset ...
    for f in (0, 1):  # ... strictly larger on each fold
      first = np.nonzero(folds[b] == f)[0][0]
      extra[first], base[first] = True, False
    better, worse = (beam, bon) if b >= 4 else (bon, beam)
    better[cols], worse[cols] = extra, base
    for f in (0, 1):  # dominance strict on each fold
      assert extra[folds[b] == f].sum() > base[folds[b] == f].sum()
  records = records_of(BEAM, 16, beam, uids) + records_of(BON, 16, bon, uids)
  cells, _ = co.build_cells(records, uids)
  weights = stats.bootstrap_weights(len(uids), 0, 0)
  opt = co.compute_optimal(cells, bins, folds, weights)
  beam_id = co.method_id("beam", BEAM["hparams"])
  bon_id = co.method_id("best_of_n", BON["hparams"])
  for b in bins:
    want = beam_id if b >= 4 else bon_id
    assert opt.choices[0][b]["chosen"] == want
    assert opt.choices[0][b]["fold_choices"] == [want, want]
  best = np.maximum(beam, bon).mean()
  assert opt.rows[0, 0] == pytest.approx(best)
  assert opt.in_sample[0] == pytest.approx(best)


def test_cv_does_not_credit_a_method_that_wins_on_one_fold_by_chance():
  uids, bins, folds = setup_bins(n_bins=1, per_bin=40)
  fold = folds[1]
  f0, f1 = np.nonzero(fold == 0)[0], np.nonzero(fold == 1)[0]
  lucky, steady = np.zeros(40), np.zeros(40)
  lucky[f0] = 1  # all of fold 0 ...
  lucky[f1[:6]] = 1  # ... and 30% of fold 1: 65% in-sample
  steady[f0[:12]] = steady[f1[:12]] = 1  # 60% on each fold
  records = (records_of(BEAM, 16, lucky, uids) +
             records_of(BON, 16, steady, uids))
  cells, _ = co.build_cells(records, uids)
  opt = co.compute_optimal(cells, bins, folds,
                           stats.bootstrap_weights(40, 0, 0))
  lucky_id = co.method_id("beam", BEAM["hparams"])
  steady_id = co.method_id("best_of_n", BON["hparams"])
  choice = opt.choices[0][1]
  assert choice["chosen"] == lucky_id  # in-sample selection is fooled ...
  assert opt.in_sample[0] == pytest.approx(0.65)
  # ... CV scores fold 1 with lucky (chosen on fold 0) and fold 0 with
  # steady (chosen on fold 1): (6 + 12) / 40, below steady's true 0.6.
  assert choice["fold_choices"] == [steady_id, lucky_id]
  assert opt.rows[0, 0] == pytest.approx(18 / 40)


def test_ties_go_to_cheaper_then_first_method():
  correct = np.array([[1, 1], [0, 0], [1, 1], [0, 0]], float)
  held, choice = co.cv_select(correct, np.array([0, 1, 0, 1]),
                              stats.bootstrap_weights(4, 0, 0))
  assert choice.tolist() == [[0, 0]] and held[0] == 2


def test_at_most_pool_prefers_the_cheaper_cell_on_ties():
  uids, bins, folds = setup_bins(n_bins=1, per_bin=10)
  solved = np.arange(10) < 5
  records = (records_of(BON, 4, solved, uids) +
             records_of(BON, 16, solved, uids) +
             records_of(BEAM, 16, np.arange(10) < 2, uids))
  cells, _ = co.build_cells(records, uids)
  weights = stats.bootstrap_weights(10, 0, 0)
  opt = co.compute_optimal(cells, bins, folds, weights, pool="at_most")
  assert opt.budgets.tolist() == [4.0, 16.0]
  assert opt.choices[1][1]["chosen_budget"] == 4.0
  equal = co.compute_optimal(cells, bins, folds, weights, pool="equal")
  assert equal.choices[1][1]["chosen_budget"] == 16.0
  assert equal.rows[0].tolist() == opt.rows[0].tolist() == [0.5, 0.5]


def test_efficiency_ratio_on_constructed_curves():
  budgets = np.array([1.0, 4, 16, 64, 256, 1024])
  base = 0.1 * np.log2(budgets)[None]
  opt = base + 0.25  # compute-optimal = baseline at 2**2.5 x the budget
  for target in (16, 64, 256):
    e = co.efficiency(budgets, base, budgets, opt, target)
    assert e["status"] == "matched"
    assert e["ratio"] == pytest.approx(2 ** 2.5)
    assert e["matched_budget"] == pytest.approx(target / 2 ** 2.5)
  worse = co.efficiency(budgets, base, budgets, base - 0.5, 64)
  assert worse["status"] == "not_matched" and worse["ratio"] is None
  assert worse["ratio_upper_bound"] == 64 / 1024
  early = co.efficiency(budgets, base, budgets, base + 1.0, 16)
  assert early["status"] == "matched_at_smallest_budget"
  assert early["ratio"] == 16
  off = co.efficiency(budgets, base, budgets, opt, 4096)
  assert off["status"] == "target_not_measured"


def test_efficiency_ratio_end_to_end_from_records():
  uids = [f"q{i:03d}" for i in range(100)]
  budgets = [2 ** k for k in range(9)]
  records = []
  for b in budgets:  # baseline: 10% more problems per doubling; beam 4x
    k = int(np.log2(b))
    records += records_of(BON, b, np.arange(100) < 10 * k, uids)
    records += records_of(BEAM, b, np.arange(100) < 10 * k + 20, uids)
  cells, _ = co.build_cells(records, uids)
  _, bins, folds = setup_bins()
  weights = stats.bootstrap_weights(100, 200, 0)
  opt = co.compute_optimal(cells, bins, folds, weights)
  bud, rows = co.curve(cells, co.method_id("best_of_n", BON["hparams"]),
                       weights, np.arange(100))
  for target in (16, 64):
    e = co.efficiency(bud, rows, opt.budgets, opt.rows, target)
    assert e["status"] == "matched" and e["ratio"] == pytest.approx(4.0)
    # Paired resamples: beam at b/4 and the baseline at b solve the same
    # problems, so every resample gives 4 too.
    assert e["ratio_ci_low"] == pytest.approx(4.0)
    assert e["ratio_ci_high"] == pytest.approx(4.0)


def test_bootstrap_ci_covers_true_mean():
  rng = np.random.default_rng(3)
  covered = 0
  for trial in range(40):
    data = (rng.random(200) < 0.3).astype(float)
    rows = stats.weighted_mean(stats.bootstrap_weights(200, 400, trial),
                               data)
    s = stats.summarize(rows)
    assert s["value"] == data.mean()
    covered += s["ci_low"] <= 0.3 <= s["ci_high"]
  assert covered >= 34  # 95% nominal; binomial(40, .95) >= 34 w.p. > 0.99
  same = stats.bootstrap_weights(10, 5, 7)
  assert np.array_equal(same, stats.bootstrap_weights(10, 5, 7))
  assert np.all(same[0] == 1) and np.all(same.sum(axis=1) == 10)


def test_log_interp_and_first_reach():
  budgets = [4.0, 16.0, 64.0]
  curves = np.array([[0.2, 0.4, 0.6]])
  assert stats.log_interp(budgets, curves, 8.0)[0] == pytest.approx(0.3)
  assert stats.log_interp(budgets, curves, 16.0)[0] == pytest.approx(0.4)
  assert np.isnan(stats.log_interp(budgets, curves, 128.0)[0])
  out, status = stats.first_reach(budgets, np.array([[0.2, 0.4, 0.6],
                                                     [0.5, 0.4, 0.6],
                                                     [0.1, 0.1, 0.1]]),
                                  np.array([0.5, 0.45, 0.5]))
  assert out[0] == pytest.approx(32.0) and status[0] == 0
  assert out[1] == 4.0 and status[1] == 1
  assert np.isinf(out[2]) and status[2] == 2


def test_flops_matched_budget_and_reading():
  info = flops_matched.matched_budgets(1e9, 14.2e9, 1e12)
  assert info["size_ratio"] == pytest.approx(14.2)
  for entry in info["by_ratio"]:
    assert entry["budget"] == flops.flops_matched_budget(
        1e9, 14.2e9, 1e12, entry["R"] * 1e12)
  x = {e["R"]: e["budget"] for e in info["by_ratio"]}
  assert x[22.0] < x[0.79] < x[0.16]
  budgets = np.array([4.0, 16.0, 64.0])
  rows = np.array([[0.2, 0.4, 0.6]])
  v, meta = flops_matched.read_at(budgets, rows, 32.0, "interpolate")
  assert v[0] == pytest.approx(0.5) and meta["status"] == "interpolated"
  v, meta = flops_matched.read_at(budgets, rows, 32.0, "floor")
  assert v[0] == 0.4 and meta["budget_used"] == 16.0
  v, meta = flops_matched.read_at(budgets, rows, 100.0, "interpolate")
  assert np.isnan(v[0]) and meta["status"] == "beyond_measured"
  out = flops_matched.compare(budgets, {"1": rows}, {"1": np.array([0.45])},
                              32.0)
  assert out["1"]["difference"]["value"] == pytest.approx(0.05)
  assert out["1"]["small_floor"]["value"] == 0.4


def test_tie_goes_to_the_baseline_not_the_first_method_id():
  # Issue 10, defect 5: in a hard bin both methods solve nothing; the tie
  # used to go to 'beam' (its id sorts first) and now goes to the baseline.
  uids, bins, folds = setup_bins(n_bins=1, per_bin=10)
  records = (records_of(BON, 4, np.zeros(10), uids) +
             records_of(BEAM, 4, np.zeros(10), uids))
  cells, _ = co.build_cells(records, uids)
  weights = stats.bootstrap_weights(10, 20, 0)
  base = co.method_id("best_of_n", BON["hparams"])
  for pool in co.POOLS:
    opt = co.compute_optimal(cells, bins, folds, weights, pool, base)
    choice = opt.choices[0][1]
    assert choice["chosen"] == base
    assert choice["fold_choices"] == [base, base]
  # Without a baseline the method id still breaks the tie deterministically.
  opt = co.compute_optimal(cells, bins, folds, weights, "equal")
  assert opt.choices[0][1]["chosen"] == co.method_id("beam", BEAM["hparams"])


def test_tie_goes_to_the_cheaper_cell_before_the_baseline():
  uids, bins, folds = setup_bins(n_bins=1, per_bin=10)
  solved = np.arange(10) < 5
  records = (records_of(BEAM, 4, solved, uids) +
             records_of(BON, 16, solved, uids))
  cells, _ = co.build_cells(records, uids)
  weights = stats.bootstrap_weights(10, 0, 0)
  base = co.method_id("best_of_n", BON["hparams"])
  opt = co.compute_optimal(cells, bins, folds, weights, "at_most", base)
  assert opt.choices[1][1]["chosen"] == co.method_id("beam", BEAM["hparams"])
  assert opt.choices[1][1]["chosen_budget"] == 4.0


def test_in_pool_specs_and_unfinished_counts():
  uids = ["a", "b"]
  recs = records_of(BON, 2, [1, 0], uids)
  recs[0]["candidates"] = [{"finished": True}, {"finished": False}]
  recs[1]["candidates"] = [{"finished": False, "cut": "token_cap"},
                           {"finished": False, "cut": "cache_end"}]
  recs[1]["answer"] = None
  recs[0]["answer"] = "3"
  majority = {"strategy": "best_of_n", "hparams": {"selection": "majority"}}
  recs += records_of(majority, 2, [1, 1], uids)
  cells, _ = co.build_cells(recs, uids)
  weighted = [c for c in cells if co.in_pool(c, [BON])]
  assert len(weighted) == 1
  assert weighted[0].unfinished == {"candidates": 4, "unfinished": 3,
                                    "rate": 0.75, "no_answer_rate": 0.5,
                                    "by_reason": {"cache_end": 1,
                                                  "token_cap": 1,
                                                  "unknown": 1}}
  assert len([c for c in cells if co.in_pool(c, ["best_of_n"])]) == 2
  other = [c for c in cells if c not in weighted][0]
  assert other.unfinished["rate"] is None  # records without candidates
