"""Training hyper-parameters."""

from __future__ import annotations

import dataclasses

OBJECTIVES = ("lm", "reward")

# Fields that shape the jitted train step. The others only steer the loop
# (when to log, evaluate, checkpoint, stop), so runs that differ only in them
# share one compiled step.
STEP_FIELDS = ("objective", "learning_rate", "warmup_steps", "total_steps",
               "final_learning_rate_ratio", "weight_decay", "clip_norm", "b1",
               "b2", "eps")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """What to optimise, how, and how the loop logs, evaluates and saves.

  Steps count optimizer updates: step `s` (0-based) trains on
  `train_source.get(s)`, and "at step n" means after n updates.

  Attributes:
    objective: 'lm' (next-token cross-entropy on `loss_weights`) or 'reward'
      (soft-label BCE of the reward head on `reward_targets`/`reward_weights`).
    learning_rate: peak learning rate.
    warmup_steps: linear warmup length; update s < warmup_steps uses
      `learning_rate * (s + 1) / warmup_steps`.
    total_steps: number of updates; the cosine decay ends here.
    final_learning_rate_ratio: the cosine decays to
      `learning_rate * final_learning_rate_ratio` at `total_steps`.
    weight_decay: decoupled (AdamW) decay of matrices and embeddings; norm
      scales and biases are never decayed.
    clip_norm: clip gradients to this global L2 norm; None disables clipping.
    b1: Adam first-moment decay.
    b2: Adam second-moment decay.
    eps: Adam denominator epsilon.
    eval_every: evaluate every this many steps (and at the last step), when
      an eval source is given.
    eval_batches: batches `eval_source.get(0 .. eval_batches-1)` per eval.
    checkpoint_every: save the train state every this many steps (and at the
      last step).
    keep_checkpoints: how many train-state checkpoints to keep.
    early_stopping_patience: stop once the eval loss has not improved for
      this many evals, and return the best params; None disables it.
    log_every: write a metrics record every this many steps (records are
      also written at eval, checkpoint and final steps).
    seed: seeds parameter init when no params are given.
    write_tensorboard: write TensorBoard summaries with clu (imports
      TensorFlow); otherwise metrics go to the log and metrics.jsonl only.
  """

  objective: str = "lm"
  learning_rate: float = 3e-4
  warmup_steps: int = 100
  total_steps: int = 1000
  final_learning_rate_ratio: float = 0.1
  weight_decay: float = 0.1
  clip_norm: float | None = 1.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  eval_every: int = 100
  eval_batches: int = 10
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  early_stopping_patience: int | None = None
  log_every: int = 10
  seed: int = 0
  write_tensorboard: bool = True

  def __post_init__(self):
    def fail(name, want):
      raise ValueError(f"TrainConfig.{name} must be {want}, got "
                       f"{getattr(self, name)!r}")

    if self.objective not in OBJECTIVES:
      fail("objective", f"one of {OBJECTIVES}")
    for name in ("total_steps", "eval_every", "eval_batches",
                 "checkpoint_every", "keep_checkpoints", "log_every"):
      value = getattr(self, name)
      if not _is_int(value) or value <= 0:
        fail(name, "a positive int")
    if not _is_int(self.warmup_steps) or not (
        0 <= self.warmup_steps <= self.total_steps):
      fail("warmup_steps", f"an int in [0, total_steps={self.total_steps}]")
    if not _is_number(self.learning_rate) or self.learning_rate <= 0:
      fail("learning_rate", "a number > 0")
    if not _is_number(self.final_learning_rate_ratio) or not (
        0 <= self.final_learning_rate_ratio <= 1):
      fail("final_learning_rate_ratio", "a number in [0, 1]")
    if not _is_number(self.weight_decay) or self.weight_decay < 0:
      fail("weight_decay", "a number >= 0")
    if self.clip_norm is not None and (not _is_number(self.clip_norm) or
                                       self.clip_norm <= 0):
      fail("clip_norm", "None or a number > 0")
    for name in ("b1", "b2"):
      value = getattr(self, name)
      if not _is_number(value) or not 0 <= value < 1:
        fail(name, "a number in [0, 1)")
    if not _is_number(self.eps) or self.eps <= 0:
      fail("eps", "a number > 0")
    patience = self.early_stopping_patience
    if patience is not None and (not _is_int(patience) or patience <= 0):
      fail("early_stopping_patience", "None or a positive int")
    if not _is_int(self.seed):
      fail("seed", "an int")
    if not isinstance(self.write_tensorboard, bool):
      fail("write_tensorboard", "a bool")

  def replace(self, **changes) -> "TrainConfig":
    """Returns a copy with `changes` applied (and validated)."""
    return dataclasses.replace(self, **changes)

  def step_key(self) -> "TrainConfig":
    """This config with the loop-only fields at their defaults.

    Two configs with equal `step_key()` compile to the same train step.
    """
    defaults = TrainConfig()
    return dataclasses.replace(
        defaults, **{name: getattr(self, name) for name in STEP_FIELDS})
