"""Preemption: a SIGTERM ends a run at the next safe point, state saved.

Cloud TPUs and most schedulers preempt with SIGTERM and a grace period.
An entry point calls `install()`; the loops then ask at their boundaries:

  trainer       after each step: `should_stop(step)`; if so it saves a
                checkpoint of that step, waits for it, raises `Preempted`
  search sweep  after each batch's records are written (fsynced):
                `should_stop(round)`; if so it raises `Preempted`
  stage runner  before each stage and after each `map_chunks` chunk

`Preempted` reaches the entry point, which exits with
`faults.EXIT_PREEMPTED` (75) and one line saying what was saved. A rerun of
the same command resumes: the trainer from the saved step (no step redone),
the sweep skipping the records written (no batch redone).

One process: the handler only sets a flag (a second SIGTERM kills at once,
as the default would). Several processes (`jax.distributed`): JAX's
preemption service catches SIGTERM on any host and agrees on a step every
host reaches; `should_stop(step)` is then
`multihost_utils.reached_preemption_sync_point(step)`, so every host saves
the same step. It must be called with the same, increasing step numbers on
every host, at every step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from absl import logging
import jax

from ttcjax.faults import Preempted  # re-exported

_requested = threading.Event()
_installed: dict[str, Any] = {}  # 'previous' -> the handler we replaced


def _multi_process() -> bool:
  from ttcjax import distributed  # pylint: disable=g-import-not-at-top
  return distributed.is_initialized() and jax.process_count() > 1


def _on_sigterm(signum, frame):  # pylint: disable=unused-argument
  if _requested.is_set():  # a second notice: stop now
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)
    return
  _requested.set()
  logging.warning("SIGTERM: stopping at the next safe point (a train step, "
                  "a search batch or a stage boundary); send it again to "
                  "stop now")


def install() -> None:
  """Catches SIGTERM (main thread only; idempotent).

  With several processes JAX's preemption service owns SIGTERM, and this
  is a no-op.
  """
  if _installed or _multi_process():
    return
  if threading.current_thread() is not threading.main_thread():
    raise RuntimeError("preemption.install() must run in the main thread")
  _installed["previous"] = signal.signal(signal.SIGTERM, _on_sigterm)


def uninstall() -> None:
  """Restores the SIGTERM handler `install` replaced; clears the flag."""
  if _installed:
    signal.signal(signal.SIGTERM, _installed.pop("previous"))
  _requested.clear()


def request() -> None:
  """Acts as if SIGTERM had arrived (tests, or a scheduler's own notice)."""
  _requested.set()


def requested() -> bool:
  """Whether this process has had a preemption notice."""
  return _requested.is_set()


def should_stop(step: int | None = None) -> bool:
  """Whether to save and stop at `step`.

  Args:
    step: the loop's step number: required with several processes, where
      every host must pass the same increasing numbers at every step.
  """
  if _multi_process():
    if step is None:
      raise ValueError("should_stop needs the step number on several "
                       "processes")
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(multihost_utils.reached_preemption_sync_point(int(step)))
  return _requested.is_set()


def check(what: str, step: int | None = None) -> None:
  """Raises `Preempted(what)` if `should_stop(step)`."""
  if should_stop(step):
    raise Preempted(what)
