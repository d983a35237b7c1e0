"""The end-to-end study's wiring (fast) and a micro run (slow)."""

import dataclasses
import json
import os

import pytest

from ttcjax import checkpoint, experiments
from ttcjax.analysis import flops
from ttcjax.experiments import sweep_runner
from ttcjax.experiments import embedded, embedded_study, stages, studies

NEW = ("pretrain_large", "large_eval", "search_sweep", "difficulty_samples",
       "oracle_sweep",
       "analysis")


@pytest.mark.parametrize("preset", sorted(embedded_study.SWEEPS))
def test_stage_list_and_wiring(preset):
  config = embedded.PRESETS[preset]()
  todo = embedded_study.full_study_stages(config)
  names = [s.name for s in todo]
  assert names[-len(NEW):] == list(NEW)
  assert len(set(names)) == len(names)
  for i, s in enumerate(todo):  # inputs come first
    assert set(s.inputs) <= set(names[:i]), s.name
  hashes = stages.stage_hashes(todo)
  assert set(hashes) == set(names)
  assert embedded_study.sweep_for(config) is embedded_study.SWEEPS[preset]


@pytest.mark.parametrize("preset", sorted(embedded_study.SWEEPS))
def test_large_model_is_about_14x(preset):
  policy = embedded.PRESETS[preset]().policy
  large = embedded_study.large_model_config(policy)
  ratio = large.num_params() / policy.num_params()
  assert 12 <= ratio <= 16
  assert large.vocab_size == policy.vocab_size
  info = embedded_study.flops_info(embedded.PRESETS[preset]())
  assert info["n_large"] == large.num_params()
  p = embedded.PRESETS[preset]().pretrain
  assert info["d_pretrain"] == (p.train.total_steps * p.batch_size *
                                p.row_len)


def test_search_run_covers_strategies():
  config = embedded.smoke()
  ckpts = sweep_runner.Checkpoints(policy="/p", prm="/q", revision="/r",
                                 orm="/o")
  run = embedded_study.search_run(config, embedded_study.SWEEPS["smoke"], ckpts)
  assert {s.strategy for s in run.strategies} == {
      "best_of_n", "beam", "lookahead", "dvts", "revisions"}
  assert all(s.budgets == (2, 4, 8) for s in run.strategies
             if s.strategy != "lookahead")
  assert run.problems.num_problems == config.test_problems
  # Chains see as many attempts as the revision model was trained with.
  (rev,) = [s for s in run.strategies if s.strategy == "revisions"]
  assert all(c.revision_context == config.revision_context
             for c in rev.configs(None))
  cpu = embedded.arith_cpu()
  sweep = embedded_study.SWEEPS["arith_cpu"]
  run = embedded_study.search_run(cpu, sweep, ckpts)
  assert run.problems.num_problems == sweep.problems < cpu.test_problems
  (rev,) = [s for s in run.strategies if s.strategy == "revisions"]
  assert {c.revision_context for c in rev.configs(None)} == {1}
  oracle = embedded_study.search_run(
      config, embedded_study.SWEEPS["smoke"],
      sweep_runner.Checkpoints(policy="/p"), oracle=True)
  assert oracle.verifier == "oracle" and run.verifier == "prm"
  assert [s.strategy for s in oracle.strategies] == list(
      embedded_study.ORACLE_STRATEGIES)
  assert oracle.strategies[0].selections == ("weighted",)
  assert oracle.problems == embedded_study.search_run(
      config, embedded_study.SWEEPS["smoke"], ckpts).problems
  by_name = {s.name: s for s in embedded_study.full_study_stages(cpu)}
  other = cpu.replace(revision_context=2)
  changed = {s.name: s for s in embedded_study.full_study_stages(other, sweep)}
  assert (stages.stage_hashes(list(by_name.values()))["search_sweep"] !=
          stages.stage_hashes(list(changed.values()))["search_sweep"])


CKPTS = sweep_runner.Checkpoints(policy="/p", prm="/q", revision="/r",
                                 orm="/o")

