"""Measurements of the embedded study's models on held-out problems.

  eval_policy    S samples per test problem: pass@1 overall, per difficulty
                 bucket (the task's integer difficulty features: n_ops x
                 digits for arithmetic, n_numbers x n_solutions for
                 Countdown) and per quantile bin of estimated pass@1 (5
                 bins, bin 1 the easiest)
  eval_prm       PRM scores of those samples: ROC AUC separating correct
                 from incorrect solutions, with the final step's score
                 ('last', the paper's aggregation) and the lowest ('min');
                 pooled over all samples, and averaged within problems;
                 where the task has an ideal value function (Countdown's
                 `reachable_after_steps`), the AUC of the step scores
                 against it (`value_metrics`)
  eval_revision  sequential revision chains (`ttcjax.search.revisions`) of
                 the revision model, judged by its ORM: pass@1 at attempt
                 1..L, the share of chains right by attempt j, and the
                 accuracy of the hierarchical ORM-weighted choice

Test problems use `ArithStudyConfig.test_seed` (< 1000), disjoint from every
training split. Each stage writes `metrics.json` (undefined values, such as
an AUC without both classes, are null); `summarize(workdir)`
gathers them with the training wall times from `stages.jsonl`.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Sequence

import numpy as np

from ttcjax import checkpoint, models, verifiers
from ttcjax.analysis import flops
from ttcjax.data import examples
from ttcjax.experiments import callbacks, embedded, stages
from ttcjax.experiments.metrics import (finite, ideal_values,  # re-exported
                                       roc_auc, value_metrics)
from ttcjax.search import base, batching, records, revisions

NUM_QUANTILE_BINS = 5
AGGREGATIONS = ("last", "min")


def _mean(values) -> float:
  values = list(values)
  return float(np.mean(values)) if values else float("nan")


def policy_metrics(rows: Sequence[dict],
                   features: Sequence[str] = ("n_ops", "digits")
                   ) -> dict[str, Any]:
  """pass@1 overall, by difficulty features and by quantile bin of pass@1.

  Args:
    rows: per problem, its `features` and `correct` (one bool a sample).
    features: the row fields whose value tuples are the difficulty buckets.

  Returns:
    JSON-ready metrics. Quantile bins sort problems by estimated pass@1,
    highest first (ties in problem order), and split them into 5 bins of
    (near) equal size: bin 1 the easiest, bin 5 the hardest.
  """
  rates = np.array([_mean(r["correct"]) for r in rows])
  buckets = collections.defaultdict(list)
  for r, rate in zip(rows, rates):
    buckets[tuple(r[f] for f in features)].append(rate)
  order = np.argsort(-rates, kind="stable")
  bins = np.array_split(order, NUM_QUANTILE_BINS)
  return {
      "problems": len(rows),
      "samples_per_problem": len(rows[0]["correct"]) if rows else 0,
      "pass_at_1": _mean(rates),
      "by_difficulty": [
          {**dict(zip(features, k)), "problems": len(v), "pass_at_1": _mean(v)}
          for k, v in sorted(buckets.items())],
      "by_quantile": [
          {"bin": i + 1, "problems": len(b), "pass_at_1": _mean(rates[b]),
           "min": float(rates[b].min()) if len(b) else float("nan"),
           "max": float(rates[b].max()) if len(b) else float("nan")}
          for i, b in enumerate(bins)],
  }


def _write_metrics(ctx: stages.StageContext, metrics: dict) -> None:
  stages.atomic_write_json(ctx.out / "metrics.json", finite(metrics))


def _test_problems(config: embedded.ArithStudyConfig, count: int):
  return config.problems(count, config.test_seed)


def bucket_features(task, problem) -> tuple[str, ...]:
  """The task's integer difficulty features (the policy metrics' buckets;
  rates such as Countdown's random solve rate are left out)."""
  return tuple(k for k, v in task.difficulty_features(problem).items()
               if isinstance(v, int) and not isinstance(v, bool))


def _eval_policy(config: embedded.ArithStudyConfig, ctx: stages.StageContext):
  policy = embedded.load_policy(config, ctx.input("pretrain_policy") / "model")
  key = embedded.stage_key(config, ctx.name)
  rows = ctx.map_chunks(
      "samples", _test_problems(config, config.test_problems),
      config.chunk_problems,
      lambda chunk: embedded.sample_rows(config, chunk, policy,
                                      config.eval_samples, key))
  embedded.save_rows(ctx.out / "samples.json", rows)
  task = config.make_task()
  features = (bucket_features(task, _test_problems(config, 1)[0])
              if rows else ())
  _write_metrics(ctx, policy_metrics(rows, features))


def verifier_fns(model_dir, max_len: int) -> tuple[models.ModelConfig,
                                                   base.VerifierFns]:
  """A reward-head checkpoint as `VerifierFns` (prompt + solution input)."""
  model_config, params = checkpoint.restore(model_dir)
  if not model_config.reward_head:
    raise ValueError(f"{model_dir}: not a reward model (reward_head=False)")
  return model_config, callbacks.verifier_fns(
      model_config, params, max_len=max_len, pad_id=embedded.TOKENIZER.pad_id)


