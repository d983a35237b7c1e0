"""The embedded study on another task than arithmetic (Countdown): the
stages, prompts, grading and search records go through the `Task`
interface. Fast wiring tests; the study's figures are measured by running
the countdown_smoke preset."""

import dataclasses

import gin
import pytest

from ttcjax import tasks
from ttcjax.experiments import embedded, embedded_study, evaluate, stages
from ttcjax.experiments import studies, sweep_runner
from ttcjax.main import configure, gin_utils
from ttcjax.search import base, records
from ttcjax.tasks import arithmetic, countdown
from ttcjax.verifiers import labeling

COUNTDOWN_PRESETS = ("countdown_smoke", "countdown_cpu", "countdown_micro")
TOK = embedded.TOKENIZER


def _ids(text):
  return TOK.encode(text) + [TOK.eos_id]


@pytest.mark.parametrize("preset", COUNTDOWN_PRESETS)
def test_countdown_presets_build_their_task_and_fit_prompts_and_solutions(
    preset):
  config = embedded.PRESETS[preset]()
  task = config.make_task()
  assert isinstance(task, countdown.CountdownTask)
  assert task.config == config.task_config
  problems = config.problems(300, config.test_seed)
  assert [p.uid for p in problems[:2]] == [f"countdown-{config.test_seed}-0",
                                           f"countdown-{config.test_seed}-1"]
  assert config.prompt_len >= max(len(embedded.prompt_ids(task, p))
                                  for p in problems)
  # Every reference solution fits the token cap, EOS included.
  assert config.max_new_tokens >= max(len(_ids(p.solution)) for p in problems)
  assert embedded_study.sweep_for(config) is embedded_study.SWEEPS[preset]


@pytest.mark.parametrize("preset", COUNTDOWN_PRESETS)
def test_countdown_gin_experiments_select_their_preset(preset):
  configure.register()
  gin_utils.parse([f"experiments/{preset}.gin"], [])
  try:
    spec = gin_utils.build(studies.experiment)
  finally:  # parse locks the config: later tests register more names
    gin.clear_config()
  assert spec == studies.ArithStudy(preset=preset)
  assert spec.config().task == "countdown"


def test_task_is_validated_and_hashed():
  with pytest.raises(ValueError, match="task_config"):
    embedded.micro().replace(task="countdown")  # an ArithmeticConfig
  with pytest.raises(ValueError, match="unknown task"):
    embedded.micro().replace(task="countdwn")
  micro, cd = embedded.micro(), embedded.countdown_micro()
  assert embedded.task_fields(micro) == {"arithmetic": micro.task_config}
  assert embedded.task_fields(cd) == {"task": "countdown",
                                      "task_config": cd.task_config}
  a = stages.stage_hashes(embedded_study.full_study_stages(micro))
  b = stages.stage_hashes(embedded_study.full_study_stages(cd))
  # Every stage that reads problems (all but the PRM/ORM/revision training,
  # whose inputs differ anyway) hashes the task.
  assert all(a[name] != b[name] for name in a)


def test_default_task_is_arithmetic():
  config = embedded.smoke()
  assert config.task == "arithmetic"
  assert isinstance(config.make_task(), arithmetic.ArithmeticTask)
  fields = {f.name: f.default for f in dataclasses.fields(config)}
  assert fields["task_config"] == arithmetic.ArithmeticConfig()


@pytest.mark.parametrize("preset", ["micro", "countdown_micro"])
def test_mc_label_grader_asks_the_task(preset):
  config = embedded.PRESETS[preset]()
  task = config.make_task()
  problems = config.problems(20, config.label_seed)
  grader = labeling.task_grader(task, {p.uid: p for p in problems},
                                embedded.answer_fn(task))
  for p in problems:
    assert grader(p.uid, _ids(p.solution)) is True
    wrong = p.solution.replace(f"#### {p.answer}", f"#### {int(p.answer) + 1}")
    assert grader(p.uid, _ids(wrong)) is False
    assert grader(p.uid, _ids("no answer here\n")) is None
  # Countdown: a valid derivation of another problem's target is wrong here.
  if preset == "countdown_micro":
    other = next(q for q in problems if q.target != problems[0].target)
    assert grader(problems[0].uid, _ids(other.solution)) is False


def _result(uid, answers):
  cands = tuple(base.Candidate(token_ids=(1,), step_ends=(1,),
                               step_scores=(0.5,), score=0.5, answer=a,
                               finished=True) for a in answers)
  return base.SearchResult(uid=uid, strategy="best_of_n", budget=len(cands),
                           candidates=cands, chosen=0, answer=answers[0],
                           policy_tokens_generated=1,
                           prompt_tokens_prefilled=1, verifier_tokens_read=1,
                           generations_used=len(cands))


def test_countdown_search_records_grade_derivations_through_the_task():
  config = embedded.countdown_micro()
  ckpts = sweep_runner.Checkpoints(policy="/p", prm="/q", revision="/r",
                                   orm="/o")
  run = embedded_study.search_run(config, embedded_study.SWEEPS[
      "countdown_micro"], ckpts)
  assert run.problems.task == "countdown"
  assert run.problems.countdown == config.task_config
  loaded = sweep_runner.load_problems(run.problems)
  drawn = config.problems(config.test_problems, config.test_seed)
  assert [p.uid for p in loaded] == [p.uid for p in drawn]
  assert loaded[0].prompt == config.make_task().prompt(drawn[0])
  assert loaded[0].extra["n_numbers"] == drawn[0].n_numbers
  tok = sweep_runner.make_tokenizer(ckpts)
  fns = sweep_runner.task_fns(run.problems, tok)
  p = drawn[0]
  right = fns.answer_fn(_ids(p.solution))
  claim = fns.answer_fn(_ids(f"#### {p.target}\n"))  # the target, no steps
  assert right.endswith(f"#### {p.target}") and claim == f"#### {p.target}"
  assert fns.equiv_fn(right, right) and not fns.equiv_fn(right, claim)
  grade = embedded.grade_fn(config.make_task(), p)
  rec = records.make_record(_result(p.uid, [claim, right, None]),
                            hparams={"selection": "plain"}, grade_fn=grade)
  assert [c["correct"] for c in rec["candidates"]] == [False, True, False]
  assert rec["correct"] is False  # chose the bare claim


