r"""Runs the end-to-end arithmetic study (`ttcjax.pipeline.study`).

  python -m ttcjax.main.study --preset=smoke --workdir=workdir/study

Finished stages are skipped, killed ones resume. Prints where report.md
landed and the headline numbers of results.json.
"""

import json
import os

from absl import app, flags, logging

from ttcjax.pipeline import arith, study

_PRESET = flags.DEFINE_enum("preset", "smoke", sorted(study.SWEEPS),
                            "Study preset (config and sweep).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.",
                               required=True)
_ONLY = flags.DEFINE_list("only", None, "Run these stages (and their inputs).")
_ON_CHANGE = flags.DEFINE_enum("on_change", "error", ["error", "rerun"],
                               "Stages whose config changed: error or rerun.")


def _log(line: str) -> None:
  logging.info("%s", line)
  print(line, flush=True)


def main(argv):
  del argv
  config = arith.PRESETS[_PRESET.value]()
  workdir = _WORKDIR.value
  study.run_full_study(config, workdir, sweep=_PRESET.value,
                       only=_ONLY.value, on_change=_ON_CHANGE.value, log=_log)
  path = os.path.join(workdir, "report.md")
  if not os.path.exists(path):
    print(f"no report yet (stages run: {_ONLY.value})")
    return
  print(f"report: {os.path.abspath(path)}")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for line in study.headline(results):
    print(line)


if __name__ == "__main__":
  app.run(main)