def _strip_eos(ids: Sequence[int]) -> list[int]:
  ids = [int(i) for i in ids]
  eos = embedded.TOKENIZER.eos_id
  return ids[:ids.index(eos)] if eos in ids else ids


def score_samples(verifier: base.VerifierFns, prompts: Sequence[Sequence[int]],
                  solutions: Sequence[Sequence[int]],
                  rows_per_call: int,
                  stop_ids: Sequence[int] = embedded.NEWLINE_IDS
                  ) -> list[list[float]]:
  """Per solution, the verifier's score at the end of every step.

  Solutions are read as at search time (`batching.score_rows`: prompt ids,
  then the solution without EOS; a step ends at each newline, and the last
  step at the last token; `stop_ids` end steps). Calls have a fixed row
  count, so one compile.
  """
  out = []
  for start in range(0, len(solutions), rows_per_call):
    sols = [_strip_eos(s) for s in solutions[start:start + rows_per_call]]
    sols = [s or None for s in sols]  # an empty solution is not read
    pad = rows_per_call - len(sols)
    ends = [batching.step_ends_of(s, 0, len(s), stop_ids) if s
            else [] for s in sols]
    scores, _ = batching.score_rows(
        verifier, list(prompts[start:start + rows_per_call]) + [[0]] * pad,
        sols + [None] * pad, ends + [[]] * pad)
    out += scores[:len(sols)]
  return out


def _aggregate(step_scores: Sequence[float], how: str) -> float:
  values = np.asarray([list(step_scores)], np.float32).reshape(1, -1)
  return float(verifiers.aggregate(values, np.ones(values.shape, bool),
                                   how)[0])


def prm_metrics(rows: Sequence[dict],
                step_scores: Sequence[Sequence[Sequence[float]]]) -> dict:
  """AUCs of aggregated PRM scores against sample correctness.

  Args:
    rows: per problem its `correct` list.
    step_scores: per problem, per sample, the step scores.

  Returns:
    `auc_<agg>` pooled over all samples and `auc_<agg>_within` (mean over
    problems with both classes) for each aggregation, and class counts.
  """
  labels = [ok for r in rows for ok in r["correct"]]
  out = {"samples": len(labels), "correct": int(sum(labels)),
         "problems_with_both": 0}
  for how in AGGREGATIONS:
    per_problem = [[_aggregate(s, how) for s in sample_scores]
                   for sample_scores in step_scores]
    out[f"auc_{how}"] = roc_auc([x for p in per_problem for x in p], labels)
    within = [roc_auc(p, r["correct"]) for p, r in zip(per_problem, rows)]
    within = [a for a in within if not math.isnan(a)]
    out[f"auc_{how}_within"] = _mean(within)
    out["problems_with_both"] = len(within)
  return out


def _eval_prm(config: embedded.ArithStudyConfig, ctx: stages.StageContext):
  rows = embedded.load_rows(ctx.input("eval_policy") / "samples.json")
  _, verifier = verifier_fns(ctx.input("train_prm") / "model",
                             config.prompt_len + config.max_new_tokens)
  flat = [(r["prompt_ids"], s) for r in rows for s in r["samples"]]
  scores = score_samples(verifier, [p for p, _ in flat], [s for _, s in flat],
                         config.decode_rows,
                         embedded.step_ids(config.make_task()))
  per_problem, at = [], 0
  for r in rows:
    per_problem.append(scores[at:at + len(r["samples"])])
    at += len(r["samples"])
  embedded.save_rows(ctx.out / "scores.json", per_problem)
  metrics = prm_metrics(rows, per_problem)
  values_fn = ideal_values(config.make_task())
  if values_fn is not None:
    problems = {p.uid: p for p in _test_problems(config, config.test_problems)}
    values = [values_fn(problems[r["uid"]],
                        embedded.TOKENIZER.decode(_strip_eos(s)))
              for r in rows for s in r["samples"]]
    metrics["value"] = value_metrics(
        values, [sc for p in per_problem for sc in p])
  _write_metrics(ctx, metrics)


def revision_prompt_len(config: embedded.ArithStudyConfig,
                        questions: Sequence[str]) -> int:
  """Fixed revision prompt width: the longest 0-attempt prompt plus
  `min(revision_attempts - 1, revision_context)` attempts of
  `max_new_tokens` and their headers, rounded up to 32."""
  zero = max(len(examples.revision_prompt_ids(embedded.TOKENIZER, q, []))
             for q in questions)
  header = len(examples.ATTEMPT_HEADER.format(index=9)) + 1
  width = zero + min(config.revision_attempts - 1, config.revision_context
                     ) * (config.max_new_tokens + header)
  return 32 * math.ceil(width / 32)


