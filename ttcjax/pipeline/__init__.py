"""Study pipelines: stages with atomic, resumable artefacts.

`stages` is the generic runner (a study is a list of `Stage`s run into a
workdir, finished ones skipped, killed ones resumed). `arith` holds the
arithmetic study's config, presets and training stages, `evaluate` its
measurements. `run_arith_study` runs the whole study:

  from ttcjax import pipeline
  pipeline.run_arith_study(pipeline.arith.smoke(), "/tmp/study", log=print)
  print(pipeline.evaluate.summarize("/tmp/study"))
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import logging

from ttcjax.pipeline import arith, evaluate, stages
from ttcjax.pipeline.arith import ArithStudyConfig, RoleTraining
from ttcjax.pipeline.stages import (Stage, StageConfigError, StageContext,
                                    run_stages)


def study_stages(config: ArithStudyConfig) -> list[Stage]:
  """Training then evaluation stages of the arithmetic study."""
  return arith.training_stages(config) + evaluate.eval_stages(config)


def run_arith_study(config: ArithStudyConfig, workdir: str, *,
                    only: Sequence[str] | None = None,
                    on_change: str = "error",
                    log: Callable[[str], None] = logging.info) -> dict:
  """Runs the study's stages into `workdir` (see `stages.run_stages`).

  Args:
    config: the study.
    workdir: output directory.
    only: run these stages and the ones they read (default: all).
    on_change: 'error' or 'rerun' for stages whose config changed.
    log: progress lines.

  Returns:
    Stage name -> artefact directory.
  """
  todo = study_stages(config)
  if only is not None:
    todo = stages.with_inputs(todo, only)
  return run_stages(todo, workdir, on_change=on_change, log=log)


__all__ = [
    "ArithStudyConfig", "RoleTraining", "Stage", "StageConfigError",
    "StageContext", "arith", "evaluate", "run_arith_study", "run_stages",
    "stages", "study_stages",
]
