"""Study experiments: gin selection, overrides, the study over checkpoints."""

import dataclasses
import json
import os

import gin
import pytest

from ttcjax import checkpoint, models, testing
from ttcjax.experiments import preflight, studies, sweep_runner
from ttcjax.main import configure, gin_utils
from ttcjax.experiments import stages
from ttcjax.experiments import embedded_study
from ttcjax.analysis import results as analysis_lib
from ttcjax.tasks import arithmetic

TINY = models.ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=256)


@pytest.fixture(autouse=True)
def _registered():
  configure.register()
  yield
  gin.clear_config()  # unlocks it for the next module's registrations


def test_preset_files_select_their_preset():
  for name in ("smoke", "arith_cpu", "micro"):
    gin_utils.parse([f"experiments/{name}.gin"], [])
    spec = gin_utils.build(studies.experiment)
    assert spec == studies.ArithStudy(preset=name)
    assert [s.name for s in spec.stages()][-1] == "analysis"


def test_overrides_reach_config_and_sweep():
  gin_utils.parse(["experiments/micro.gin"], [
      "study.ArithStudy.overrides = {'seed': 7, 'test_problems': 3}",
      "study.ArithStudy.sweep = {'budgets': [2, 4]}"])
  spec = gin_utils.build(studies.experiment)
  assert spec.config().seed == 7 and spec.config().test_problems == 3
  assert spec.sweep_config().budgets == (2, 4)
  base = studies.ArithStudy(preset="micro").stages()
  by_name = {s.name: s for s in base}
  changed = {s.name: s for s in spec.stages()}
  assert (stages.stage_hashes(list(by_name.values()))["search_sweep"] !=
          stages.stage_hashes(list(changed.values()))["search_sweep"])


def test_bad_experiments_fail_before_any_work():
  with pytest.raises(ValueError, match="presets are"):
    studies.ArithStudy(preset="huge")
  with pytest.raises(ValueError, match=r"unknown fields \['tset_problems'\]"):
    studies.ArithStudy(preset="micro", overrides={"tset_problems": 3})
  with pytest.raises(ValueError, match=r"unknown fields \['budget'\]"):
    studies.ArithStudy(preset="micro", sweep={"budget": (2,)})
  gin_utils.parse(["experiments/micro.gin"],
                  ["study.experiment.spec = @search.ArithmeticConfig()"])
  with pytest.raises(gin_utils.GinConfigError, match="ArithStudy"):
    gin_utils.build(studies.experiment)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt")
  checkpoint.save(root / "policy", testing.numpy_params(TINY, 0), TINY)
  large = TINY.replace(d_model=64, d_ff=128)
  checkpoint.save(root / "large", testing.numpy_params(large, 2), large)
  prm = TINY.replace(reward_head=True)
  checkpoint.save(root / "prm", testing.numpy_params(prm, 1), prm)
  return root


def _search_run(root, strategies=None):
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(task="arithmetic", num_problems=6,
                                        seed=0),
      checkpoints=sweep_runner.Checkpoints(policy=str(root / "policy"),
                                         prm=str(root / "prm")),
      strategies=strategies or [
          sweep_runner.StrategySpec(strategy="best_of_n", budgets=[2, 4],
                                  selections=["weighted", "majority"]),
          sweep_runner.StrategySpec(strategy="beam", budgets=[4],
                                  grid={"beam_width": [2]},
                                  base={"max_rounds": 3})],
      max_new_tokens=12, problems_per_batch=3)


def test_search_study_needs_weighted_best_of_n(checkpoints):
  beam_only = [sweep_runner.StrategySpec(strategy="beam", budgets=[4])]
  with pytest.raises(ValueError, match="best_of_n StrategySpec"):
    studies.SearchStudy(search=_search_run(checkpoints, beam_only))
  with pytest.raises(ValueError, match="difficulty_samples=1"):
    studies.SearchStudy(search=_search_run(checkpoints),
                          difficulty_samples=1)
  with pytest.raises(ValueError, match="pretrain_tokens"):
    studies.SearchStudy(search=_search_run(checkpoints),
                          large_policy=str(checkpoints / "large"))


