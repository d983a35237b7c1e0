"""What `ttcjax.main.study` runs: the study experiments a gin file selects.

Two kinds of study, both a list of `ttcjax.experiments.stages` run into one
workdir (atomic, resumable, skipped when done):

  ArithStudy    the whole micro-scale study on an embedded task, arithmetic
                or Countdown (`ArithStudyConfig.task`;
                `ttcjax.experiments.embedded_study.full_study_stages`): train the
                policy, PRM, revision model, ORM and a ~14x model, evaluate,
                sweep every strategy, analyse, report. A preset by name, with
                optional overrides of top-level `ArithStudyConfig` and
                `SweepConfig` fields.
  SearchStudy   a study over given checkpoints (e.g. imported Hugging Face
                models on MATH-500): sweep the strategies of a
                `sweep_runner.SearchRun`, optionally score a larger policy
                greedily for the FLOPs-matched comparison, analyse, report.
                Difficulty comes from a best-of-N draw of its own key
                (`embedded_study.difficulty_run`; oracle: its correctness;
                predicted: its final PRM scores), never from the evaluated
                cells' candidates.

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
from ttcjax.experiments import embedded_study, preflight
from ttcjax.search import records as records_lib
from ttcjax.search import tree as tree_lib
from ttcjax.analysis import results as analysis_lib
from ttcjax.tasks import arithmetic, countdown

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
    preset: 'smoke', 'arith_cpu', 'micro' (arithmetic) or
      'countdown_smoke', 'countdown_cpu', 'countdown_micro'
      (`ttcjax.experiments.embedded.PRESETS` with
      `ttcjax.experiments.embedded_study.SWEEPS`).
    overrides: top-level `ArithStudyConfig` fields to replace (e.g.
      `{'seed': 1, 'test_problems': 128}`; 'arithmetic' still names the
      task_config of an arithmetic preset).
    sweep: `SweepConfig` fields to replace (e.g. `{'budgets': (4, 16)}`).
    large_model: train and evaluate the ~14x model for the FLOPs-matched
      comparison (the study's longest training); False leaves it out and
      the report without that section.
  """
  preset: str = "smoke"
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  sweep: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  large_model: bool = True

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
    overrides = dict(self.overrides)
    if "arithmetic" in overrides:  # its name before tasks were pluggable
      if "task_config" in overrides or base.task != "arithmetic":
        raise ValueError(f"ArithStudy.overrides: 'arithmetic' replaces the "
                         f"task_config of an arithmetic preset; preset "
                         f"{self.preset!r} runs {base.task!r}")
      overrides["task_config"] = overrides.pop("arithmetic")
    return _replace_checked(base, overrides, "ArithStudy.overrides")

  def sweep_config(self) -> embedded_study.SweepConfig:
    return _replace_checked(embedded_study.SWEEPS[self.preset], self.sweep,
                            "ArithStudy.sweep")

  def stages(self) -> list[stages.Stage]:
    return embedded_study.full_study_stages(self.config(), self.sweep_config(),
                                            large_model=self.large_model)

  def preflight(self) -> None:
    """Fails before any work if the sweep's tree-search cache or token cap
    cannot hold the task's solutions (`ttcjax.experiments.preflight`); the
    checkpoints are the study's own, trained on the task's vocabulary, and
    not yet written, so their memory is not checked."""
    sweep = self.sweep_config()
    names = ("pretrain_policy", "train_prm", "train_revision", "train_orm")
    run = embedded_study.search_run(
        self.config(), sweep, sweep_runner.Checkpoints(
            **dict(zip(("policy", "prm", "revision", "orm"),
                       (f"<{n}>" for n in names)))))
    preflight.check_runs(
        [run, embedded_study.difficulty_run(run, sweep.difficulty_samples)],
        checkpoints=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchStudy:
  """A study over given checkpoints: sweep, (large model), analysis.

  Attributes:
    search: the sweep (problems, checkpoints, strategies x budgets); it must
      include best-of-N with the 'weighted' selection (the search
      baseline).
    large_policy: checkpoint of a larger policy for the FLOPs-matched
      comparison, decoded greedily on the same problems; None skips it.
    pretrain_tokens: D_pre, tokens the policy was pretrained on (the
      FLOPs-matched budgets depend on it); required with `large_policy`.
    difficulty_samples: S, samples per problem of the difficulty draw, a
      best-of-N run of its own key on the same problems and models (None:
      the largest best-of-N budget of `search`; the paper: 2048).
    analysis: the analysis settings (`ttcjax.analysis.results.AnalysisConfig`).
  """
  search: sweep_runner.SearchRun
  large_policy: str | None = None
  pretrain_tokens: int | None = None
  difficulty_samples: int | None = None
  analysis: analysis_lib.AnalysisConfig = dataclasses.field(
      default_factory=analysis_lib.AnalysisConfig)

  def __post_init__(self):
    bon = [s for s in self.search.strategies if s.strategy == "best_of_n"]
    if not bon or "weighted" not in bon[0].selections:
      raise ValueError("SearchStudy.search needs a best_of_n StrategySpec "
                       "with the 'weighted' selection: it is the search "
                       "baseline")
    if self.difficulty_samples is not None and self.difficulty_samples < 2:
      raise ValueError(f"SearchStudy.difficulty_samples="
                       f"{self.difficulty_samples} must be >= 2")
    if self.large_policy is not None and not self.pretrain_tokens:
      raise ValueError("SearchStudy.large_policy needs pretrain_tokens (the "
                       "policy's D_pre) for the FLOPs-matched budgets")

  def samples(self) -> int:
    """S of the difficulty draw."""
    if self.difficulty_samples is not None:
      return self.difficulty_samples
    return max(next(s for s in self.search.strategies
                    if s.strategy == "best_of_n").budgets)

  def difficulty_run(self) -> sweep_runner.SearchRun:
    return embedded_study.difficulty_run(self.search, self.samples())

  def large_run(self) -> sweep_runner.SearchRun:
    """Greedy decoding of the large policy (one sample, N = 1)."""
    ckpts = dataclasses.replace(self.search.checkpoints,
                                policy=self.large_policy)
    greedy = sweep_runner.StrategySpec(strategy="best_of_n", budgets=(1,),
                                     selections=("plain",))
    return dataclasses.replace(self.search, checkpoints=ckpts,
                               strategies=(greedy,), temperature=0.0)

  def stages(self) -> list[stages.Stage]:
    out = [stages.Stage("search_sweep", self._sweep, dict(
        search=self.search, tree=tree_lib.VERSION), cost=10),
           stages.Stage(embedded_study.DIFFICULTY_STAGE, self._difficulty,
                        self.difficulty_run(), cost=1)]
    if self.large_policy is not None:
      out.append(stages.Stage("large_eval", self._large_eval,
                              self.large_run(), cost=1))
    inputs = embedded_study.analysis_inputs([s.name for s in out])
    out.append(stages.Stage("analysis", self._analysis, dict(
        analysis=self.analysis, difficulty_samples=self.samples(),
        pretrain_tokens=self.pretrain_tokens), inputs, cost=1))
    return out

  def preflight(self) -> None:
    """Fails before any work on checkpoints that do not fit the tokenizer,
    a tree-search cache / token cap too small for the task's solutions, or
    tree-search batches too big for the device's memory
    (`ttcjax.experiments.preflight`)."""
    runs = [self.search, self.difficulty_run()]
    if self.large_policy is not None:
      runs.append(self.large_run())
    preflight.check_runs(runs)

  def _sweep(self, ctx: stages.StageContext):
    return embedded_study.search_into(self.search, ctx)

  def _difficulty(self, ctx: stages.StageContext):
    return embedded_study.search_into(self.difficulty_run(), ctx)

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
    return embedded_study.analyze_into(ctx, self.samples(),
                                       self.flops_info(), self.analysis)


Study = ArithStudy | SearchStudy


def notices(spec: Study) -> list[str]:
  """Lines a study's console starts with: its analysis notice (e.g. that the
  preset cannot show the headline's direction)."""
  if isinstance(spec, ArithStudy):
    notice = embedded_study.analysis_config(spec.sweep_config()).notice
  else:
    notice = spec.analysis.notice
  return [notice] if notice else []


def experiment(spec: Study) -> Study:
  """The study a gin experiment selects (`study.experiment.spec = ...`)."""
  if not isinstance(spec, (ArithStudy, SearchStudy)):
    raise ValueError(f"study.experiment.spec must be @study.ArithStudy() or "
                     f"@study.SearchStudy(), got {spec!r}")
  return spec


def run(spec: Study, workdir: os.PathLike, *,
        only: Sequence[str] | None = None, on_change: str = "error",
        log: Callable[[str], None] = logging.info) -> dict[str, Any]:
  """Checks the study (`preflight`), then runs its unfinished stages into
  `workdir` (`ttcjax.experiments.embedded_study.run_study`)."""
  spec.preflight()
  return embedded_study.run_study(spec.stages(), workdir, only=only,
                               on_change=on_change, log=log)
