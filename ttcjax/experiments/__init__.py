"""Experiments: studies built from stages with atomic, resumable artefacts.

`stages` is the generic runner (a study is a list of `Stage`s run into a
workdir, finished ones skipped, killed ones resumed). `embedded` holds the
embedded study's config, presets and training stages, `evaluate` its
measurements, `embedded_study` the sweep, large-model and analysis stages
and the runner shared with the checkpoint study, `studies` the two study
kinds a gin experiment selects (`ArithStudy`, `SearchStudy`), and
`sweep_runner` checkpoints + problems -> records.jsonl. `run_arith_study`
runs the training and evaluation stages:

  from ttcjax import experiments
  experiments.run_arith_study(experiments.embedded.smoke(), "/tmp/study", log=print)
  print(experiments.evaluate.summarize("/tmp/study"))
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import logging

from ttcjax.experiments import embedded, evaluate, stages
from ttcjax.experiments.embedded import ArithStudyConfig, RoleTraining
from ttcjax.experiments.stages import (Stage, StageConfigError, StageContext,
                                    run_stages)


def study_stages(config: ArithStudyConfig) -> list[Stage]:
  """Training then evaluation stages of the arithmetic study."""
  if config.prm_init == "large":
    raise ValueError("ArithStudyConfig.prm_init='large' starts the PRM from "
                     "the pretrain_large stage, which only the full study "
                     "has: run embedded_study.full_study_stages (make study)"
                     " or set prm_init='policy'")
  return embedded.training_stages(config) + evaluate.eval_stages(config)


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