def test_search_study_end_to_end(checkpoints, tmp_path):
  spec = studies.SearchStudy(
      search=_search_run(checkpoints),
      large_policy=str(checkpoints / "large"), pretrain_tokens=10_000,
      analysis=analysis_lib.AnalysisConfig(n_bins=2, n_bootstrap=20,
                                           target_budgets=(2.0, 4.0)))
  assert [s.name for s in spec.stages()] == [
      "search_sweep", "difficulty_samples", "large_eval", "analysis"]
  work = tmp_path / "study"
  studies.run(spec, work)
  with open(work / "results.json") as f:
    results = json.load(f)
  assert os.path.exists(work / "report.md")
  assert results["problems"]["n"] == 6
  fm = results["flops_matched"]
  assert fm["n_small"] == TINY.num_params()
  assert fm["n_large"] == TINY.replace(d_model=64, d_ff=128).num_params()
  large = stages.read_json(work / "large_eval" / "results.json")
  assert sorted(large) == [f"arith-0-{i}" for i in range(6)]
  # Greedy: one candidate per problem, at temperature 0.
  recs = embedded_study.read_jsonl(work / "large_eval" / "records.jsonl")
  assert {r["budget"] for r in recs} == {1} and len(recs) == 6
  # Difficulty: a draw of its own (issue 10), 4 samples per problem.
  draw = embedded_study.read_jsonl(work / "difficulty_samples" /
                                   "records.jsonl")
  assert len(draw) == 6 and {r["budget"] for r in draw} == {4}
  assert results["difficulty"]["oracle"]["samples_per_problem"] == 4
  assert results["difficulty"]["cost"]["flops_source"] == "flops_info"
  assert results["verifier"]["prm"]["n_candidates"] == 24
  before = (work / "results.json").read_bytes()
  studies.run(spec, work)  # finished: every stage skipped
  assert (work / "results.json").read_bytes() == before


def test_checkpoint_off_the_task_vocabulary_fails_before_any_work(
    checkpoints, tmp_path):
  small = TINY.replace(vocab_size=100, reward_head=True)
  checkpoint.save(tmp_path / "prm100", testing.numpy_params(small, 1), small)
  run = _search_run(checkpoints)
  bad = dataclasses.replace(run, checkpoints=dataclasses.replace(
      run.checkpoints, prm=str(tmp_path / "prm100")))
  work = tmp_path / "study"
  with pytest.raises(ValueError, match=r"Checkpoints.prm=.*vocab_size 100"):
    studies.run(studies.SearchStudy(search=bad), work)
  assert not work.exists()
  swapped = dataclasses.replace(run, checkpoints=dataclasses.replace(
      run.checkpoints, prm=run.checkpoints.policy))
  with pytest.raises(ValueError, match="Checkpoints.prm=.*reward head"):
    studies.run(studies.SearchStudy(search=swapped), work)


def test_tree_cache_too_small_for_the_task_fails_before_any_work(
    checkpoints, tmp_path):
  run = dataclasses.replace(_search_run(checkpoints), tree_cache_tokens=16,
                            max_new_tokens=128)
  work = tmp_path / "study"
  with pytest.raises(ValueError, match="SearchRun.tree_cache_tokens"):
    studies.run(studies.SearchStudy(search=run), work)
  assert not work.exists()
  # Any strategy of the tree engine is checked, REBASE too.
  rebase = dataclasses.replace(run, strategies=(sweep_runner.StrategySpec(
      strategy="rebase", budgets=(4,), selections=("weighted",)),))
  with pytest.raises(ValueError, match="SearchRun.tree_cache_tokens"):
    preflight.check_tree_cache(rebase)
  long_steps = studies.ArithStudy(preset="micro", overrides={
      "arithmetic": arithmetic.ArithmeticConfig(min_ops=8, max_ops=8),
      "max_new_tokens": 16})
  with pytest.raises(ValueError, match="SearchRun.tree_cache_tokens"):
    studies.run(long_steps, work)
  assert not work.exists()
  studies.ArithStudy(preset="arith_cpu").preflight()  # the presets fit
  studies.ArithStudy(preset="smoke").preflight()
