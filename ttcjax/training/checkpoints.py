"""Train-state checkpoints under `workdir/checkpoints` (orbax CheckpointManager).

Each step directory holds two items: `state` (the whole `TrainState`: step,
params, optimizer state, each array restored straight into its sharding) and
`progress` (JSON: the early-stopping bookkeeping). orbax writes a step into a
temporary directory and renames it when complete, so a killed save leaves the
previous checkpoint as the latest. These are resume points; the model
checkpoint other stages read is `workdir/final` (`ttcjax.checkpoint`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etils import epath
import orbax.checkpoint as ocp

from ttcjax.checkpoint import absolute
from ttcjax.training.train_state import TrainState


@dataclasses.dataclass(kw_only=True)
class Progress:
  """Eval bookkeeping that must survive a restart for resume to be exact.

  Attributes:
    best_eval_loss: lowest eval loss so far, or None before the first eval.
    best_step: step of `best_eval_loss`.
    evals_since_best: evals since the last improvement.
    stopped: early stopping has ended the run.
    pending: per-step train metrics since the last metrics record (host
      numbers), saved by a preemption checkpoint between two records so
      that the resumed run's next record averages the same steps.
  """
  best_eval_loss: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0
  stopped: bool = False
  pending: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  def update(self, step: int, eval_loss: float,
             patience: int | None) -> bool:
    """Records an eval; returns whether it improved on the best."""
    improved = self.best_eval_loss is None or eval_loss < self.best_eval_loss
    if improved:
      self.best_eval_loss, self.best_step = eval_loss, step
      self.evals_since_best = 0
    else:
      self.evals_since_best += 1
    if patience is not None and self.evals_since_best >= patience:
      self.stopped = True
    return improved


class TrainCheckpoints:
  """Saves and restores `(TrainState, Progress)` by step."""

  def __init__(self, directory: epath.PathLike, keep: int):
    """Opens (creating if needed) the manager over `directory`.

    Args:
      directory: e.g. `workdir/checkpoints`.
      keep: how many of the latest steps to keep (older ones are deleted).
    """
    self.directory = epath.Path(absolute(directory))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: TrainState, progress: Progress) -> None:
    """Starts an asynchronous save (arrays are copied off device first)."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        progress=ocp.args.JsonSave(dataclasses.asdict(progress))))

  def restore(self, step: int,
              target: Any) -> tuple[TrainState, Progress]:
    """Restores a step into `target` (`train_state.abstract_state`)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        progress=ocp.args.JsonRestore()))
    return restored["state"], Progress(**restored["progress"])

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
