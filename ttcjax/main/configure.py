"""gin registration for the entry points, and the gin-built training run.

The libraries stay gin-free (their configs are frozen dataclasses); the entry
points make them configurable here, under the names the gin files use:

* `register()`: `study.experiment`, `study.ArithStudy`, `study.SearchStudy`,
  `study.AnalysisConfig`, and `search.SearchRun`, `search.ProblemSource`,
  `search.Checkpoints`, `search.StrategySpec`, `search.ArithmeticConfig`,
  `search.CountdownConfig`;
  `SearchRun.mesh` takes the core `ttcjax.MeshConfig`;
* `train_from_gin(...)`: the core names plus `DataConfig` and `TrainRun`,
  then parse, build, write the operative config and train.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import gin

from ttcjax import partitioning
from ttcjax.analysis import results as analysis_lib
from ttcjax.experiments import studies, sweep_runner
from ttcjax.main import gin_utils
from ttcjax.tasks import arithmetic, countdown
from ttcjax.training import roles


def register() -> None:
  """Makes the study and search classes gin-configurable; idempotent."""
  gin_utils.register({"MeshConfig": partitioning.MeshConfig})
  for module, fns in (
      ("search", (sweep_runner.SearchRun, sweep_runner.ProblemSource,
                  sweep_runner.Checkpoints, sweep_runner.StrategySpec,
                  arithmetic.ArithmeticConfig, countdown.CountdownConfig)),
      ("study", (studies.experiment, studies.ArithStudy,
                 studies.SearchStudy, analysis_lib.AnalysisConfig))):
    for fn in fns:
      try:
        gin.get_configurable(f"{module}.{fn.__name__}")
      except ValueError:
        gin.external_configurable(fn, module=module)


def train_from_gin(gin_files: Sequence[str], gin_bindings: Sequence[str],
                   workdir: str | os.PathLike,
                   gin_search_paths: Sequence[str] = ()
                   ) -> tuple[Any, list[dict[str, Any]]]:
  """Parses gin, builds the `TrainRun`, writes `workdir/config.gin`, trains
  (`ttcjax.training.roles.train`).

  Every gin error (missing file, unknown binding, unbound REQUIRED macro,
  invalid value) is raised as `gin_utils.GinConfigError` before any data is
  built or any file written.
  """
  gin_utils.register(gin_utils.core_configurables() |
                     roles.GIN_CONFIGURABLES)
  gin_utils.parse(gin_files, gin_bindings, gin_search_paths)
  run = gin_utils.build(roles.TrainRun)
  gin_utils.write_operative_config(workdir)
  return roles.train(run, workdir)
