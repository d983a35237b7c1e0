"""The end-to-end arithmetic study: training, evaluation, search, report.

`full_study_stages(config)` is `ttcjax.experiments.study_stages(config)` (the
policy, PRM, revision model and ORM, and their evaluations) followed by:

  pretrain_large  an LM with ~14x the policy's parameters, trained on the
                  same pretraining data with the same recipe (the paper's
                  FLOPs-matched comparison, Sec. 7)
  large_eval      its greedy correctness on every test problem
  search_sweep    `ttcjax.experiments.sweep_runner.run` of every strategy x
                  hyper-parameters x budget over the test problems; the
                  records grow in the stage's work directory, so a killed
                  sweep resumes, and are copied to the stage output
  analysis        difficulty samples from best-of-N at the largest budget,
                  `ttcjax.analysis.results.analyze`, `report.write_report`
                  (report.md, results.json, figures/); report.md and
                  results.json are also copied to the workdir root

Budgets, strategies and analysis settings per preset live in `SWEEPS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from ttcjax import checkpoint, models
from ttcjax.experiments import sweep_runner
from ttcjax.experiments import embedded, evaluate, stages
from ttcjax.search import records as records_lib
from ttcjax.analysis import results as analysis_lib
from ttcjax.analysis import difficulty, report

LARGE_RATIO = 14.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
  """What the search sweep and the analysis run for one preset.

  Attributes:
    budgets: N values of every strategy.
    beam_widths: beam widths ('sqrt' allowed).
    lookaheads: lookahead k values.
    revision_lengths: L values of the revision sweep.
    problems_per_batch: problems per search batch.
    problems: sweep the first this many test problems (None: all
      `test_problems`); the analysis covers the swept problems.
    n_bins: difficulty bins.
    n_bootstrap: bootstrap resamples.
  """
  budgets: tuple[int, ...]
  beam_widths: tuple[Any, ...] = (4, "sqrt")
  lookaheads: tuple[int, ...] = (1,)
  revision_lengths: tuple[int, ...] = (1, 2, 4)
  problems_per_batch: int = 8
  problems: int | None = None
  n_bins: int = 5
  n_bootstrap: int = 200


SWEEPS = {
    "smoke": SweepConfig(budgets=(2, 4, 8), revision_lengths=(1, 2, 4)),
    # 128 of the 256 test problems and one lookahead k keep the sweep
    # (~100k generations) near an hour on 2 cores.
    "arith_cpu": SweepConfig(budgets=(4, 16, 64), lookaheads=(1,),
                             revision_lengths=(1, 4, 16), problems=128,
                             n_bootstrap=1000),
    "micro": SweepConfig(budgets=(2,), revision_lengths=(1, 2),
                         problems_per_batch=4, n_bins=2, n_bootstrap=20),
    "countdown_smoke": SweepConfig(budgets=(2, 4, 8),
                                   revision_lengths=(1, 2, 4)),
    "countdown_cpu": SweepConfig(budgets=(4, 16, 64), lookaheads=(1,),
                                 revision_lengths=(1, 4, 16), problems=128,
                                 n_bootstrap=1000),
    "countdown_micro": SweepConfig(budgets=(2,), revision_lengths=(1, 2),
                                   problems_per_batch=4, n_bins=2,
                                   n_bootstrap=20),
}


def preset_of(config: embedded.ArithStudyConfig) -> str | None:
  """The preset name whose config equals `config`, or None."""
  for name, make in embedded.PRESETS.items():
    if make() == config:
      return name
  return None


def sweep_for(config: embedded.ArithStudyConfig,
              sweep: SweepConfig | str | None = None) -> SweepConfig:
  if isinstance(sweep, SweepConfig):
    return sweep
  name = sweep or preset_of(config)
  if name not in SWEEPS:
    raise ValueError(f"no sweep for preset {name!r}; pass a SweepConfig "
                     f"(presets: {sorted(SWEEPS)})")
  return SWEEPS[name]


def large_model_config(policy: models.ModelConfig,
                       ratio: float = LARGE_RATIO) -> models.ModelConfig:
  """The policy's shape scaled in width and depth to ~`ratio` x params."""
  heads = policy.n_heads
  ff_ratio = policy.d_ff / policy.d_model
  step = heads * 8
  target = ratio * policy.num_params()
  best = None
  for layer_mult in (1, 2, 3, 4):
    layers = policy.n_layers * layer_mult
    for d in range(step, 16 * policy.d_model + step, step):
      if d < policy.d_model:
        continue
      cand = policy.replace(d_model=d, n_layers=layers, head_dim=d // heads,
                            d_ff=int(round(ff_ratio * d / 8)) * 8)
      err = abs(math.log(cand.num_params() / target))
      if best is None or err < best[0] - 1e-9:
        best = (err, cand)
  return best[1]