def revision_metrics(recs: Sequence[dict], chains: int,
                     attempts: int) -> dict:
  """pass@1 per attempt, chains right by attempt j, selection accuracy.

  Args:
    recs: `ttcjax.search.records` dicts of 'revisions' results, whose
      candidates are chain-major (chain c's attempt j at `c * L + j`).
    chains: P.
    attempts: L.
  """
  hits = np.array([[[c["correct"] for c in r["candidates"][
      k * attempts:(k + 1) * attempts]] for k in range(chains)]
                   for r in recs], bool)  # [problems, chains, attempts]
  return {
      "problems": len(recs), "chains": chains, "attempts": attempts,
      "pass_at_1_by_attempt": hits.mean(axis=(0, 1)).tolist(),
      "solved_by_attempt": np.logical_or.accumulate(hits, axis=2).mean(
          axis=(0, 1)).tolist(),
      "selected_accuracy": _mean(r["correct"] for r in recs),
  }


def _eval_revision(config: embedded.ArithStudyConfig,
                   ctx: stages.StageContext):
  problems = _test_problems(config, config.revision_eval_problems)
  task_ = config.make_task()
  questions = {p.uid: task_.prompt(p) for p in problems}
  width = revision_prompt_len(config, list(questions.values()))
  rev_config, params = checkpoint.restore(ctx.input("train_revision") /
                                          "model")
  plain = embedded.policy_fns(rev_config, params, prompt_len=width,
                              max_new_tokens=config.max_new_tokens,
                              temperature=config.temperature,
                              stop_ids=embedded.step_ids(task_))

  def prompt_fn(problem: base.SearchProblem, attempts):
    return examples.revision_prompt_ids(
        embedded.TOKENIZER, questions[problem.uid],
        [embedded.TOKENIZER.decode(a) for a in attempts], max_prompt_len=width,
        max_context=config.revision_context)

  policy = revisions.with_prompt_fn(plain, prompt_fn)
  orm_config, verifier = verifier_fns(ctx.input("train_orm") / "model",
                                      width + config.max_new_tokens)
  task = embedded.task_fns(task_)
  per_call = max(1, min(config.decode_rows // config.revision_chains,
                        config.chunk_problems))
  search_config = revisions.RevisionsConfig(
      selection="weighted", aggregation="last",
      revision_length=config.revision_attempts,
      revision_context=config.revision_context, problems_per_batch=per_call)
  budget = config.revision_chains * config.revision_attempts
  hparams = records.hparams_of(search_config, budget)
  key = embedded.stage_key(config, ctx.name)

  def run_chunk(chunk):
    results = revisions.revisions(
        [base.SearchProblem(p.uid, embedded.prompt_ids(task_, p))
         for p in chunk],
        budget, policy, verifier, task, search_config, key)
    return [records.make_record(
        result, hparams=hparams,
        grade_fn=embedded.grade_fn(task_, p),
        policy_config=rev_config, verifier_config=orm_config,
        policy_context=policy.max_len, verifier_context=verifier.max_len,
        flops_fn=flops.search_flops,
        extra={"reference": p.answer, **task_.difficulty_features(p)})
            for p, result in zip(chunk, results)]

  recs = ctx.map_chunks("chains", problems, config.chunk_problems, run_chunk)
  embedded.save_rows(ctx.out / "records.json", recs)
  _write_metrics(ctx, revision_metrics(recs, config.revision_chains,
                                       config.revision_attempts))


def _eval_sampling(c) -> dict[str, Any]:
  return dict(embedded._sampling_config(c), **embedded.task_fields(c),  # pylint: disable=protected-access
              test_seed=c.test_seed)


def eval_stages(config: embedded.ArithStudyConfig) -> list[stages.Stage]:
  """The evaluation stages (after `embedded.training_stages`)."""
  st = functools.partial(embedded.scoped_stage, config=config)
  return [
      st("eval_policy", _eval_policy, make_config=lambda v: dict(
          _eval_sampling(v), problems=v.test_problems,
          samples=v.eval_samples),
         inputs=("pretrain_policy",), cost=1),
      st("eval_prm", _eval_prm, make_config=lambda v: dict(_eval_sampling(v)),
         inputs=("eval_policy", "train_prm"), cost=0.3),
      st("eval_revision", _eval_revision, make_config=lambda v: dict(
          _eval_sampling(v), problems=v.revision_eval_problems,
          chains=v.revision_chains, attempts=v.revision_attempts,
          context=v.revision_context),
         inputs=("train_revision", "train_orm"), cost=2),
  ]


def summarize(workdir) -> dict[str, Any]:
  """The eval stages' metrics, each stage's last wall time, and the
  training stages' wall and CPU seconds inside `train()`."""
  workdir = stages.Path(workdir)
  out: dict[str, Any] = {"seconds": {}, "train_seconds": {},
                         "train_cpu_seconds": {}}
  for record in stages.read_log(workdir):
    out["seconds"][record["stage"]] = record["seconds"]
    info = record.get("info", {})
    for key in ("train_seconds", "train_cpu_seconds"):
      if key in info:
        out[key][record["stage"]] = info[key]
  for name in ("eval_policy", "eval_prm", "eval_revision"):
    path = workdir / name / "metrics.json"
    if path.exists():
      out[name] = stages.read_json(path)
  return out
