r"""Runs test-time search strategies over problems and appends records.

    python -m ttcjax.main.search --gin_file=search/beam.gin \
      --gin_bindings="search.Checkpoints.policy = '/ckpt/policy'" \
      --gin_bindings="search.Checkpoints.prm = '/ckpt/prm'" --workdir=/tmp/run

Writes `<workdir>/records.jsonl` (one record per problem, strategy,
hyper-parameters and budget; see `ttcjax.search.records`) and the operative
config, `<workdir>/config.gin`. Rerunning skips finished records. Files are
also looked up under gin_configs/. The checks of `ttcjax.experiments.preflight`
(checkpoints off the tokenizer's vocabulary, a tree cache too small for the
task's solutions, tree-search batches too big for the device's memory) run
first: a failure is one line and exit status 2, with nothing written.

On several hosts, every process runs the same command with its
--process_id (or the TTCJAX_* variables, or a cluster JAX detects); process 0
writes the files:

    python -m ttcjax.main.search ... --coordinator_address=host0:1234 \
      --num_processes=2 --process_id=0
"""

from absl import app, flags, logging
import gin

from ttcjax import distributed, faults, preemption, workdir_lock
from ttcjax.experiments import preflight, sweep_runner
from ttcjax.main import cli, configure, gin_utils

_GIN_FILES, _GIN_BINDINGS, _GIN_SEARCH_PATHS = gin_utils.define_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_PROCESS_FLAGS = distributed.define_flags()

# Gin names are `search.<Class>` (and `study.*`, so that an experiment file
# that also configures a study parses here); the libraries stay gin-free.
configure.register()
SearchRun = gin.get_configurable(sweep_runner.SearchRun)


def parse(gin_files, gin_bindings, search_paths=()) -> sweep_runner.SearchRun:
  """Parses gin files and bindings; returns the configured `SearchRun`.

  Raises:
    gin_utils.GinConfigError: naming the file, binding or unbound
      %gin.REQUIRED value at fault.
  """
  gin_utils.parse(gin_files, gin_bindings, search_paths)
  return gin_utils.build(sweep_runner.SearchRun)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _GIN_FILES.value:
    raise app.UsageError("give --gin_file (e.g. search/beam.gin) and "
                         "--workdir")
  try:
    distributed.initialize_from_flags(_PROCESS_FLAGS)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  config = parse(_GIN_FILES.value, _GIN_BINDINGS.value,
                 _GIN_SEARCH_PATHS.value)
  preflight.check_runs([config])  # before the workdir or any compile
  preemption.install()
  with (faults.guard("ttcjax.main.search"),
        workdir_lock.hold_for_run(_WORKDIR.value)):
    gin_utils.write_operative_config(_WORKDIR.value)
    counts = sweep_runner.run(config, _WORKDIR.value)
  logging.info("records: %d written, %d already there", counts["written"],
               counts["skipped"])


if __name__ == "__main__":
  cli.run(main, "ttcjax.main.search", output_flags=("workdir",))
