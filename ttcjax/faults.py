"""Faults of long runs on shared and preemptible machines, and how the entry
points report them: one line on stderr and a distinct exit status.

  status  fault                                      error
  2       another live run holds the workdir         `WorkdirLocked`
  65      a finished artefact is damaged             `CorruptArtefactError`
  69      a host did not reach a collective in time  `HostTimeoutError`
  74      a write failed (disk full, I/O error)      `WriteError` (an OSError)
  75      preempted (SIGTERM): state saved, rerun    `Preempted`

(65, 69, 74 and 75 are sysexits' EX_DATAERR, EX_UNAVAILABLE, EX_IOERR and
EX_TEMPFAIL: schedulers that retry on EX_TEMPFAIL resume a preempted run.)

In every case the workdir keeps its last good state: stages commit
atomically, records are appended a batch at a time and cut back on a failed
write, and train checkpoints are only listed once complete. Rerunning the
same command resumes.

`CorruptArtefactError` carries the stage whose artefact is damaged;
`guard` turns it into the exact command that redoes that stage
(`--only=STAGE --on_change=rerun`).

Every error above is defined here, so this module imports no other ttcjax
module (`distributed` raises `HostTimeoutError`); `workdir_lock` and
`preemption`, which raise `WorkdirLocked` and `Preempted`, re-export them.
"""

from __future__ import annotations

import contextlib
import errno as errno_lib
import os
import pathlib
import re
import shlex
import sys
from typing import Any, Iterator, Sequence

EXIT_LOCKED = 2
EXIT_CORRUPT = 65
EXIT_HOST_TIMEOUT = 69
EXIT_WRITE_FAILED = 74
EXIT_PREEMPTED = 75


class WriteError(OSError):
  """A write into the workdir failed; the path and the OS error are named.

  An `OSError` (same errno), so code that handles disk errors still does.
  """

  def __init__(self, path: os.PathLike | str, error: OSError):
    self.path, self.error = os.fspath(path), error
    code = error.errno if error.errno is not None else errno_lib.EIO
    reason = error.strerror or str(error) or type(error).__name__
    super().__init__(code, f"cannot write {self.path}: {reason}")

  def __str__(self) -> str:
    return self.strerror

  def __reduce__(self):
    return (type(self), (self.path, self.error))


_OS_ERROR_CODE = re.compile(r"\[os_error_code='?(\d+)'?\]")


def os_error_of(error: BaseException) -> OSError | None:
  """The OS error behind `error`: itself, or the `[os_error_code='N']` that
  tensorstore (orbax's array writer) puts in its ValueError messages."""
  if isinstance(error, OSError):
    return error
  match = _OS_ERROR_CODE.search(str(error))
  if match is None:
    return None
  code = int(match.group(1))
  return OSError(code, os.strerror(code))


@contextlib.contextmanager
def writing(path: os.PathLike | str) -> Iterator[None]:
  """Re-raises an `OSError` of the block (or an orbax/tensorstore error
  carrying an OS error code) as a `WriteError` naming `path`."""
  try:
    yield
  except WriteError:
    raise
  except (OSError, ValueError, RuntimeError) as e:
    cause = os_error_of(e)
    if cause is None:
      raise
    raise WriteError(path, cause) from e


class CorruptArtefactError(ValueError):
  """A file a run wrote earlier (or was given) cannot be read back.

  Attributes:
    path: the file.
    line: 1-based line of the damage, if known.
    detail: what is wrong.
    stage: the stage that made the file (set by the stage runner).
  """

  def __init__(self, path: os.PathLike | str, line: int | None, detail: str,
               stage: str | None = None):
    self.path, self.line, self.detail = os.fspath(path), line, detail
    self.stage = stage
    super().__init__(self._text())

  def _text(self) -> str:
    where = self.path if self.line is None else f"{self.path}:{self.line}"
    text = f"{where}: {self.detail}"
    if self.stage is not None:
      text += (f"; stage {self.stage!r} made it: redo that stage with "
               f"only=['{self.stage}'], on_change='rerun' (flags "
               f"--only={self.stage} --on_change=rerun)")
    return text

  def for_stage(self, stage: str) -> "CorruptArtefactError":
    """This error, naming the stage that made the file."""
    return CorruptArtefactError(self.path, self.line, self.detail, stage)

  def __reduce__(self):
    return (type(self), (self.path, self.line, self.detail, self.stage))


