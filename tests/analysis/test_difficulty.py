"""Tests for difficulty binning and the cost of predicted difficulty."""

import numpy as np
import pytest

from ttcjax.analysis import difficulty


def test_bins_balanced_and_bin_one_easiest():
  rng = np.random.default_rng(0)
  samples = {f"q{i:02d}": list(rng.random(8) < rng.random())
             for i in range(23)}
  bins = difficulty.oracle_bins(samples)
  sizes = np.bincount(list(bins.values()), minlength=6)[1:]
  assert sizes.sum() == 23 and sizes.max() - sizes.min() <= 1
  p1 = difficulty.pass_at_1(samples)
  for b in range(1, 5):  # everything in bin b is at least as easy as b + 1
    easier = min(p1[u] for u in bins if bins[u] == b)
    harder = max(p1[u] for u in bins if bins[u] == b + 1)
    assert easier >= harder


def test_ties_broken_by_uid_deterministically():
  values = {f"u{i}": 0.5 for i in range(10)}
  bins = difficulty.quantile_bins(values, n_bins=5)
  assert [bins[f"u{i}"] for i in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
  shuffled = dict(reversed(list(values.items())))
  assert difficulty.quantile_bins(shuffled, n_bins=5) == bins
  hashed = difficulty.quantile_bins(values, n_bins=5, tie_break="hash")
  assert hashed == difficulty.quantile_bins(shuffled, 5, tie_break="hash")
  assert sorted(hashed.values()) == sorted(bins.values())
  # A tie group straddling an edge: ranks decide, so bins stay balanced.
  values = {"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.0, "f": 0.0}
  bins = difficulty.quantile_bins(values, n_bins=2)
  assert bins == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2, "f": 2}


def test_predicted_bins_use_mean_score():
  scores = {"easy": [0.9, 0.8], "mid": [0.5, 0.5], "hard": [0.1, 0.0]}
  assert difficulty.predicted_bins(scores, n_bins=3) == {
      "easy": 1, "mid": 2, "hard": 3}
  with pytest.raises(ValueError, match="cannot fill"):
    difficulty.predicted_bins(scores, n_bins=5)
  with pytest.raises(ValueError, match="'mid'"):
    difficulty.predicted_bins({"mid": []}, n_bins=1)


def test_agreement_and_summary():
  values = {f"u{i}": i / 10 for i in range(10)}
  bins = difficulty.quantile_bins(values, n_bins=5)
  a = difficulty.agreement(bins, bins, values, values, 5)
  assert a["same_bin"] == 1.0 and a["spearman"] == pytest.approx(1.0)
  assert np.trace(np.array(a["confusion"])) == 10
  summary = difficulty.bin_summary(values, bins, 5)
  assert summary["1"] == {"n": 2, "min": 0.8, "mean": pytest.approx(0.85),
                          "max": 0.9}


def test_difficulty_cost_totals():
  cost = difficulty.difficulty_cost({"a": 4, "b": 4, "c": 16},
                                    policy_flops_per_sample=10.0,
                                    verifier_flops_per_sample=2.0)
  assert cost["generations_total"] == 24 and cost["samples_per_problem"] == 8
  assert cost["policy_flops_total"] == 240
  assert cost["verifier_flops_total"] == 48
  assert cost["flops_total"] == 288 and cost["flops_per_problem"] == 96
  assert difficulty.difficulty_cost([2, 2])["flops_total"] is None


def test_samples_from_records():
  def rec(uid, sel, budget=2):
    return {"uid": uid, "strategy": "best_of_n", "budget": budget,
            "hparams": {"selection": sel},
            "candidates": [{"correct": True, "score": 0.9},
                           {"correct": False, "score": 0.2}]}
  records = [rec("a", "weighted"), rec("a", "majority"), rec("b", "weighted"),
             rec("b", "weighted", budget=4)]
  correct, scores = difficulty.samples_from_records(records, budget=2)
  assert correct == {"a": [True, False], "b": [True, False]}
  assert scores["a"] == [0.9, 0.2]
  with pytest.raises(ValueError, match="no best_of_n"):
    difficulty.samples_from_records(records, budget=8)
