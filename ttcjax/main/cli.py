"""Runs an absl entry point so that a user error is one line and exit status 2.

    if __name__ == "__main__":
      cli.run(main, "ttcjax.main.search", output_flags=("workdir",))

A user error (a bad flag, gin file or binding, a missing or unreadable file
or checkpoint, a checkpoint ttcjax cannot import, a config value that fails
validation, a workdir whose finished stages were made with another config) prints `<program>: error: <message>` on one line of stderr and
exits with status 2, without a traceback. An output directory named by
`output_flags` that this run created is removed, so a refused run leaves
nothing behind. Any other exception is a bug and keeps its traceback.

What counts as a user error: the exception types in `USER_ERRORS`, and any
`ValueError` raised by ttcjax's own code (its validation names the field or
file at fault); a `ValueError` raised inside jax, flax or numpy is not one.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

import ttcjax
from ttcjax.experiments.stages import StageConfigError
from ttcjax.main import gin_utils
from ttcjax.models.hf_config import HFImportError
from ttcjax.models.hf_tokenizer import TokenizerFilesError

USER_ERRORS = (app.UsageError, flags.Error, gin_utils.GinConfigError,
               HFImportError, TokenizerFilesError, FileNotFoundError,
               FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, StageConfigError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(ttcjax.__file__))


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is the user's to fix (see the module docstring)."""
  if isinstance(error, USER_ERRORS):
    return True
  if not isinstance(error, ValueError):
    return False
  tb = error.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  if tb is None:
    return False
  raised_in = os.path.abspath(tb.tb_frame.f_code.co_filename)
  return raised_in.startswith(_PACKAGE_DIR + os.sep)


def one_line(error: BaseException) -> str:
  """The error's message on one line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return "; ".join(lines) or type(error).__name__


def fail(program: str, message: str) -> None:
  """Prints `<program>: error: <message>` to stderr and exits with 2."""
  print(f"{program}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def run(main: Callable[[Sequence[str]], None], program: str,
        output_flags: Sequence[str] = ()) -> None:
  """`app.run(main)`, with user errors reported as the module says."""

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(program, one_line(e))

  def guarded(argv):
    outputs = [flags.FLAGS[name].value for name in output_flags]
    created = [os.fspath(p) for p in outputs if p and not os.path.exists(p)]
    try:
      main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e):
        raise
      for path in created:
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
      fail(program, one_line(e))

  app.run(guarded, flags_parser=parse)
