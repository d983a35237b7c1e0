r"""Runs test-time search strategies over problems and appends records.

    python -m ttcjax.main.search --gin_file=search/beam.gin \
      --gin_bindings="search.Checkpoints.policy = '/ckpt/policy'" \
      --gin_bindings="search.Checkpoints.prm = '/ckpt/prm'" --workdir=/tmp/run

Writes `<workdir>/records.jsonl` (one record per problem, strategy,
hyper-parameters and budget; see `ttcjax.search.records`) and the operative
config, `<workdir>/config.gin`. Rerunning skips finished records. Files are
also looked up under gin_configs/.
"""

from absl import app, flags, logging
import gin

from ttcjax.main import gin_utils, search_lib
from ttcjax.tasks import arithmetic

_GIN_FILES, _GIN_BINDINGS, _GIN_SEARCH_PATHS = gin_utils.define_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")

# Gin names are `search.<Class>`; the library itself stays gin-free.
SearchRun = gin.external_configurable(search_lib.SearchRun, module="search")
gin.external_configurable(search_lib.ProblemSource, module="search")
gin.external_configurable(search_lib.Checkpoints, module="search")
gin.external_configurable(search_lib.StrategySpec, module="search")
gin.external_configurable(arithmetic.ArithmeticConfig, module="search")


def parse(gin_files, gin_bindings, search_paths=()) -> search_lib.SearchRun:
  """Parses gin files and bindings; returns the configured `SearchRun`.

  Raises:
    gin_utils.GinConfigError: naming the file, binding or unbound
      %gin.REQUIRED value at fault.
  """
  gin_utils.parse(gin_files, gin_bindings, search_paths)
  return gin_utils.build(search_lib.SearchRun)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _GIN_FILES.value:
    raise app.UsageError("give --gin_file (e.g. search/beam.gin) and "
                         "--workdir")
  try:
    config = parse(_GIN_FILES.value, _GIN_BINDINGS.value,
                   _GIN_SEARCH_PATHS.value)
  except gin_utils.GinConfigError as e:
    raise SystemExit(f"ttcjax.main.search: {e}") from None
  gin_utils.write_operative_config(_WORKDIR.value)
  counts = search_lib.run(config, _WORKDIR.value)
  logging.info("records: %d written, %d already there", counts["written"],
               counts["skipped"])


if __name__ == "__main__":
  app.run(main)
