r"""Trains a policy, PRM, revision model or ORM, as a gin run file says.

  python -m ttcjax.main.train \
      --gin_file=gin_configs/models/tiny.gin \
      --gin_file=gin_configs/runs/train_policy.gin \
      --gin_bindings='TRAIN_STEPS = 20' --workdir=/tmp/policy

  python -m ttcjax.main.train \
      --gin_file=gin_configs/experiments/arith_tiny_policy.gin \
      --workdir=/tmp/arith_tiny/policy

Give a model file (models/<size>.gin) then a run file (runs/train_<role>.gin),
or one experiment file; bind the run file's %gin.REQUIRED macros with
--gin_bindings. Files and includes are also looked up under gin_configs/.
The mesh is gin's too: --gin_bindings='MeshConfig.fsdp = 4'.

The operative config is written to <workdir>/config.gin before training;
`--gin_file=<workdir>/config.gin` reruns the same run. A workdir holding
train checkpoints resumes from the latest. The final parameters land in
<workdir>/final (a ttcjax checkpoint).

On several hosts, every process runs the same command, with
--coordinator_address, --num_processes and --process_id (or the TTCJAX_*
variables, or a cluster JAX detects).
"""

from absl import app
from absl import flags

from ttcjax import distributed, faults, preemption, workdir_lock
from ttcjax.main import cli, configure, gin_utils

_GIN_FILES, _GIN_BINDINGS, _GIN_SEARCH_PATHS = gin_utils.define_flags()
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.",
                               required=True)
_PROCESS_FLAGS = distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _GIN_FILES.value:
    raise app.UsageError("give --gin_file (a model file then a run file, or "
                         "an experiment file)")
  try:
    distributed.initialize_from_flags(_PROCESS_FLAGS)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  preemption.install()
  with (faults.guard("ttcjax.main.train"),
        workdir_lock.hold_for_run(_WORKDIR.value)):
    configure.train_from_gin(_GIN_FILES.value, _GIN_BINDINGS.value,
                             _WORKDIR.value, _GIN_SEARCH_PATHS.value)


if __name__ == "__main__":
  cli.run(main, "ttcjax.main.train", output_flags=("workdir",))
