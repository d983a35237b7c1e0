r"""Runs a study: the embedded study end to end, or a study over checkpoints.

  python -m ttcjax.main.study --gin_file=experiments/smoke.gin --workdir=DIR
  python -m ttcjax.main.study --preset=arith_cpu --workdir=DIR   # shortcut
  python -m ttcjax.main.study --preset=countdown_smoke --workdir=DIR
  python -m ttcjax.main.study --gin_file=experiments/math500_tpu.gin \
      --gin_bindings="POLICY_CKPT = '...'" ... --workdir=DIR

A gin experiment selects the study (`ttcjax.experiments.studies`):
`study.experiment.spec = @study.ArithStudy()` (a preset of the embedded
study, on arithmetic or Countdown, with overrides) or `@study.SearchStudy()` (sweep given
checkpoints, analyse, report). `--preset=NAME` is
`experiments/NAME.gin` without a file. The operative config goes to
`<workdir>/config.gin`. Finished stages are skipped, killed ones resume.
Prints one line per stage, then where report.md landed and the headline
numbers of results.json, each with its CI; absl/orbax logs go to
`<workdir>/study.log` (`ttcjax.experiments.console`).

The study runs in one process: its training and sweep stages are not
multi-host (use `ttcjax.main.train` / `ttcjax.main.search` for that).
"""

import json
import os

from absl import app, flags, logging

from ttcjax import faults, preemption, workdir_lock
from ttcjax.experiments import console, studies
from ttcjax.main import cli, configure, gin_utils
from ttcjax.experiments import embedded
from ttcjax.experiments import embedded_study

_PRESETS = sorted(set(embedded.PRESETS) & set(embedded_study.SWEEPS))
_GIN_FILES, _GIN_BINDINGS, _GIN_SEARCH_PATHS = gin_utils.define_flags()
_PRESET = flags.DEFINE_enum(
    "preset", None, _PRESETS,
    "An embedded study preset, instead of --gin_file (e.g. smoke, "
    "countdown_smoke).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.",
                               required=True)
_ONLY = flags.DEFINE_list("only", None, "Run these stages (and their inputs).")
_ON_CHANGE = flags.DEFINE_enum("on_change", "error", ["error", "rerun"],
                               "Stages whose config changed: error or rerun.")


def _log(line: str) -> None:
  logging.info("%s", line)
  print(line, flush=True)


def experiment(gin_files, gin_bindings, preset, search_paths=()
               ) -> studies.Study:
  """The study the flags select; gin errors name what is wrong.

  Raises:
    app.UsageError: both or neither of --gin_file and --preset.
    gin_utils.GinConfigError: a gin file, binding or value is wrong.
  """
  if bool(gin_files) == bool(preset):
    raise app.UsageError("give --gin_file=experiments/<name>.gin or "
                         f"--preset (one of {_PRESETS}), not both")
  configure.register()
  if preset:
    gin_files = [f"experiments/{preset}.gin"]
  gin_utils.parse(gin_files, gin_bindings, search_paths)
  return gin_utils.build(studies.experiment)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  spec = experiment(_GIN_FILES.value, _GIN_BINDINGS.value, _PRESET.value,
                    _GIN_SEARCH_PATHS.value)
  workdir = _WORKDIR.value
  preemption.install()
  with faults.guard("ttcjax.main.study"), workdir_lock.hold(workdir):
    for line in studies.notices(spec):  # a preset too small to show the effect
      print(line, flush=True)
    print(f"logs: {console.log_to_file(workdir)}", flush=True)
    gin_utils.write_operative_config(workdir)
    studies.run(spec, workdir, only=_ONLY.value, on_change=_ON_CHANGE.value,
                log=_log)
  path = os.path.join(workdir, "report.md")
  if not os.path.exists(path):
    print(f"no report yet (stages run: {_ONLY.value})")
    return
  print(f"report: {os.path.abspath(path)}")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for line in embedded_study.headline(results):
    print(line)


if __name__ == "__main__":
  cli.run(main, "ttcjax.main.study", output_flags=("workdir",))