class HostTimeoutError(RuntimeError):
  """Processes of a multi-process run did not reach a collective in time."""

  def __init__(self, what: str, missing: Sequence[int], timeout_s: float):
    self.what, self.missing, self.timeout_s = what, list(missing), timeout_s
    names = ", ".join(str(p) for p in self.missing) or "unknown"
    super().__init__(f"{what}: process(es) {names} did not arrive within "
                     f"{timeout_s:g} s (dead, hung or unreachable); every "
                     f"process stops; rerun the same command to resume")


class WorkdirLocked(RuntimeError):
  """Another live run holds the workdir (`ttcjax.workdir_lock`)."""

  def __init__(self, path: pathlib.Path, holder: dict[str, Any]):
    self.path, self.holder = path, holder
    super().__init__(f"{path.parent} is in use by {describe(holder)} "
                     f"(lock file {path}); wait for it, stop it, or use "
                     f"another workdir")


def describe(holder: dict[str, Any]) -> str:
  """`pid 123 on host h since 2026-...Z (python -m ...)`."""
  command = holder.get("command")
  cmd = " ".join(command) if isinstance(command, list) else ""
  if len(cmd) > 120:
    cmd = cmd[:117] + "..."
  return (f"pid {holder.get('pid')} on host {holder.get('host')} since "
          f"{holder.get('started')}" + (f" ({cmd})" if cmd else ""))


class Preempted(Exception):
  """The run stopped for a preemption notice at a safe point
  (`ttcjax.preemption`).

  Not an error of the run: everything done is saved; rerun to resume.
  """

  def __init__(self, what: str):
    self.what = what
    super().__init__(f"preempted (SIGTERM): {what}; rerun the same command "
                     f"to resume")


def redo_command(argv: Sequence[str], stage: str) -> str:
  """`argv` as a `python -m` command line, with its --only/--on_change
  replaced by `--only=STAGE --on_change=rerun`."""
  args, skip = [], False
  for arg in list(argv)[1:]:
    if skip:
      skip = False
      continue
    name = arg.split("=", 1)[0]
    if name in ("--only", "--on_change"):
      skip = "=" not in arg
      continue
    args.append(arg)
  program = argv[0] if argv else "ttcjax.main.study"
  module = _module_of(program)
  head = (f"python -m {module}" if module else shlex.quote(program))
  tail = " ".join(shlex.quote(a) for a in args)
  return (f"{head} {tail} --only={stage} --on_change=rerun").replace("  ",
                                                                     " ")


def _module_of(program: str) -> str | None:
  """`ttcjax.main.study` for `.../ttcjax/main/study.py`, else None."""
  path = os.path.normpath(program)
  if not path.endswith(".py"):
    return None
  parts = path[:-3].split(os.sep)
  if "ttcjax" not in parts:
    return None
  return ".".join(parts[len(parts) - 1 - parts[::-1].index("ttcjax"):])


def _exit(program: str, message: str, status: int) -> None:
  print(f"{program}: {message}", file=sys.stderr, flush=True)
  raise SystemExit(status)


@contextlib.contextmanager
def guard(program: str, argv: Sequence[str] | None = None) -> Iterator[None]:
  """Turns the faults above into one stderr line and their exit status.

  Args:
    program: the entry point's name, e.g. 'ttcjax.main.study'.
    argv: the command line, for the redo command of a damaged stage
      (default `sys.argv`).
  """
  try:
    yield
  except WorkdirLocked as e:
    _exit(program, str(e), EXIT_LOCKED)
  except Preempted as e:
    _exit(program, str(e), EXIT_PREEMPTED)
  except CorruptArtefactError as e:
    message = str(e)
    if e.stage is not None:
      where = e.path if e.line is None else f"{e.path}:{e.line}"
      message = (f"{where}: {e.detail}; stage {e.stage!r} made it. Redo "
                 f"that stage: {redo_command(argv or sys.argv, e.stage)}")
    _exit(program, message, EXIT_CORRUPT)
  except HostTimeoutError as e:
    print(f"{program}: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not SystemExit: jax.distributed's shutdown at exit would wait for
    # the missing process (minutes). Files are fsynced as they are written.
    os._exit(EXIT_HOST_TIMEOUT)  # pylint: disable=protected-access
  except WriteError as e:
    _exit(program, f"{e}; the last finished state is kept: free space or "
          f"fix the disk, then rerun the same command to resume",
          EXIT_WRITE_FAILED)
  except OSError as e:
    if e.errno not in (errno_lib.ENOSPC, errno_lib.EIO, errno_lib.EDQUOT,
                       errno_lib.EFBIG, errno_lib.EROFS):
      raise
    path = e.filename or "a file of the run"
    _exit(program, f"cannot write {path}: {e.strerror or e}; the last "
          f"finished state is kept: free space or fix the disk, then rerun "
          f"the same command to resume", EXIT_WRITE_FAILED)