# --- Stage functions ---------------------------------------------------------


def _test_problems(config: embedded.ArithStudyConfig):
  return config.problems(config.test_problems, config.test_seed)


def _pretrain_large(config: embedded.ArithStudyConfig,
                    ctx: stages.StageContext):
  large = large_model_config(config.policy)
  info = embedded._pretrain_policy(config.replace(policy=large), ctx)  # pylint: disable=protected-access
  return dict(info or {}, n_small=config.policy.num_params(),
              n_large=large.num_params(),
              ratio=round(large.num_params() / config.policy.num_params(), 3))


def _large_eval(config: embedded.ArithStudyConfig, ctx: stages.StageContext):
  model_config, params = checkpoint.restore(
      ctx.input("pretrain_large") / "model")
  policy = embedded.policy_fns(model_config, params,
                            prompt_len=config.prompt_len,
                            max_new_tokens=config.max_new_tokens,
                            temperature=0.0,
                            stop_ids=embedded.step_ids(config.make_task()))
  key = embedded.stage_key(config, ctx.name)
  rows = ctx.map_chunks(
      "greedy", _test_problems(config), config.chunk_problems,
      lambda chunk: embedded.sample_rows(config, chunk, policy, 1, key))
  return write_large_results(
      ctx, {r["uid"]: bool(r["correct"][0]) for r in rows})


def write_large_results(ctx: stages.StageContext,
                        correct: Mapping[str, bool]) -> dict[str, float]:
  """The larger model's greedy correctness per uid (results.json, what the
  analysis reads) and its accuracy (metrics.json)."""
  stages.atomic_write_json(ctx.out / "results.json", dict(correct))
  acc = sum(correct.values()) / max(1, len(correct))
  stages.atomic_write_json(ctx.out / "metrics.json", {
      "accuracy": acc, "n": len(correct)})
  return {"accuracy": acc}


def search_run(config: embedded.ArithStudyConfig, sweep: SweepConfig,
               ckpts: sweep_runner.Checkpoints) -> sweep_runner.SearchRun:
  """The sweep's `SearchRun` over the test problems."""
  b = tuple(sweep.budgets)
  specs = [
      sweep_runner.StrategySpec(strategy="best_of_n", budgets=b,
                              selections=("weighted", "majority", "plain")),
      sweep_runner.StrategySpec(strategy="beam", budgets=b,
                              grid={"beam_width": sweep.beam_widths}),
      sweep_runner.StrategySpec(strategy="lookahead", budgets=b,
                              grid={"lookahead": sweep.lookaheads}),
      sweep_runner.StrategySpec(strategy="dvts", budgets=b),
      sweep_runner.StrategySpec(strategy="revisions", budgets=b,
                              grid={"revision_length":
                                    sweep.revision_lengths},
                              base={"revision_context":
                                    config.revision_context},
                              selections=("weighted", "majority")),
  ]
  questions = [p.question for p in _test_problems(config)]
  count = min(sweep.problems or config.test_problems, config.test_problems)
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(
          task=config.task, num_problems=count, seed=config.test_seed,
          **{config.task: config.task_config}),
      checkpoints=ckpts, strategies=specs,
      max_new_tokens=config.max_new_tokens, temperature=config.temperature,
      problems_per_batch=min(sweep.problems_per_batch, count),
      seed=config.seed, prompt_len=config.prompt_len,
      revision_prompt_len=evaluate.revision_prompt_len(config, questions))


