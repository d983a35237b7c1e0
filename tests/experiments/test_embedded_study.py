"""The end-to-end study's wiring (fast) and a micro run (slow)."""

import json
import os

import pytest

from ttcjax import checkpoint, experiments
from ttcjax.analysis import flops
from ttcjax.experiments import sweep_runner
from ttcjax.experiments import embedded, embedded_study, stages

NEW = ("pretrain_large", "large_eval", "search_sweep", "oracle_sweep",
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
  assert all(s.budgets == (2, 4, 8) for s in run.strategies)
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
