"""End-to-end run of the arithmetic study at micro scale, and the pieces
the measurements rest on (AUC, bins, packing). Values of the study are the
bench's job (bench/train_arith.py); here artefacts must exist and load."""

import itertools
import json
import os

import jax
import numpy as np
import pytest

from ttcjax import checkpoint, experiments
from ttcjax.data import examples
from ttcjax.experiments import embedded, evaluate, stages
from ttcjax.tasks import arithmetic

STAGES = ("pretrain_policy", "sample_train", "mc_labels", "train_prm",
          "revision_data", "train_revision", "train_orm", "eval_policy",
          "eval_prm", "eval_revision")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("micro")
  config = embedded.micro()
  experiments.run_arith_study(config, str(workdir), log=lambda _: None)
  return config, workdir


def test_every_stage_finished_with_its_artefacts(study):
  _, workdir = study
  for name in STAGES:
    assert stages.read_done(workdir / name) is not None, name
  assert sorted(n for n in os.listdir(workdir) if not n.startswith(".")) == (
      sorted(STAGES + (stages.LOG_FILE,)))  # no temp or work dirs left
  for name in ("pretrain_policy", "train_prm", "train_revision", "train_orm"):
    config, params = checkpoint.restore(workdir / name / "model")
    assert config.reward_head == (name in ("train_prm", "train_orm"))
    assert "reward_head" in params if config.reward_head else True
    summary = stages.read_json(workdir / name / "train_summary.json")
    assert summary["examples"] > 0 and summary["train_flops"] > 0
  labels = embedded.load_rows(workdir / "mc_labels" / "labels.json")
  assert labels and all(len(r["steps"]) == len(r["step_labels"])
                        for r in labels)
  for name in ("train_revision", "train_orm"):
    stats = stages.read_json(workdir / name / "data_stats.json")
    assert stats["n_examples" if name == "train_revision" else
                 "n_candidates"] > 0


def test_measurements_load(study):
  config, workdir = study
  summary = evaluate.summarize(workdir)
  policy = summary["eval_policy"]
  assert policy["problems"] == config.test_problems
  assert 0 <= policy["pass_at_1"] <= 1
  assert len(policy["by_quantile"]) == evaluate.NUM_QUANTILE_BINS
  assert {"auc_last", "auc_min"} <= summary["eval_prm"].keys()
  revision = summary["eval_revision"]
  assert len(revision["pass_at_1_by_attempt"]) == config.revision_attempts
  assert "pretrain_policy" in summary["train_seconds"]
  rows = embedded.load_rows(workdir / "eval_policy" / "samples.json")
  assert all(r["uid"].startswith(f"arith-{config.test_seed}-") for r in rows)
  chains = embedded.load_rows(workdir / "eval_revision" / "records.json")
  assert chains and all(
      r["flops"] == r["flops_policy"] + r["flops_verifier"] > 0
      for r in chains)


def test_rerun_is_a_no_op(study):
  config, workdir = study
  lines = []
  experiments.run_arith_study(config, str(workdir), log=lines.append)
  assert len(lines) == len(STAGES) and all("skipped" in l for l in lines)


def test_killed_sampling_resumes_to_the_same_artefacts(study, tmp_path,
                                                       monkeypatch):
  config, workdir = study
  real, calls = embedded.sample_rows, []

  def dies_on_second_chunk(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt()
    return real(*args, **kwargs)

  monkeypatch.setattr(embedded, "sample_rows", dies_on_second_chunk)
  with pytest.raises(KeyboardInterrupt):
    experiments.run_arith_study(config, str(tmp_path), only=["sample_train"],
                             log=lambda _: None)
  assert not (tmp_path / "sample_train").exists()
  experiments.run_arith_study(config, str(tmp_path), only=["sample_train"],
                           log=lambda _: None)
  # Retrained from the same seed and resampled (chunk 1 from its stored
  # file): byte-identical to the full run.
  for name in ("sample_train/samples.json",
               "pretrain_policy/train_summary.json"):
    assert (tmp_path / name).read_bytes() == (workdir / name).read_bytes()
  _, a = checkpoint.restore(tmp_path / "pretrain_policy" / "model")
  _, b = checkpoint.restore(workdir / "pretrain_policy" / "model")
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                   jax.tree.leaves(b)))


@pytest.mark.parametrize("n", [2, 7, 30])
def test_roc_auc_matches_pairwise_count_with_ties(n):
  rng = np.random.default_rng(n)
  scores = rng.integers(0, 4, n).astype(float)  # many ties
  labels = rng.random(n) < 0.5
  labels[:2] = [True, False]
  pairs = [(1.0 if p > q else 0.5 if p == q else 0.0)
           for (p, lp), (q, lq) in itertools.product(zip(scores, labels),
                                                     repeat=2) if lp and not lq]
  assert evaluate.roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
  assert np.isnan(evaluate.roc_auc([0.1, 0.2], [True, True]))


def test_policy_metrics_buckets_and_quantile_bins():
  rows = [{"n_ops": 1 + i % 2, "digits": 1, "correct": [i % 3 == 0, True]}
          for i in range(10)]
  m = evaluate.policy_metrics(rows)
  assert m["pass_at_1"] == pytest.approx(np.mean([r["correct"] for r in rows]))
  assert [b["problems"] for b in m["by_difficulty"]] == [5, 5]
  bins = m["by_quantile"]
  assert [b["problems"] for b in bins] == [2] * 5
  assert bins[0]["pass_at_1"] == 1.0 and bins[-1]["pass_at_1"] == 0.5
  assert all(a["min"] >= b["max"] for a, b in zip(bins, bins[1:]))


def test_revision_metrics_per_attempt():
  cand = lambda ok: {"correct": ok}
  recs = [{"correct": True, "candidates": [cand(False), cand(True),
                                           cand(False), cand(False)]},
          {"correct": False, "candidates": [cand(False)] * 4}]
  m = evaluate.revision_metrics(recs, chains=2, attempts=2)
  assert m["pass_at_1_by_attempt"] == [0.0, 0.25]
  assert m["solved_by_attempt"] == [0.0, 0.25]
  assert m["selected_accuracy"] == 0.5


def test_pack_examples_keeps_every_example():
  tok = embedded.TOKENIZER
  exs = [examples.lm_example(tok, arithmetic.prompt(p), p.solution)
         for p in arithmetic.generate(arithmetic.ArithmeticConfig(), 20, 5)]
  batch = embedded.pack_examples(exs, 160)
  assert batch["tokens"].shape[1] == 160
  assert len(batch["tokens"]) < len(exs)
  assert batch["loss_weights"].sum() == sum(e["loss_weights"].sum()
                                            for e in exs)
  assert (batch["tokens"] == tok.bos_id).sum() == len(exs)
  flat = batch["tokens"][batch["token_mask"]]
  assert np.array_equal(flat, np.concatenate([e["tokens"] for e in exs]))
  with pytest.raises(ValueError, match="row_len"):
    embedded.pack_examples(exs, 8)


def test_config_keeps_test_and_training_seeds_apart():
  with pytest.raises(ValueError, match="test_seed"):
    embedded.micro().replace(test_seed=1000)
  with pytest.raises(ValueError, match="distinct"):
    embedded.micro().replace(label_seed=1000)
  for preset in embedded.PRESETS.values():
    config = preset()
    task = config.make_task()
    assert config.prompt_len >= max(
        len(embedded.prompt_ids(task, p)) for p in config.problems(200, 0))
    json.dumps(stages.jsonable(config))  # hashable as a stage config