# `stages.config_hash` of each preset's SweepConfig before
# `incremental_verifier` was added: finished studies' search_sweep and
# analysis stages hash it, so these must not change. arith_cpu's changed
# once, on purpose, when its sweeps got 768 tree cache slots
# (`tree_cache_tokens`; it was "eec1e336313ee1e4").
SWEEP_HASHES = {"smoke": "1f412858c25859cb", "arith_cpu": "8b96c21836914f30",
                "micro": "abe1a0db8a949bd8",
                "countdown_smoke": "1f412858c25859cb",
                "countdown_cpu": "eec1e336313ee1e4",
                "countdown_micro": "abe1a0db8a949bd8"}


@pytest.mark.parametrize("preset", sorted(embedded_study.SWEEPS))
def test_presets_keep_their_hashes_and_the_verifier_reads_in_full(preset):
  sweep = embedded_study.SWEEPS[preset]
  assert not sweep.incremental_verifier
  assert stages.config_hash(sweep) == SWEEP_HASHES[preset]
  assert "incremental_verifier" not in stages.jsonable(sweep)
  assert ("tree_cache_tokens" in stages.jsonable(sweep)) == (
      sweep.tree_cache_tokens is not None)


def test_incremental_verifier_reaches_the_prm_sweep_only():
  config = embedded.micro()
  sweep = embedded_study.SWEEPS["micro"]
  on = dataclasses.replace(sweep, incremental_verifier=True)
  assert stages.jsonable(on)["incremental_verifier"] is True
  assert not embedded_study.search_run(config, sweep,
                                       CKPTS).incremental_verifier
  assert embedded_study.search_run(config, on, CKPTS).incremental_verifier
  oracle = embedded_study.search_run(
      config, on, sweep_runner.Checkpoints(policy="/p"), oracle=True)
  assert oracle.verifier == "oracle" and not oracle.incremental_verifier
  hashes = [stages.stage_hashes(embedded_study.full_study_stages(config, s))
            for s in (sweep, on)]
  assert hashes[0] == stages.stage_hashes(
      embedded_study.full_study_stages(config))
  changed = {n for n in hashes[0] if hashes[0][n] != hashes[1][n]}
  # The PRM sweep and the analysis reading it; not the oracle's sweep.
  assert changed == {"search_sweep", "analysis"}
  with pytest.raises(ValueError, match="incremental_verifier must be a bool"):
    dataclasses.replace(sweep, incremental_verifier="yes")
  # The study's gin setting: study.ArithStudy.sweep = {...: True}.
  study = studies.ArithStudy(
      preset="micro", sweep={"incremental_verifier": True})
  assert stages.stage_hashes(study.stages()) == hashes[1]


@pytest.mark.parametrize("preset", sorted(embedded_study.SWEEPS))
def test_lookahead_costs_a_budget_of_the_grid(preset):
  # Issue 10, defect 4: lookahead with k = 1 at N = 4 / 16 / 64 cost 8 / 32
  # / 128 generations, off the grid, where it never met another method.
  config, sweep = embedded.PRESETS[preset](), embedded_study.SWEEPS[preset]
  run = embedded_study.search_run(config, sweep, CKPTS)
  looks = [s for s in run.strategies if s.strategy == "lookahead"]
  assert {c.lookahead for s in looks for c in s.configs(None)} == set(
      sweep.lookaheads)
  for s in looks:
    for c in s.configs(None):
      gens = {c.generations(n) for n in s.budgets}
      assert gens == {b for b in sweep.budgets
                      if b % (c.lookahead + 1) == 0}, (preset, c.lookahead)
  with pytest.raises(ValueError, match="SweepConfig.lookaheads: k=2"):
    embedded_study.SweepConfig(budgets=(4, 16), lookaheads=(2,))


def _keys(run):
  """Per (uid, strategy, N) of a run: its search key's data."""
  from ttcjax.search import base  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  root = jax.random.key(run.seed)
  uids = [f"arith-{run.problems.seed}-{i}"
          for i in range(run.problems.num_problems)]
  out = {}
  for spec in run.strategies:
    for n in spec.budgets:
      for u in uids:
        key = base.search_key(root, u, spec.strategy, n)
        out[(u, spec.strategy, n)] = tuple(
            jax.random.key_data(key).tolist())
  return out


