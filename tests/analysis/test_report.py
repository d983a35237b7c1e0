"""End to end: `analyze` on synthetic records, then `write_report`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ttcjax.analysis import flops, report

N_PROBLEMS = 100
BUDGETS = [2 ** k for k in range(11)]  # 1 .. 1024 generations


def synthetic_study():
  """Problem i is easier the smaller i. Best-of-N solves 8% more problems
  per doubling of budget; beam search solves what best-of-N solves at 4x
  its budget; revisions L=4 beat parallel L=1 by 5%."""
  rng = np.random.default_rng(0)
  uids = [f"q{i:03d}" for i in range(N_PROBLEMS)]
  ease = np.linspace(0.95, 0.05, N_PROBLEMS)
  oracle = {u: list(rng.random(16) < e) for u, e in zip(uids, ease)}
  prm = {u: list(np.clip(e + 0.1 * rng.normal(size=16), 0, 1))
         for u, e in zip(uids, ease)}
  records = []

  def add(strategy, hparams, budget, solved):
    for i, u in enumerate(uids):
      records.append({
          "uid": u, "strategy": strategy, "hparams": hparams,
          "budget": budget, "generations": budget, "answer": "1",
          "correct": bool(i < solved), "policy_tokens": 50 * budget,
          "prompt_tokens": 20, "verifier_tokens": 70 * budget,
          "flops_policy": 1e8 * budget, "flops_verifier": 1e8 * budget})

  for b in BUDGETS:
    k = int(np.log2(b))
    for sel in ("weighted", "majority"):
      add("best_of_n", {"selection": sel, "aggregation": "last"}, b,
          8 * k - (sel == "majority"))
    add("beam", {"selection": "weighted", "aggregation": "last",
                 "beam_width": 4}, b, 8 * k + 16)
    for length in (1, 4, 16):
      if length <= b:
        add("revisions", {"selection": "weighted", "revision_length": length,
                          "chains": b // length,
                          "ratio": f"{length}:{b // length}"},
            b, 6 * k + 5 * (length == 4))
  large = {u: i < 50 for i, u in enumerate(uids)}
  flops_info = {"n_small": 1e9, "n_large": 14.2e9, "d_pretrain": 1e12}
  return records, oracle, prm, large, flops_info


CONFIG = {"n_bootstrap": 200, "seed": 1}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  inputs = synthetic_study()
  analysis = report.analyze(*inputs, config=CONFIG)
  workdir = tmp_path_factory.mktemp("study")
  written = report.write_report(workdir, analysis)
  return inputs, analysis, workdir, written


def test_results_json_is_byte_identical_across_reruns(study):
  _, _, workdir, _ = study
  again = report.analyze(*synthetic_study(), config=CONFIG)
  text = (workdir / "results.json").read_text()
  assert text == report.results_json(again)
  assert json.loads(text)["schema_version"] == 3


def test_report_and_figures_written(study):
  _, analysis, workdir, written = study
  text = (workdir / "report.md").read_text()
  for section in ("Difficulty bins", "Accuracy per method",
                  "Compute-optimal scaling", "sequential vs parallel",
                  "FLOPs-matched comparison"):
    assert section in text
  for name in ("search_methods", "search_bins", "revisions",
               "revisions_bins", "compute_optimal_search",
               "compute_optimal_revisions", "flops_matched"):
    png = workdir / "figures" / f"{name}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"figures/{name}.png" in text
  assert set(written) >= {"results.json", "report.md"}


def test_schema_names_every_top_level_key(study):
  _, analysis, _, _ = study
  for key in analysis:
    assert f"\n{key}:" in "\n" + report.RESULTS_SCHEMA, key
  assert report.RESULTS_SCHEMA in report.__doc__


def test_headline_ratio_is_the_constructed_four(study):
  _, analysis, _, _ = study
  fam = analysis["compute_optimal"]["search"]
  assert fam["baseline_label"] == "best-of-N weighted"
  # Beam at N is best-of-N at 4N, so the ratio is at most 4; it is below 4
  # where a CV training fold sees beam and best-of-N tie (both 0 in a hard
  # bin): the tie goes to the baseline, and beam's wins on the held-out
  # fold are not credited (issue 10, defect 5; ties used to go to 'beam').
  for kind in ("oracle", "predicted"):
    for e in fam["kinds"][kind]["headline"]:
      assert e["status"] == "matched", e
      assert 3.0 < e["ratio"] <= 4.0 + 1e-9
      assert e["matched_budget"] == pytest.approx(
          e["target_budget"] / e["ratio"])
  # Predicting difficulty costs 16 generations per problem: counted, the
  # saving shrinks (at most 16 / (4 + 16) at target 16).
  costed = fam["kinds"]["predicted"]["headline_with_difficulty_cost"]
  assert 0.5 < costed[0]["ratio"] <= 16 / 20 + 1e-9
  assert analysis["difficulty"]["cost"]["samples_per_problem"] == 16


def test_revisions_sections(study):
  _, analysis, _, _ = study
  (group,) = analysis["revisions"].values()
  assert [p["ratio"] for p in group["ratios"]] == ["1:1024", "4:256",
                                                   "16:64"]
  assert [p["budget"] for p in group["sequential"]] == [1, 4, 16]
  rev = analysis["compute_optimal"]["revisions"]
  top = rev["kinds"]["oracle"]["points"][-1]
  chosen = {v["chosen_label"] for v in top["bins"].values()}
  assert chosen <= {"revisions L=4 weighted", "revisions L=1 weighted",
                    "revisions L=16 weighted"}


def test_flops_matched_section(study):
  _, analysis, _, _ = study
  f = analysis["flops_matched"]
  assert f["size_ratio"] == pytest.approx(14.2)
  for entry in f["by_ratio"]:
    x = flops.flops_matched_budget(1e9, 14.2e9, 1e12, entry["R"] * 1e12)
    assert entry["budget"] == pytest.approx(x)
    search = entry["families"]["search"]["compute_optimal"]["oracle"]
    assert set(search) == {"all", "1", "2", "3", "4", "5"}
    assert search["all"]["large"]["value"] == pytest.approx(0.5)
    assert search["all"]["status"] == "interpolated"


def test_study_imports_without_matplotlib_or_tensorflow():
  code = ("import sys; import ttcjax.analysis.report, ttcjax.analysis.results; "
          "bad = [m for m in ('matplotlib', 'tensorflow', 'seqio', 'gin') "
          "if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
