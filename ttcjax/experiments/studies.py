"""What `ttcjax.main.study` runs: the study experiments a gin file selects.

Two kinds of study, both a list of `ttcjax.experiments.stages` run into one
workdir (atomic, resumable, skipped when done):

  ArithStudy    the whole micro-scale study on the embedded arithmetic task
                (`ttcjax.experiments.embedded_study.full_study_stages`): train the
                policy, PRM, revision model, ORM and a ~14x model, evaluate,
                sweep every strategy, analyse, report. A preset by name, with
                optional overrides of top-level `ArithStudyConfig` and
                `SweepConfig` fields.
  SearchStudy   a study over given checkpoints (e.g. imported Hugging Face
                models on MATH-500): sweep the strategies of a
                `sweep_runner.SearchRun`, optionally score a larger policy
                greedily for the FLOPs-matched comparison, analyse, report.
                Difficulty comes from the best-of-N candidates at the
                largest budget (oracle: their correctness; predicted: their
                final PRM scores).

A gin experiment binds one of them:

    study.experiment.spec = @study.ArithStudy()
    study.ArithStudy.preset = 'arith_cpu'

The dataclasses stay gin-free; `ttcjax.main.configure.register()` makes
them and the search classes configurable (modules `study` and `search`),
for both entry points.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from ttcjax import checkpoint
from ttcjax.experiments import sweep_runner
from ttcjax.experiments import embedded, stages
from ttcjax.experiments import embedded_study
from ttcjax.search import records as records_lib
from ttcjax.analysis import results as analysis_lib

def _replace_checked(obj, overrides: Mapping[str, Any], what: str):
  names = {f.name for f in dataclasses.fields(obj)}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ValueError(f"{what}: unknown fields {unknown}; fields are "
                     f"{sorted(names)}")
  return dataclasses.replace(obj, **dict(overrides))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithStudy:
  """The embedded arithmetic study (`ttcjax.experiments.embedded_study`).

  Attributes:
    preset: 'smoke', 'arith_cpu' or 'micro' (`ttcjax.experiments.embedded.PRESETS`
      with `ttcjax.experiments.embedded_study.SWEEPS`).
    overrides: top-level `ArithStudyConfig` fields to replace (e.g.
      `{'seed': 1, 'test_problems': 128}`).
    sweep: `SweepConfig` fields to replace (e.g. `{'budgets': (4, 16)}`).
  """
  preset: str = "smoke"
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  sweep: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.preset not in embedded.PRESETS or self.preset not in (
        embedded_study.SWEEPS):
      raise ValueError(f"ArithStudy.preset={self.preset!r}: presets are "
                       f"{sorted(set(embedded.PRESETS) & set(embedded_study.SWEEPS))}")
    object.__setattr__(self, "overrides", dict(self.overrides))
    object.__setattr__(self, "sweep", {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in dict(self.sweep).items()})
    self.stages()  # validates the overrides before any work

  def config(self) -> embedded.ArithStudyConfig:
    base = embedded.PRESETS[self.preset]()
    if not self.overrides:
      return base
    return _replace_checked(base, self.overrides, "ArithStudy.overrides")

  def sweep_config(self) -> embedded_study.SweepConfig:
    return _replace_checked(embedded_study.SWEEPS[self.preset], self.sweep,
                            "ArithStudy.sweep")

  def stages(self) -> list[stages.Stage]:
    return embedded_study.full_study_stages(self.config(), self.sweep_config())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchStudy:
  """A study over given checkpoints: sweep, (large model), analysis.

  Attributes:
    search: the sweep (problems, checkpoints, strategies x budgets); it must
      include best-of-N at its largest budget with the 'weighted'
      selection, whose candidates define the difficulty bins.
    large_policy: checkpoint of a larger policy for the FLOPs-matched
      comparison, decoded greedily on the same problems; None skips it.
    pretrain_tokens: D_pre, tokens the policy was pretrained on (the
      FLOPs-matched budgets depend on it); required with `large_policy`.
    difficulty_budget: the best-of-N budget whose candidates are the
      difficulty samples (None: the largest best-of-N budget).
    analysis: the analysis settings (`ttcjax.analysis.results.AnalysisConfig`).
  """
  search: sweep_runner.SearchRun
  large_policy: str | None = None
  pretrain_tokens: int | None = None
  difficulty_budget: int | None = None
  analysis: analysis_lib.AnalysisConfig = dataclasses.field(
      default_factory=analysis_lib.AnalysisConfig)

  def __post_init__(self):
    bon = [s for s in self.search.strategies if s.strategy == "best_of_n"]
    if not bon or "weighted" not in bon[0].selections:
      raise ValueError("SearchStudy.search needs a best_of_n StrategySpec "
                       "with the 'weighted' selection: its candidates at the "
                       "largest budget are the difficulty samples")
    if (self.difficulty_budget is not None and
        self.difficulty_budget not in bon[0].budgets):
      raise ValueError(f"SearchStudy.difficulty_budget="
                       f"{self.difficulty_budget} is not a best_of_n budget "
                       f"{bon[0].budgets}")
    if self.large_policy is not None and not self.pretrain_tokens:
      raise ValueError("SearchStudy.large_policy needs pretrain_tokens (the "
                       "policy's D_pre) for the FLOPs-matched budgets")

  def oracle_budget(self) -> int:
    if self.difficulty_budget is not None:
      return self.difficulty_budget
    return max(next(s for s in self.search.strategies
                    if s.strategy == "best_of_n").budgets)

  def large_run(self) -> sweep_runner.SearchRun:
    """Greedy decoding of the large policy (one sample, N = 1)."""
    ckpts = dataclasses.replace(self.search.checkpoints,
                                policy=self.large_policy)
    greedy = sweep_runner.StrategySpec(strategy="best_of_n", budgets=(1,),
                                     selections=("plain",))
    return dataclasses.replace(self.search, checkpoints=ckpts,
                               strategies=(greedy,), temperature=0.0)

  def stages(self) -> list[stages.Stage]:
    out = [stages.Stage("search_sweep", self._sweep, self.search, cost=10)]
    inputs = ["search_sweep"]
    if self.large_policy is not None:
      out.append(stages.Stage("large_eval", self._large_eval,
                              self.large_run(), cost=1))
      inputs.append("large_eval")
    out.append(stages.Stage("analysis", self._analysis, dict(
        analysis=self.analysis, oracle_budget=self.oracle_budget(),
        pretrain_tokens=self.pretrain_tokens), tuple(inputs), cost=1))
    return out

  def _sweep(self, ctx: stages.StageContext):
    return embedded_study.search_into(self.search, ctx)

  def _large_eval(self, ctx: stages.StageContext):
    counts = embedded_study.search_into(self.large_run(), ctx)
    recs = embedded_study.read_jsonl(ctx.out / records_lib.RECORDS_FILE)
    return dict(counts, **embedded_study.write_large_results(
        ctx, {str(r["uid"]): bool(r["correct"]) for r in recs}))

  def flops_info(self) -> dict[str, Any] | None:
    if self.large_policy is None:
      return None
    return {
        "n_small": checkpoint.load_config(
            self.search.checkpoints.policy).num_params(),
        "n_large": checkpoint.load_config(self.large_policy).num_params(),
        "d_pretrain": int(self.pretrain_tokens)}

  def _analysis(self, ctx: stages.StageContext):
    return embedded_study.analyze_into(ctx, self.oracle_budget(),
                                    self.flops_info(), self.analysis)


Study = ArithStudy | SearchStudy


def experiment(spec: Study) -> Study:
  """The study a gin experiment selects (`study.experiment.spec = ...`)."""
  if not isinstance(spec, (ArithStudy, SearchStudy)):
    raise ValueError(f"study.experiment.spec must be @study.ArithStudy() or "
                     f"@study.SearchStudy(), got {spec!r}")
  return spec


def run(spec: Study, workdir: os.PathLike, *,
        only: Sequence[str] | None = None, on_change: str = "error",
        log: Callable[[str], None] = logging.info) -> dict[str, Any]:
  """Runs the study's unfinished stages into `workdir`
  (`ttcjax.experiments.embedded_study.run_study`)."""
  return embedded_study.run_study(spec.stages(), workdir, only=only,
                               on_change=on_change, log=log)