def test_difficulty_samples_never_share_a_key_with_evaluated_cells():
  # Issue 10, defect 2: the bins came from best-of-N@largest's own
  # candidates, the samples that cell then evaluated.
  config, sweep = embedded.smoke(), embedded_study.SWEEPS["smoke"]
  run = embedded_study.search_run(config, sweep, CKPTS)
  draw = embedded_study.difficulty_run(run, sweep.difficulty_samples)
  assert draw.problems == run.problems
  assert [(s.strategy, s.budgets) for s in draw.strategies] == [
      ("best_of_n", (sweep.difficulty_samples,))]
  evaluated, binning = _keys(run), _keys(draw)
  assert len(binning) == run.problems.num_problems
  assert not set(evaluated.values()) & set(binning.values())
  # Even where the difficulty draw's S is a sweep budget.
  same_n = embedded_study.difficulty_run(run, max(sweep.budgets))
  assert not set(evaluated.values()) & set(_keys(same_n).values())
  # The analysis reads the draw, and it counts in the stage hashes.
  by_name = {s.name: s for s in embedded_study.full_study_stages(config)}
  assert "difficulty_samples" in by_name["analysis"].inputs
  assert set(by_name["difficulty_samples"].inputs) == {"pretrain_policy",
                                                       "train_prm"}


def test_analysis_reads_an_oracle_sweep_stage_when_the_study_has_one():
  assert embedded_study.analysis_inputs(
      ["search_sweep", "difficulty_samples", "large_eval"]) == (
          "search_sweep", "difficulty_samples", "large_eval")
  assert "oracle_sweep" in embedded_study.analysis_inputs(
      ["search_sweep", "difficulty_samples", "oracle_sweep"])


def test_headline_lines_carry_intervals_and_warnings_first():
  acc = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
  eff = {"target_budget": 16.0, "baseline_accuracy": acc,
         "matched_budget": 4.0, "status": "matched", "ratio": 4.0,
         "ratio_ci_low": 2.0, "ratio_ci_high": 8.0,
         "ratio_upper_bound": None}
  results = {
      "warnings": ["too small"], "problems": {"n": 3},
      "config": {"headline_families": ["search"]},
      "direction": {"label": "best-of-N weighted", "from_budget": 2.0,
                    "to_budget": 8.0, "gain": acc},
      "verifier": {"prm": {"within": acc, "across": acc,
                           "within_problems": 2}},
      "compute_optimal": {
          "search": {"baseline_label": "best-of-N weighted",
                     "kinds": {"oracle": {"headline": [eff]}}},
          "search_all": {"baseline_label": "x",
                         "kinds": {"oracle": {"headline": [eff]}}}},
      "comparisons": {"baseline_label": "best-of-N weighted", "rows": [
          {"method": "b4", "label": "beam M=4", "budget": b,
           "difference": acc, "bins": {"oracle": {"10": acc, "2": acc}}}
          for b in (16.0, 64.0)]}}
  lines = embedded_study.headline(results)
  assert lines[0] == "too small"
  assert not any("search_all" in l for l in lines)
  body = [l for l in lines[1:] if not l.startswith("problems")]
  assert body and all("[" in l for l in body), body
  assert any("ratio 4 [2, 8]" in l for l in lines)
  # The compared method at its largest budget only, bins in numeric order.
  assert lines[-1] == ("beam M=4 - best-of-N weighted at 64: +0.500 [+0.400, "
                       "+0.600] (oracle bins: bin 2 +0.500 [+0.400, +0.600]; "
                       "bin 10 +0.500 [+0.400, +0.600])")


