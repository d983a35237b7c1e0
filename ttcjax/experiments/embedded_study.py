"""The end-to-end arithmetic study: training, evaluation, search, report.

`full_study_stages(config)` is `ttcjax.experiments.study_stages(config)` (the
policy, PRM, revision model and ORM, and their evaluations) followed by the
stages below (pretrain_large moves up before train_prm when the PRM starts
from it, `ArithStudyConfig.prm_init='large'`):

  pretrain_large  an LM with ~14x the policy's parameters, trained on the
                  same pretraining data with the same recipe (the paper's
                  FLOPs-matched comparison, Sec. 7)
  large_eval      its greedy correctness on every test problem
  search_sweep    `ttcjax.experiments.sweep_runner.run` of every strategy x
                  hyper-parameters x budget over the test problems; the
                  records grow in the stage's work directory, so a killed
                  sweep resumes, and are copied to the stage output
  difficulty_samples
                  S best-of-N samples per swept problem, drawn with a key of
                  their own (`difficulty_seed`): their correctness bins by
                  oracle difficulty, their final PRM scores by predicted
                  difficulty and measure the PRM's AUC. Never the evaluated
                  cells' samples: a problem binned 0/64 by best-of-N@64's
                  own candidates scores 0 there by construction. Their cost
                  is the cost of predicting difficulty.
  oracle_sweep    the control: the PRM strategies of the paper's pool
                  (best-of-N weighted, beam, lookahead) over the same
                  problems and budgets with the task's exact step checker
                  as the verifier (`ttcjax.verifiers.oracle`): the ceiling
                  of each search with a perfect verifier, against which the
                  PRM's own sweep separates search quality from verifier
                  quality. Same record schema, plus `"verifier": "oracle"`;
                  `verifier_tokens` counts what the oracle read and
                  `flops_verifier` is 0 (a checker is no model). Best-of-N
                  draws the very samples of search_sweep (keys fold problem,
                  strategy and budget), so its cells pair with the PRM's.
  analysis        `ttcjax.analysis.results.analyze` of the sweep (and of an
                  `oracle_sweep` stage's records, when the study has one),
                  `report.write_report` (report.md, results.json,
                  figures/); report.md and results.json are also copied to
                  the workdir root

Lookahead's N sits on the budget grid: with k roll-out steps it runs at the
N whose N (k + 1) generations are a sweep budget, so it competes with the
other methods at equal compute.

Budgets, strategies and analysis settings per preset live in `SWEEPS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from ttcjax import checkpoint, faults, models
from ttcjax.data import packing
from ttcjax.keys import stable_hash
from ttcjax.experiments import sweep_runner
from ttcjax.experiments import embedded, evaluate, stages
from ttcjax.search import records as records_lib
from ttcjax.search import tree as tree_lib
from ttcjax.analysis import results as analysis_lib
from ttcjax.analysis import difficulty, report

LARGE_RATIO = 14.0
DIFFICULTY_STAGE = "difficulty_samples"
ORACLE_STAGE = "oracle_sweep"  # records of the oracle-verifier control


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
    difficulty_samples: S, samples per problem of the difficulty draw (the
      paper: 2048).
    shows_direction: whether the preset is sized to show the headline's
      direction; False puts a notice first in the report and console that
      points at the committed arith_cpu results.
    incremental_verifier: the PRM sweep's tree searches read the PRM
      through a cache per row, only each round's new tokens
      (`SearchRun.incremental_verifier`): same candidates and answers,
      scores equal to 1e-5, fewer verifier tokens and FLOPs in the
      records. Off in every preset (their committed results were made
      without it); hashed only when on (`stages.hashed_if_set`), so
      finished studies keep their stage hashes.
    tree_cache_tokens: `SearchRun.tree_cache_tokens` of the sweeps (None:
      4 x max_new_tokens). All rows of a tree-search batch share one cache
      index, so each round spends the batch's longest step; a row still
      going when the slots run out is cut ('cache_end'). Room for every
      row to reach the token cap is about max_rounds x the longest step.
      Hashed only when set (`stages.hashed_if_set`).
  """
  budgets: tuple[int, ...]
  beam_widths: tuple[Any, ...] = (4, "sqrt")
  lookaheads: tuple[int, ...] = (1,)
  revision_lengths: tuple[int, ...] = (1, 2, 4)
  problems_per_batch: int = 8
  problems: int | None = None
  n_bins: int = 5
  n_bootstrap: int = 200
  difficulty_samples: int = 64
  shows_direction: bool = True
  incremental_verifier: bool = stages.hashed_if_set(False)
  tree_cache_tokens: int | None = stages.hashed_if_set(None)

  def __post_init__(self):
    for name in ("budgets", "beam_widths", "lookaheads", "revision_lengths"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.tree_cache_tokens is not None and not (
        isinstance(self.tree_cache_tokens, int) and self.tree_cache_tokens > 0):
      raise ValueError(f"SweepConfig.tree_cache_tokens must be None or an "
                       f"int > 0, got {self.tree_cache_tokens!r}")
    if not isinstance(self.incremental_verifier, bool):
      raise ValueError(f"SweepConfig.incremental_verifier must be a bool, "
                       f"got {self.incremental_verifier!r}")
    if self.difficulty_samples < 2:
      raise ValueError(f"SweepConfig.difficulty_samples must be >= 2, got "
                       f"{self.difficulty_samples}")
    for k in self.lookaheads:
      if not lookahead_budgets(self.budgets, k):
        raise ValueError(
            f"SweepConfig.lookaheads: k={k} costs N * {k + 1} generations, "
            f"and no budget in {self.budgets} is a multiple of {k + 1}; "
            f"change lookaheads or budgets")


def lookahead_budgets(budgets: Sequence[int], k: int) -> tuple[int, ...]:
  """Lookahead's N per sweep budget B with N (k + 1) = B (B a multiple of
  k + 1)."""
  return tuple(b // (k + 1) for b in budgets if b % (k + 1) == 0)


NO_DIRECTION_NOTICE = (
    "This preset checks the pipeline's wiring; it is too small to show the "
    "direction of the effect (PRM-weighted best-of-N rising with N, "
    "compute-optimal beating it). docs/results/countdown_cpu/ holds the "
    "full Countdown run, where PRM-weighted best-of-N rises with N and, "
    "with the exact value as verifier, beam search beats it in the hardest "
    "bin, while the learned PRM does not yet beat majority voting; "
    "docs/results/arith_cpu/ holds the full arith_cpu run, a negative "
    "control (its PRM does not rank one problem's solutions); the README "
    "says what reproduces.")

SWEEPS = {
    "smoke": SweepConfig(budgets=(2, 4, 8), revision_lengths=(1, 2, 4),
                         difficulty_samples=16, shows_direction=False),
    # 128 of the 256 test problems and one lookahead k keep the sweep
    # (~100k generations) near an hour on 2 cores; the difficulty draw adds
    # 64 samples per problem (~8k generations). 768 tree cache slots (384
    # by default) leave room for 40 rounds of 12-byte steps. (Beam search's
    # 1.8% / 2.3% cut at N=64 before tree.VERSION 3 was not the cache: 768
    # slots cut the same candidates; a refilled child was compared with its
    # row's previous occupant, fixed in VERSION 3.)
    "arith_cpu": SweepConfig(budgets=(4, 16, 64), lookaheads=(1,),
                             revision_lengths=(1, 4, 16), problems=128,
                             n_bootstrap=1000, difficulty_samples=64,
                             tree_cache_tokens=768),
    "micro": SweepConfig(budgets=(2,), revision_lengths=(1, 2),
                         problems_per_batch=4, n_bins=2, n_bootstrap=20,
                         difficulty_samples=2, shows_direction=False),
    "countdown_smoke": SweepConfig(budgets=(2, 4, 8),
                                   revision_lengths=(1, 2, 4),
                                   difficulty_samples=16,
                                   shows_direction=False),
    "countdown_cpu": SweepConfig(budgets=(4, 16, 64), lookaheads=(1,),
                                 revision_lengths=(1, 4, 16), problems=128,
                                 n_bootstrap=1000, difficulty_samples=64),
    "countdown_micro": SweepConfig(budgets=(2,), revision_lengths=(1, 2),
                                   problems_per_batch=4, n_bins=2,
                                   n_bootstrap=20, difficulty_samples=2,
                                   shows_direction=False),
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


ORACLE_STRATEGIES = ("best_of_n", "beam", "lookahead")


def search_run(config: embedded.ArithStudyConfig, sweep: SweepConfig,
               ckpts: sweep_runner.Checkpoints,
               specs: Sequence[sweep_runner.StrategySpec] | None = None,
               oracle: bool = False) -> sweep_runner.SearchRun:
  """The sweep's `SearchRun` over the test problems (`specs`: other
  strategies than the sweep's); with `oracle`, the `ORACLE_STRATEGIES`
  (best-of-N weighted only) with the oracle verifier (`ckpts.prm` unused)."""
  b = tuple(sweep.budgets)
  specs = list(specs) if specs is not None else [
      sweep_runner.StrategySpec(strategy="best_of_n", budgets=b,
                              selections=("weighted", "majority", "plain")),
      sweep_runner.StrategySpec(strategy="beam", budgets=b,
                              grid={"beam_width": sweep.beam_widths}),
  ] + [
      sweep_runner.StrategySpec(strategy="lookahead",
                                budgets=lookahead_budgets(b, k),
                                grid={"lookahead": (k,)})
      for k in sweep.lookaheads
  ] + [
      sweep_runner.StrategySpec(strategy="dvts", budgets=b),
  ] + ([] if oracle else [  # the oracle sweep reads no revision setting
      sweep_runner.StrategySpec(strategy="revisions", budgets=b,
                              grid={"revision_length":
                                    sweep.revision_lengths},
                              base={"revision_context":
                                    config.revision_context},
                              selections=("weighted", "majority")),
  ])
  if oracle:
    specs = [dataclasses.replace(s, selections=("weighted",))
             if s.strategy == "best_of_n" else s
             for s in specs if s.strategy in ORACLE_STRATEGIES]
  count = min(sweep.problems or config.test_problems, config.test_problems)
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(
          task=config.task, num_problems=count, seed=config.test_seed,
          **{config.task: config.task_config}),
      checkpoints=ckpts, strategies=specs,
      max_new_tokens=config.max_new_tokens, temperature=config.temperature,
      problems_per_batch=min(sweep.problems_per_batch, count),
      seed=config.seed, prompt_len=config.prompt_len,
      # Read only by revisions: a run without them (the difficulty draw,
      # the oracle sweep) neither needs nor hashes the revision settings.
      revision_prompt_len=(evaluate.revision_prompt_len(
          config, [p.question for p in _test_problems(config)])
                           if any(s.strategy == "revisions" for s in specs)
                           else None),
      tree_cache_tokens=sweep.tree_cache_tokens,
      verifier="oracle" if oracle else "prm",
      incremental_verifier=sweep.incremental_verifier and not oracle)


def _checkpoints(ctx: stages.StageContext) -> sweep_runner.Checkpoints:
  model = lambda stage: str(ctx.input(stage) / "model")
  names = {"policy": "pretrain_policy", "prm": "train_prm",
           "revision": "train_revision", "orm": "train_orm"}
  return sweep_runner.Checkpoints(**{
      role: model(stage) for role, stage in names.items()
      if stage in ctx.inputs})


def _search_sweep(config: embedded.ArithStudyConfig, sweep: SweepConfig,
                  ctx: stages.StageContext):
  return search_into(search_run(config, sweep, _checkpoints(ctx)), ctx)


def difficulty_seed(seed: int) -> int:
  """The search seed of the difficulty draw: a key of its own, so its
  samples are never those of a sweep cell (whose keys fold `seed`)."""
  return stable_hash(f"difficulty_samples:{seed}")


def difficulty_run(run: sweep_runner.SearchRun,
                   samples: int) -> sweep_runner.SearchRun:
  """`run` reduced to the difficulty draw: best-of-N with `samples`
  candidates per problem scored by the final PRM score ('last'), on the
  same problems, models and sampler, seeded by `difficulty_seed`."""
  spec = sweep_runner.StrategySpec(strategy="best_of_n", budgets=(samples,),
                                   selections=("weighted",),
                                   base={"aggregation": "last"})
  return dataclasses.replace(run, strategies=(spec,),
                             seed=difficulty_seed(run.seed))


def _difficulty_samples(config: embedded.ArithStudyConfig,
                        sweep: SweepConfig, ctx: stages.StageContext):
  run = search_run(config, sweep, _checkpoints(ctx), specs=())
  return search_into(difficulty_run(run, sweep.difficulty_samples), ctx)


def read_difficulty_samples(path, samples: int
                            ) -> tuple[dict, dict, dict[str, float]]:
  """A difficulty_samples stage's records -> `(correct, scores, flops)`:
  uid -> the S candidates' correctness and final PRM scores, and the FLOPs
  per sample (policy, verifier; the cost of predicting difficulty)."""
  recs = read_jsonl(path)
  correct, scores = difficulty.samples_from_records(
      recs, strategy="best_of_n", budget=samples,
      hparams={"selection": "weighted"})
  per = {}
  for name, field in (("policy_flops_per_sample", "flops_policy"),
                      ("verifier_flops_per_sample", "flops_verifier")):
    values = [r.get(field) for r in recs]
    if values and all(v is not None for v in values):
      per[name] = sum(values) / len(values) / samples
  return correct, scores, per


def _oracle_sweep(config: embedded.ArithStudyConfig, sweep: SweepConfig,
                  ctx: stages.StageContext):
  ckpts = sweep_runner.Checkpoints(
      policy=str(ctx.input("pretrain_policy") / "model"))
  return search_into(search_run(config, sweep, ckpts, oracle=True), ctx)


def search_into(run: sweep_runner.SearchRun,
                ctx: stages.StageContext) -> dict[str, int]:
  """Runs `run` with its records growing in the stage's work directory (a
  killed run resumes) and copies them to the stage's records.jsonl."""
  work = ctx.work / "search"
  counts = sweep_runner.run(run, str(work), progress=_progress_line(ctx))
  src = work / records_lib.RECORDS_FILE
  stages.atomic_write_bytes(ctx.out / records_lib.RECORDS_FILE,
                            src.read_bytes())
  return counts


def _progress_line(ctx: stages.StageContext, every_s: float = 60.0,
                   clock: Callable[[], float] = time.perf_counter):
  """A `sweep_runner.run` progress callback: a console line (via `ctx.log`)
  at most every `every_s` seconds, and at the end, with an ETA."""
  began = clock()
  last = [began]

  def report_(done: int, total: int) -> None:
    now = clock()
    if total <= 0 or (now - last[0] < every_s and done < total):
      return
    last[0] = now
    spent = now - began
    left = spent / max(done, 1) * (total - done)
    ctx.log(f"  {ctx.name}: {done}/{total} generations ({done / total:.0%};"
            f" {stages.duration(spent)} so far, ~{stages.duration(left)} "
            "left)")

  return report_


def read_jsonl(path) -> list[dict]:
  """The JSON objects of a jsonl artefact, one per non-empty line.

  Raises:
    faults.CorruptArtefactError: missing file, or a line that is not a
      JSON object (naming path:line).
  """
  try:
    with open(path, "rb") as f:
      lines = f.read().split(b"\n")
  except FileNotFoundError:
    raise faults.CorruptArtefactError(path, None, "missing") from None
  out = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      value = json.loads(line.decode("utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
      cut = number == len(lines) and line == lines[-1]
      raise faults.CorruptArtefactError(
          path, number, f"{'truncated' if cut else 'not JSON'} ({e})"
      ) from None
    if not isinstance(value, dict):
      raise faults.CorruptArtefactError(path, number, "not a JSON object")
    out.append(value)
  return out


def flops_info(config: embedded.ArithStudyConfig) -> dict[str, Any]:
  """n_small, n_large and D_pre (tokens seen in pretraining)."""
  p = config.pretrain
  return {"n_small": config.policy.num_params(),
          "n_large": large_model_config(config.policy).num_params(),
          "d_pretrain": p.train.total_steps * p.batch_size * p.row_len}


def analysis_config(sweep: SweepConfig) -> analysis_lib.AnalysisConfig:
  return analysis_lib.AnalysisConfig(
      n_bins=sweep.n_bins, n_bootstrap=sweep.n_bootstrap,
      target_budgets=tuple(float(b) for b in sweep.budgets),
      notice=None if sweep.shows_direction else NO_DIRECTION_NOTICE)


def _analysis(config: embedded.ArithStudyConfig, sweep: SweepConfig,
              ctx: stages.StageContext):
  return analyze_into(ctx, sweep.difficulty_samples, flops_info(config),
                      analysis_config(sweep))


def analyze_into(ctx: stages.StageContext, difficulty_samples: int,
                 flops: Mapping[str, Any] | None,
                 config: analysis_lib.AnalysisConfig) -> dict[str, Any]:
  """The analysis stage: the search_sweep stage's records, difficulty from
  the difficulty_samples stage's draw (S = `difficulty_samples` per
  problem), the oracle_sweep stage's records and the large_eval stage's
  results when they are inputs, and the report (report.md, results.json,
  figures/) in `ctx.out`."""
  recs = read_jsonl(ctx.input("search_sweep") / records_lib.RECORDS_FILE)
  oracle, scores, per_sample = read_difficulty_samples(
      ctx.input(DIFFICULTY_STAGE) / records_lib.RECORDS_FILE,
      difficulty_samples)
  flops = dict(flops or {})
  if per_sample:
    flops["difficulty"] = per_sample
  large = oracle_recs = None
  if "large_eval" in ctx.inputs:
    large = stages.read_json(ctx.input("large_eval") / "results.json")
  if ORACLE_STAGE in ctx.inputs:
    oracle_recs = read_jsonl(ctx.input(ORACLE_STAGE) /
                             records_lib.RECORDS_FILE)
  result = analysis_lib.analyze(recs, oracle, scores, large, flops or None,
                                config, oracle_records=oracle_recs)
  return {"files": sorted(report.write_report(ctx.out, result))}


def analysis_inputs(names: Sequence[str]) -> tuple[str, ...]:
  """The analysis stage's inputs among a study's stage `names`."""
  return tuple(n for n in ("search_sweep", DIFFICULTY_STAGE, ORACLE_STAGE,
                           "large_eval") if n in names)


def full_study_stages(config: embedded.ArithStudyConfig,
                      sweep: SweepConfig | str | None = None,
                      large_model: bool = True) -> list[stages.Stage]:
  """Training, evaluation, the large model, the search sweep, the report.

  With `ArithStudyConfig.prm_init='large'`, pretrain_large comes right
  after pretrain_policy, since the PRM starts from it. `large_model=False`
  leaves out pretrain_large and large_eval (the ~14x model, the study's
  longest training); the report then has no FLOPs-matched comparison."""
  if not large_model and config.prm_init == "large":
    raise ValueError("large_model=False: the PRM starts from the large model "
                     "(ArithStudyConfig.prm_init='large'); keep it")
  sw = sweep_for(config, sweep)
  c = config
  st = functools.partial(embedded.scoped_stage, config=c)
  sampling = embedded._sampling_config  # pylint: disable=protected-access
  large_stage = st("pretrain_large", _pretrain_large, make_config=lambda v: dict(
      **embedded.task_fields(v), policy=large_model_config(v.policy),
      seed=v.pretrain_seed, problems=v.pretrain_problems,
      training=v.pretrain, packing=packing.VERSION,
      **embedded.pretrain_drills_field(v)), cost=20)
  head = embedded.training_stages(c) + evaluate.eval_stages(c)
  if c.prm_init == "large":  # the PRM starts from it: train it first
    head.insert(1, large_stage)
  todo = head + ([large_stage] if large_model and c.prm_init != "large"
                 else []) + ([
      st("large_eval", _large_eval, make_config=lambda v: dict(
          sampling(v), **embedded.task_fields(v), test_seed=v.test_seed,
          test_problems=v.test_problems, prompt_len=v.prompt_len),
         inputs=("pretrain_large",), cost=1)] if large_model else []) + [
      st("search_sweep", _search_sweep, args=(sw,), make_config=lambda v: dict(
          sampling(v), sweep=sw, **embedded.task_fields(v),
          test_seed=v.test_seed,
          test_problems=v.test_problems,
          revision_attempts=v.revision_attempts,
          revision_context=v.revision_context, tree=tree_lib.VERSION),
         inputs=("pretrain_policy", "train_prm", "train_revision",
                 "train_orm"), cost=10),
      st(DIFFICULTY_STAGE, _difficulty_samples, args=(sw,),
         make_config=lambda v: dict(
             sampling(v), problems=sw.problems, samples=sw.difficulty_samples,
             **embedded.task_fields(v), test_seed=v.test_seed,
             test_problems=v.test_problems),
         inputs=("pretrain_policy", "train_prm"), cost=1),
      st("oracle_sweep", _oracle_sweep, args=(sw,), make_config=lambda v: dict(
          sampling(v), sweep=dataclasses.replace(sw, incremental_verifier=False),
          **embedded.task_fields(v), test_seed=v.test_seed,
          test_problems=v.test_problems, strategies=ORACLE_STRATEGIES,
          tree=tree_lib.VERSION),
         inputs=("pretrain_policy",), cost=5),
  ]
  names = [s.name for s in todo]
  return todo + [
      st("analysis", _analysis, args=(sw,), make_config=lambda v: dict(
          sweep=sw, flops=flops_info(v)), inputs=analysis_inputs(names),
         cost=1),
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
  """The study's main numbers from results.json, each with its 95% CI; the
  results' warnings (a preset too small to show the direction, cut rates)
  come first."""
  lines = list(results.get("warnings") or [])
  cfg = results.get("config") or {}
  lines.append(f"problems: {results.get('problems', {}).get('n')}; "
               f"[95% bootstrap CIs over problems]")
  d = results.get("direction")
  if d:
    lines.append(f"{d['label']}: accuracy change from {d['from_budget']:g} "
                 f"to {d['to_budget']:g} generations {_acc(d['gain'], '+')}")
  for name, q in sorted((results.get("verifier") or {}).items()):
    lines.append(f"{name.upper()} ROC AUC: within a problem "
                 f"{_acc(q['within'])} ({q['within_problems']} problems), "
                 f"across problems {_acc(q['across'])}")
  heads = cfg.get("headline_families") or ()
  for fam, body in sorted((results.get("compute_optimal") or {}).items()):
    if fam not in heads:
      continue
    for kind, k in sorted((body.get("kinds") or {}).items()):
      for e in k.get("headline") or []:
        lines.append(
            f"compute-optimal {fam} ({kind} bins) vs {body['baseline_label']}"
            f" at N={e['target_budget']:g} (acc "
            f"{_acc(e.get('baseline_accuracy'))}): {_ratio(e)}")
  lines += _comparison_lines(results.get("comparisons"), "")
  oracle = results.get("oracle_verifier")
  if oracle:
    lines += _comparison_lines(oracle.get("comparisons"), "oracle verifier, ")
    for fam, body in sorted((oracle.get("compute_optimal") or {}).items()):
      if fam not in heads:
        continue
      points = ((body.get("kinds") or {}).get("oracle") or {}).get("points")
      if points:
        p = points[-1]
        lines.append(f"oracle verifier, compute-optimal {fam} at "
                     f"{p['budget']:g}: {_acc(p['accuracy'])}")
  fm = results.get("flops_matched")
  if fm:
    lines.append(f"flops-matched: n_small={fm.get('n_small')} n_large="
                 f"{fm.get('n_large')} size_ratio={fm.get('size_ratio')}")
    for kind, accs in sorted((fm.get("large_model") or {}).items()):
      lines.append(f"large model greedy ({kind} bins) all: "
                   f"{_acc((accs or {}).get('all'))}")
  return lines


def _comparison_lines(comparisons: Mapping[str, Any] | None,
                      prefix: str) -> list[str]:
  """Each compared method minus the baseline at its largest budget, overall
  and per oracle bin (paired CIs, results.json `comparisons`)."""
  rows = (comparisons or {}).get("rows") or []
  lines = []
  for method in sorted({r["method"] for r in rows}):
    r = max((r for r in rows if r["method"] == method),
            key=lambda r: r["budget"])
    per_bin = "; ".join(f"bin {b} {_acc(a, '+')}" for b, a in sorted(
        (r["bins"].get("oracle") or {}).items(), key=lambda kv: int(kv[0])))
    lines.append(f"{prefix}{r['label']} - {comparisons['baseline_label']} at "
                 f"{r['budget']:g}: {_acc(r['difference'], '+')}"
                 + (f" (oracle bins: {per_bin})" if per_bin else ""))
  return lines


def _ratio(e: Mapping[str, Any]) -> str:
  ci = (f" [{e['ratio_ci_low']:.3g}, {e['ratio_ci_high']:.3g}]"
        if e.get("ratio_ci_low") is not None else " [no CI]")
  if e.get("ratio") is not None:
    bound = ">= " if e["status"] == "matched_at_smallest_budget" else ""
    return (f"matched at {e['matched_budget']:.3g} ({e['status']}), ratio "
            f"{bound}{e['ratio']:.3g}{ci}")
  if e.get("ratio_upper_bound") is not None:
    return (f"{e['status']}, ratio < {e['ratio_upper_bound']:.3g}{ci}")
  return str(e.get("status"))


def _acc(a, sign: str = "") -> str:
  """'value [low, high]' of an acc dict."""
  if not isinstance(a, Mapping) or a.get("value") is None:
    return "n/a"
  text = f"{a['value']:{sign}.3f}"
  if a.get("ci_low") is not None:
    text += f" [{a['ci_low']:{sign}.3f}, {a['ci_high']:{sign}.3f}]"
  else:
    text += " [no CI]"
  return text
