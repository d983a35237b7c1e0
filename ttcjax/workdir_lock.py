"""One writer per workdir: a lock file naming the holder, with take-over.

A run that writes a workdir (`ttcjax.main.study`, `search`, `train`) holds
`<workdir>/LOCK` for its whole life. The file is JSON:

  {"host": ..., "pid": ..., "started": "2026-...Z", "start_time": epoch s,
   "token": random hex, "command": argv, "heartbeat_s": s}

and its modification time is the holder's heartbeat: a thread touches it
every `heartbeat_s` seconds.

Acquiring creates the file with `O_CREAT | O_EXCL` (atomic, also on NFS v3+
and most network file systems). If it exists, the holder is judged:

  live   same host and its pid runs (and, where /proc shows it, started
         when the lock says); or another host and the heartbeat is younger
         than `stale_after_s`  ->  `WorkdirLocked`, naming the holder
  stale  same host and the pid is gone (a killed run), or another host
         whose heartbeat stopped  ->  taken over, with a warning naming
         the old holder

Take-over renames the stale file aside (only one contender's rename
succeeds), checks that the file it moved is the one it judged stale (else
it puts it back and reports the new holder), and creates its own.

Release deletes the file if it still carries this holder's token. A lock is
reentrant within a process (a study's entry point and its stage runner
both hold it), counted per workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import secrets
import socket
import sys
import threading
import time
from typing import Any, Iterator

from absl import logging

from ttcjax.faults import WorkdirLocked, describe  # re-exported

LOCK_FILE = "LOCK"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0

_held: dict[str, "_Held"] = {}  # realpath of workdir -> this process's hold
_held_guard = threading.Lock()


def _process_start_ticks(pid: int) -> int | None:
  """The start time of `pid` in clock ticks since boot (Linux), or None."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read()
  except OSError:
    return None
  try:  # the command name may hold spaces and parentheses: split after it
    return int(stat[stat.rindex(b")") + 2:].split()[19])
  except (ValueError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def _read(path: pathlib.Path) -> dict[str, Any] | None:
  """The lock file's holder, None if absent; a damaged file reads as {}."""
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError:
    return None
  except OSError:
    return {}
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def stale_reason(holder: dict[str, Any], mtime: float, *,
                 stale_after_s: float = STALE_AFTER_S,
                 now: float | None = None,
                 host: str | None = None) -> str | None:
  """Why a lock file's holder is gone, or None if it may still run.

  Args:
    holder: the lock file's JSON ({} if unreadable).
    mtime: the file's modification time (the last heartbeat).
    stale_after_s: a heartbeat older than this is stale (any host).
    now: the current time (default `time.time()`).
    host: this host's name (default `socket.gethostname()`).
  """
  now = time.time() if now is None else now
  host = socket.gethostname() if host is None else host
  age = now - mtime
  if holder.get("host") == host and isinstance(holder.get("pid"), int):
    pid = holder["pid"]
    if not _pid_alive(pid):
      return f"pid {pid} is gone"
    ticks = holder.get("start_ticks")
    if ticks is not None and _process_start_ticks(pid) not in (None, ticks):
      return f"pid {pid} is another process now"
    return None
  if age > stale_after_s:
    return (f"no heartbeat for {age:.0f} s (> {stale_after_s:.0f} s)" +
            ("" if holder else "; the lock file is unreadable"))
  return None


@dataclasses.dataclass
class _Held:
  path: pathlib.Path
  token: str
  count: int
  stop: threading.Event
  thread: threading.Thread | None


def _heartbeat(path: pathlib.Path, token: str, every: float,
               stop: threading.Event) -> None:
  while not stop.wait(every):
    try:
      if (_read(path) or {}).get("token") != token:
        logging.warning("%s: the lock is no longer this run's (taken over "
                        "or removed); heartbeat stops", path)
        return
      os.utime(path)
    except OSError as e:  # a full disk must not kill the run for this
      logging.warning("%s: heartbeat failed: %s", path, e)


def _create(path: pathlib.Path, holder: dict[str, Any]) -> bool:
  """Creates the lock file exclusively; False if it exists."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  try:
    os.write(fd, json.dumps(holder, sort_keys=True).encode())
    os.fsync(fd)
  except BaseException:
    os.close(fd)
    path.unlink(missing_ok=True)
    raise
  os.close(fd)
  return True


def _take_over(path: pathlib.Path, seen: dict[str, Any], reason: str,
               holder: dict[str, Any]) -> bool:
  """Moves a stale lock aside and creates ours; False if another run won."""
  aside = path.with_name(f"{LOCK_FILE}.stale.{holder['token']}")
  try:
    os.rename(path, aside)
  except FileNotFoundError:  # another contender moved it first
    return _create(path, holder)
  moved = _read(aside) or {}
  if moved.get("token") != seen.get("token"):
    # Between our read and the rename, someone replaced the stale lock:
    # the file moved is live. Put it back (link fails if yet another
    # run created one; then that one holds it).
    try:
      os.link(aside, path)
    except FileExistsError:
      pass
    aside.unlink(missing_ok=True)
    return False
  aside.unlink(missing_ok=True)
  logging.warning("%s: took over the lock of %s (%s)", path, describe(seen),
                  reason)
  print(f"note: took over the workdir lock of {describe(seen)} ({reason})",
        file=sys.stderr, flush=True)
  return _create(path, holder)


def acquire(workdir: os.PathLike, *, heartbeat_s: float = HEARTBEAT_S,
            stale_after_s: float = STALE_AFTER_S) -> None:
  """Takes the workdir's lock (creating the workdir), or raises at once.

  Reentrant: a second acquire in the same process only counts.

  Raises:
    WorkdirLocked: another live run holds it.
    ValueError: `stale_after_s` is not above `heartbeat_s`.
  """
  if not stale_after_s > 2 * heartbeat_s > 0:
    raise ValueError(f"stale_after_s={stale_after_s} must exceed twice "
                     f"heartbeat_s={heartbeat_s} > 0")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  key = os.path.realpath(workdir)
  with _held_guard:
    if key in _held:
      _held[key].count += 1
      return
    path = workdir / LOCK_FILE
    now = time.time()
    holder = {
        "host": socket.gethostname(), "pid": os.getpid(),
        "start_ticks": _process_start_ticks(os.getpid()),
        "started": datetime.datetime.fromtimestamp(
            now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_time": round(now, 3), "token": secrets.token_hex(8),
        "command": list(sys.argv), "heartbeat_s": heartbeat_s}
    for _ in range(8):  # contenders racing a take-over: a few rounds
      if _create(path, holder):
        break
      seen = _read(path)
      if seen is None:  # released between the two calls
        continue
      try:
        mtime = path.stat().st_mtime
      except FileNotFoundError:
        continue
      reason = stale_reason(seen, mtime, stale_after_s=stale_after_s)
      if reason is None:
        raise WorkdirLocked(path, seen)
      if _take_over(path, seen, reason, holder):
        break
    else:
      raise WorkdirLocked(path, _read(path) or {})
    stop = threading.Event()
    thread = threading.Thread(target=_heartbeat, daemon=True,
                              name=f"workdir-lock-heartbeat {workdir}",
                              args=(path, holder["token"], heartbeat_s, stop))
    thread.start()
    _held[key] = _Held(path, holder["token"], 1, stop, thread)


def release(workdir: os.PathLike) -> None:
  """Drops one hold; the last removes the lock file (if still ours)."""
  key = os.path.realpath(workdir)
  with _held_guard:
    held = _held.get(key)
    if held is None:
      return
    held.count -= 1
    if held.count:
      return
    del _held[key]
  held.stop.set()
  if (_read(held.path) or {}).get("token") == held.token:
    held.path.unlink(missing_ok=True)


def holds(workdir: os.PathLike) -> bool:
  """Whether this process holds `workdir`'s lock."""
  return os.path.realpath(workdir) in _held


@contextlib.contextmanager
def hold(workdir: os.PathLike, **kwargs) -> Iterator[None]:
  """`acquire` ... `release` around a block."""
  acquire(workdir, **kwargs)
  try:
    yield
  finally:
    release(workdir)


@contextlib.contextmanager
def hold_for_run(workdir: os.PathLike, **kwargs) -> Iterator[None]:
  """`hold` for an entry point that may run on several processes.

  Process 0 takes the lock (the one that writes the workdir's records and
  metadata); with several processes it tells the others whether it got it,
  so that on a refusal every process raises `WorkdirLocked`, not only the
  primary (the others would wait for it in a collective).
  """
  from ttcjax import distributed  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  several = distributed.is_initialized() and jax.process_count() > 1
  refusal = None
  if not several or distributed.is_primary():
    try:
      acquire(workdir, **kwargs)
    except WorkdirLocked as e:
      refusal = e
  if several:
    verdict = distributed.broadcast_from_primary(
        None if refusal is None else {"path": str(refusal.path),
                                      "holder": refusal.holder})
    if verdict is not None and refusal is None:
      refusal = WorkdirLocked(pathlib.Path(verdict["path"]),
                              verdict["holder"])
  if refusal is not None:
    raise refusal
  try:
    yield
  finally:
    if not several or distributed.is_primary():
      release(workdir)
