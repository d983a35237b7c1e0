"""What a study prints, and where its library logs go.

A study's console carries one line per stage (start; end with the study's
ETA), progress lines of long stages, and the headline with its intervals.
Everything logged through absl (the trainer's metric lines, the sweep's
batches, orbax's CheckpointManager dumps, JAX) goes to `<workdir>/study.log`
instead: about half of `make study`'s console used to be orbax INFO lines.
"""

from __future__ import annotations

import os

from absl import flags, logging

LOG_FILE = "study.log"


def log_to_file(workdir: str | os.PathLike) -> str:
  """Sends absl log records (and the Python logging records it handles) to
  `<workdir>/study.log`, appending; records at `--stderrthreshold` or above
  still reach stderr. Returns the file's path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.abspath(os.path.join(workdir, LOG_FILE))
  handler = logging.get_absl_handler().python_handler
  if getattr(handler.stream, "name", None) != path:
    handler.stream = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
  if flags.FLAGS.is_parsed():
    flags.FLAGS.logtostderr = False
  return path