def test_a_prm_from_the_large_model_trains_after_it():
  config = embedded.arith_cpu().replace(prm_init="large")
  todo = embedded_study.full_study_stages(config, "arith_cpu")
  names = [s.name for s in todo]
  assert names[:2] == ["pretrain_policy", "pretrain_large"]
  assert names.count("pretrain_large") == 1
  by_name = {s.name: s for s in todo}
  assert by_name["train_prm"].inputs == ("pretrain_large", "mc_labels")
  for i, s in enumerate(todo):
    assert set(s.inputs) <= set(names[:i]), s.name
  default = stages.stage_hashes(embedded_study.full_study_stages(
      embedded.arith_cpu()))
  hashes = stages.stage_hashes(todo)
  assert hashes["pretrain_large"] == default["pretrain_large"]
  assert hashes["train_prm"] != default["train_prm"]
  assert hashes["train_revision"] == default["train_revision"]
  with pytest.raises(ValueError, match="prm_init='large'.* full study"):
    experiments.study_stages(config)
  with pytest.raises(ValueError, match="ArithStudyConfig.prm_init"):
    embedded.micro().replace(prm_init="huge")


@pytest.mark.slow  # about 2 minutes on 2 cores
def test_micro_prm_from_the_large_model(tmp_path):
  config = embedded.micro().replace(prm_init="large")
  workdir = tmp_path / "study"
  embedded_study.run_study(embedded_study.full_study_stages(config, "micro"),
                           str(workdir), only=["eval_prm"],
                           log=lambda _: None)
  large = embedded_study.large_model_config(config.policy)
  prm_config, params = checkpoint.restore(workdir / "train_prm" / "model")
  assert prm_config == large.replace(reward_head=True)
  assert "reward_head" in params
  summary = stages.read_json(workdir / "train_prm" / "train_summary.json")
  assert summary["train_flops"] == config.prm.train.total_steps * (
      flops.train_step_flops(prm_config, config.prm.batch_size,
                             config.prm.row_len))
  metrics = stages.read_json(workdir / "eval_prm" / "metrics.json")
  assert "auc_last_within" in metrics


@pytest.mark.slow  # about 100 s on 2 cores
def test_micro_study_end_to_end(tmp_path):
  workdir = str(tmp_path / "study")
  lines = []
  embedded_study.run_full_study(embedded.micro(), workdir, log=lines.append)
  for name in ("report.md", "results.json"):
    assert os.path.exists(os.path.join(workdir, name))
    assert os.path.exists(os.path.join(workdir, "analysis", name))
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["problems"]["n"] == embedded.micro().test_problems
  assert results["flops_matched"] is not None
  assert embedded_study.headline(results)
  assert os.path.getsize(os.path.join(workdir, "search_sweep",
                                      "records.jsonl")) > 0
  again = []
  embedded_study.run_full_study(embedded.micro(), workdir, log=again.append)
  done = [l for l in again if "skipped" in l]
  assert len(done) == len(embedded_study.full_study_stages(embedded.micro()))


def test_the_sweep_tree_cache_reaches_the_search_runs():
  ckpts = CKPTS
  for preset, want in (("arith_cpu", 768), ("micro", None)):
    config = embedded.PRESETS[preset]()
    sw = embedded_study.SWEEPS[preset]
    assert sw.tree_cache_tokens == want
    for oracle in (False, True):
      run = embedded_study.search_run(config, sw, ckpts, oracle=oracle)
      assert run.tree_cache_tokens == want
  # The grown cache still fits the model's positions after the prompt.
  config = embedded.arith_cpu()
  assert 768 <= config.policy.max_len - config.prompt_len


def test_a_study_without_the_large_model():
  config = embedded.countdown_cpu()
  full = stages.stage_hashes(embedded_study.full_study_stages(config))
  todo = embedded_study.full_study_stages(config, large_model=False)
  names = [s.name for s in todo]
  assert "pretrain_large" not in names and "large_eval" not in names
  assert "large_eval" not in {s.name: s for s in todo}["analysis"].inputs
  hashes = stages.stage_hashes(todo)
  # Every other stage is the full study's: the large model runs later.
  assert {n: h for n, h in hashes.items() if n != "analysis"} == {
      n: full[n] for n in names if n != "analysis"}
  assert hashes["analysis"] != full["analysis"]
  with pytest.raises(ValueError, match="prm_init='large'"):
    embedded_study.full_study_stages(config.replace(prm_init="large"),
                                     large_model=False)
  study = studies.ArithStudy(preset="countdown_cpu", large_model=False)
  assert [s.name for s in study.stages()] == names