def test_policy_metrics_bucket_by_the_tasks_integer_features():
  task = tasks.get("countdown")
  p = task.problems(1, seed=0)[0]
  assert evaluate.bucket_features(task, p) == ("n_numbers", "n_solutions")
  assert evaluate.bucket_features(tasks.get("arithmetic"), tasks.get(
      "arithmetic").problems(1, seed=0)[0]) == ("n_ops", "digits")
  rows = [{"n_numbers": 3 + i % 2, "n_solutions": 1, "correct": [i % 2 == 0]}
          for i in range(6)]
  m = evaluate.policy_metrics(rows, ("n_numbers", "n_solutions"))
  assert m["by_difficulty"] == [
      {"n_numbers": 3, "n_solutions": 1, "problems": 3, "pass_at_1": 1.0},
      {"n_numbers": 4, "n_solutions": 1, "problems": 3, "pass_at_1": 0.0}]


def test_value_metrics_rank_step_scores_against_the_ideal_value():
  task = tasks.get("countdown")
  problem = task.problems(1, seed=0)[0]
  values_fn = evaluate.ideal_values(task)
  assert evaluate.ideal_values(tasks.get("arithmetic")) is None
  assert values_fn(problem, problem.solution) == [True] * problem.n_numbers
  values = [[True, False, False], [True, True, True, True], [True]]
  perfect = [[0.9, 0.1, 0.2], [0.8, 0.7, 0.9, 1.0], [0.5, 0.5]]
  m = evaluate.value_metrics(values, perfect)
  assert m["value_auc"] == 1.0 and m["misaligned"] == 1
  assert m["value_steps"] == 2 + 3 and m["value_steps_reachable"] == 4
  assert m["value_auc_all"] == 1.0
  inverted = [[1 - x for x in sc] for sc in perfect]
  assert evaluate.value_metrics(values, inverted)["value_auc"] == 0.0
  assert evaluate.value_metrics([[True, True]], [[0.1, 0.2]])["value_auc"] is None


@pytest.mark.slow  # about as long as the arithmetic micro study
def test_countdown_micro_study_end_to_end(tmp_path):
  workdir = str(tmp_path / "study")
  embedded_study.run_full_study(embedded.countdown_micro(), workdir,
                                log=lambda _: None)
  summary = evaluate.summarize(workdir)
  assert summary["eval_policy"]["problems"] == (
      embedded.countdown_micro().test_problems)
  assert "value" in summary["eval_prm"]
  mc = stages.read_json(f"{workdir}/mc_labels/stats.json")
  assert mc["value"]["value_steps"] > 0  # the MC labels against the ideal
  recs = embedded_study.read_jsonl(f"{workdir}/search_sweep/records.jsonl")
  assert recs and all(r["uid"].startswith("countdown-") for r in recs)
  assert all(r["answer"] is None or "#### " in r["answer"] for r in recs)
  with open(f"{workdir}/results.json") as f:
    assert f.read()


def test_arithmetic_override_still_names_the_task_config():
  config = arithmetic.ArithmeticConfig(max_ops=2)
  study = studies.ArithStudy(preset="micro", overrides={"arithmetic": config})
  assert study.config().task_config == config
  with pytest.raises(ValueError, match="runs 'countdown'"):
    studies.ArithStudy(preset="countdown_micro",
                       overrides={"arithmetic": config})
  cd = countdown.CountdownConfig(max_numbers=3)
  study = studies.ArithStudy(preset="countdown_micro",
                             overrides={"task_config": cd})
  assert study.config().make_task().config == cd


def test_pretrain_drills_are_validated_mixed_in_and_hashed():
  cd = embedded.countdown_micro()
  with pytest.raises(ValueError, match="pretrain_drills must be in"):
    cd.replace(pretrain_drills=cd.pretrain_problems + 1)
  with pytest.raises(ValueError, match="task 'arithmetic' has no drills"):
    embedded.micro().replace(pretrain_drills=1)
  drilled = cd.replace(pretrain_drills=5)
  plain_exs = embedded.pretraining_examples(cd)
  exs = embedded.pretraining_examples(drilled)
  assert len(plain_exs) == cd.pretrain_problems
  assert len(exs) == cd.pretrain_problems + 5
  # Each drill follows its problem's reference; the references are unchanged.
  texts = [TOK.decode([int(t) for t in e["tokens"] if t > 2]) for e in exs]
  assert [t.startswith("Reach ") for t in texts[:10]] == [True, False] * 5
  assert all(t.startswith("Play ") for t in texts[1:10:2])
  refs = [e for i, e in enumerate(exs) if i >= 10 or i % 2 == 0]
  assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(refs, plain_exs))
  sweep = embedded_study.SWEEPS["countdown_micro"]
  a = stages.stage_hashes(embedded_study.full_study_stages(cd, sweep))
  b = stages.stage_hashes(embedded_study.full_study_stages(drilled, sweep))
  # Drills change the pretrained models, so every stage downstream of them.
  assert a["pretrain_policy"] != b["pretrain_policy"]
  assert a["pretrain_large"] != b["pretrain_large"]
  assert a["oracle_sweep"] != b["oracle_sweep"]
