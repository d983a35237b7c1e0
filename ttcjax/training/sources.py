"""Batch sources: deterministic functions from a step to a batch.

A source is addressed by step, not iterated, so a resumed run asks for
exactly the batches the interrupted run would have seen, with no iterator
state to checkpoint.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from ttcjax.training.losses import OBJECTIVE_KEYS, SEGMENT_KEYS

Batch = Mapping[str, np.ndarray]


class BatchSource(Protocol):
  """Anything with a deterministic `get(step) -> batch`."""

  def get(self, step: int) -> Batch:
    """The batch of `step`; the same step always gives the same batch."""


class ArraySource:
  """Batches of rows of in-memory arrays, in per-epoch shuffled order.

  The rows form an endless stream: epoch `e` visits all N rows in the order
  `default_rng([seed, e]).permutation(N)`, and batch `s` is stream positions
  `[s * batch_size, (s + 1) * batch_size)`. A batch may straddle two epochs;
  no row is ever dropped, and `batch_size > N` is fine.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int,
               seed: int = 0):
    """Creates the source.

    Args:
      arrays: name -> `[N, ...]` array, all with the same N > 0.
      batch_size: rows per batch.
      seed: shuffling seed.
    """
    if not arrays:
      raise ValueError("ArraySource: arrays is empty")
    sizes = {name: np.shape(a)[0] if np.ndim(a) else None
             for name, a in arrays.items()}
    n = next(iter(sizes.values()))
    if not n or any(size != n for size in sizes.values()):
      raise ValueError(f"ArraySource: arrays need one positive leading size, "
                       f"got {sizes}")
    if not isinstance(batch_size, int) or batch_size <= 0:
      raise ValueError(f"ArraySource: batch_size must be a positive int, got "
                       f"{batch_size!r}")
    self.arrays = {name: np.asarray(a) for name, a in arrays.items()}
    self.num_rows = n
    self.batch_size = batch_size
    self.seed = seed
    self._permutations: dict[int, np.ndarray] = {}  # small per-instance memo

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      if len(self._permutations) > 4:
        self._permutations.clear()
      rng = np.random.default_rng([self.seed, epoch])
      self._permutations[epoch] = rng.permutation(self.num_rows)
    return self._permutations[epoch]

  def indices(self, step: int) -> np.ndarray:
    """Row indices of batch `step`, `[batch_size] int64`."""
    if step < 0:
      raise ValueError(f"ArraySource: step must be >= 0, got {step}")
    positions = step * self.batch_size + np.arange(self.batch_size)
    epochs, offsets = np.divmod(positions, self.num_rows)
    return np.array([self._permutation(int(e))[o]
                     for e, o in zip(epochs, offsets)])

  def get(self, step: int) -> dict[str, np.ndarray]:
    idx = self.indices(step)
    return {name: a[idx] for name, a in self.arrays.items()}


def check_batch(batch: Batch, objective: str, where: str) -> None:
  """Raises ValueError naming what is wrong with a batch for `objective`.

  Args:
    batch: a dict following the contract in `ttcjax.training`.
    objective: 'lm' or 'reward'.
    where: names the batch in errors, e.g. 'train_source.get(0)'.
  """
  keys = ("tokens", "token_mask") + OBJECTIVE_KEYS[objective]
  missing = [k for k in keys if k not in batch]
  if missing:
    raise ValueError(f"{where}: batch lacks {missing} needed by objective "
                     f"{objective!r} (has {sorted(batch)})")
  shape = np.shape(batch["tokens"])
  if len(shape) != 2:
    raise ValueError(f"{where}: tokens must be [batch, length], got {shape}")
  if not np.issubdtype(np.asarray(batch["tokens"]).dtype, np.integer):
    raise ValueError(f"{where}: tokens must be integers, got "
                     f"{np.asarray(batch['tokens']).dtype}")
  present = [k for k in SEGMENT_KEYS if k in batch]
  if len(present) == 1:
    raise ValueError(f"{where}: batch has {present[0]!r} but not both of "
                     f"{SEGMENT_KEYS} (ttcjax.data.packing.pack gives both)")
  for k in keys[1:] + tuple(present):
    if np.shape(batch[k]) != shape:
      raise ValueError(f"{where}: {k} has shape {np.shape(batch[k])}, tokens "
                       f"has {shape}")