def _search_sweep(config: embedded.ArithStudyConfig, sweep: SweepConfig,
                  ctx: stages.StageContext):
  model = lambda stage: str(ctx.input(stage) / "model")
  ckpts = sweep_runner.Checkpoints(
      policy=model("pretrain_policy"), prm=model("train_prm"),
      revision=model("train_revision"), orm=model("train_orm"))
  return search_into(search_run(config, sweep, ckpts), ctx)


def search_into(run: sweep_runner.SearchRun,
                ctx: stages.StageContext) -> dict[str, int]:
  """Runs `run` with its records growing in the stage's work directory (a
  killed run resumes) and copies them to the stage's records.jsonl."""
  work = ctx.work / "search"
  counts = sweep_runner.run(run, str(work))
  src = work / records_lib.RECORDS_FILE
  stages.atomic_write_bytes(ctx.out / records_lib.RECORDS_FILE,
                            src.read_bytes())
  return counts


def read_jsonl(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def flops_info(config: embedded.ArithStudyConfig) -> dict[str, Any]:
  """n_small, n_large and D_pre (tokens seen in pretraining)."""
  p = config.pretrain
  return {"n_small": config.policy.num_params(),
          "n_large": large_model_config(config.policy).num_params(),
          "d_pretrain": p.train.total_steps * p.batch_size * p.row_len}


def analysis_config(sweep: SweepConfig) -> analysis_lib.AnalysisConfig:
  return analysis_lib.AnalysisConfig(
      n_bins=sweep.n_bins, n_bootstrap=sweep.n_bootstrap,
      target_budgets=tuple(float(b) for b in sweep.budgets))


def _analysis(config: embedded.ArithStudyConfig, sweep: SweepConfig,
              ctx: stages.StageContext):
  return analyze_into(ctx, max(sweep.budgets), flops_info(config),
                      analysis_config(sweep))


def analyze_into(ctx: stages.StageContext, oracle_budget: int,
                 flops: Mapping[str, Any] | None,
                 config: analysis_lib.AnalysisConfig) -> dict[str, Any]:
  """The analysis stage: the search_sweep stage's records, difficulty from
  its weighted best-of-N candidates at `oracle_budget`, the large_eval
  stage's results when it is an input (else no FLOPs-matched comparison),
  and the report (report.md, results.json, figures/) in `ctx.out`."""
  recs = read_jsonl(ctx.input("search_sweep") / records_lib.RECORDS_FILE)
  oracle, scores = difficulty.samples_from_records(
      recs, strategy="best_of_n", budget=oracle_budget,
      hparams={"selection": "weighted"})
  if not oracle:
    raise ValueError(f"no best_of_n records at budget {oracle_budget} with "
                     f"selection 'weighted': nothing to bin the problems by")
  large = None
  if "large_eval" in ctx.inputs:
    large = stages.read_json(ctx.input("large_eval") / "results.json")
  result = analysis_lib.analyze(recs, oracle, scores, large, flops, config)
  return {"files": sorted(report.write_report(ctx.out, result))}


def full_study_stages(config: embedded.ArithStudyConfig,
                      sweep: SweepConfig | str | None = None
                      ) -> list[stages.Stage]:
  """Training, evaluation, the large model, the search sweep, the report."""
  from ttcjax import experiments  # pylint: disable=g-import-not-at-top
  sw = sweep_for(config, sweep)
  c = config
  fn = lambda f, *a: functools.partial(f, c, *a)
  large = large_model_config(c.policy)
  sampling = embedded._sampling_config(c)  # pylint: disable=protected-access
  return experiments.study_stages(c) + [
      stages.Stage("pretrain_large", fn(_pretrain_large), dict(
          **embedded.task_fields(c), policy=large, seed=c.pretrain_seed,
          problems=c.pretrain_problems, training=c.pretrain), cost=20),
      stages.Stage("large_eval", fn(_large_eval), dict(
          sampling, **embedded.task_fields(c), test_seed=c.test_seed,
          test_problems=c.test_problems, prompt_len=c.prompt_len),
                   ("pretrain_large",), cost=1),
      stages.Stage("search_sweep", fn(_search_sweep, sw), dict(
          sampling, sweep=sw, **embedded.task_fields(c),
          test_seed=c.test_seed,
          test_problems=c.test_problems,
          revision_attempts=c.revision_attempts,
          revision_context=c.revision_context),
                   ("pretrain_policy", "train_prm", "train_revision",
                    "train_orm"), cost=10),
      stages.Stage("analysis", fn(_analysis, sw), dict(
          sweep=sw, flops=flops_info(c)),
                   ("search_sweep", "large_eval"), cost=1),
  ]


def copy_to_root(workdir: str) -> dict[str, str]:
  """Copies the analysis stage's report.md and results.json to `workdir`."""
  out = {}
  for name in ("report.md", "results.json"):
    src = os.path.join(workdir, "analysis", name)
    if os.path.exists(src):
      dst = os.path.join(workdir, name)
      with open(src, "rb") as f:
        stages.atomic_write_bytes(dst, f.read())
      out[name] = dst
  return out


def run_study(todo: Sequence[stages.Stage], workdir: str, *,
              only: Sequence[str] | None = None, on_change: str = "error",
              log: Callable[[str], None] = logging.info) -> dict[str, str]:
  """Runs a study's stages (`only` these and their inputs) into `workdir`;
  copies report.md and results.json to its root. Returns stage name ->
  artefact directory."""
  if only is not None:
    todo = stages.with_inputs(todo, only)
  dirs = stages.run_stages(todo, workdir, on_change=on_change, log=log)
  copy_to_root(os.fspath(workdir))
  return dirs


def run_full_study(config: embedded.ArithStudyConfig, workdir: str, *,
                   sweep: SweepConfig | str | None = None,
                   **kwargs) -> dict[str, str]:
  """`run_study` of `full_study_stages(config, sweep)`."""
  return run_study(full_study_stages(config, sweep), workdir, **kwargs)


def headline(results: Mapping[str, Any]) -> list[str]:
  """A few lines of the study's main numbers from results.json."""
  lines = [f"problems: {results.get('problems', {}).get('n')}"]
  for fam, body in (results.get("compute_optimal") or {}).items():
    for kind, k in (body.get("kinds") or {}).items():
      for e in k.get("headline") or []:
        lines.append(
            f"compute-optimal {fam}/{kind}: baseline N={e.get('target_budget')}"
            f" acc={_acc(e.get('baseline_accuracy'))} matched at "
            f"N={e.get('matched_budget')} ({e.get('status')}, ratio "
            f"{e.get('ratio')})")
  fm = results.get("flops_matched")
  if fm:
    lines.append(f"flops-matched: n_small={fm.get('n_small')} n_large="
                 f"{fm.get('n_large')} size_ratio={fm.get('size_ratio')}")
    lm = (fm.get("large_model") or {})
    for kind, accs in lm.items():
      lines.append(f"large model ({kind}) all: {_acc((accs or {}).get('all'))}")
  return lines


def _acc(a) -> str:
  if isinstance(a, Mapping):
    v = a.get('value')
    return f"{v:.3f}" if isinstance(v, (int, float)) else str(v)
  return str(a)
