"""Packing training examples into rows the t5x/seqio way, in numpy.

Several short examples share one row of `row_len` tokens, so a step spends
little on padding, and they stay apart: every token carries its example's
segment id and its position within that example, the model attends only
within a segment (`ttcjax.models.Transformer`'s `segment_ids`), and the LM
loss never predicts a segment's first token from the previous segment
(`ttcjax.training.losses.lm_loss`). An example inside a packed row is thus
computed exactly as it is alone, from position 0, which is how a verifier
reads a candidate at search time.

A packed batch is the contract batch of `ttcjax.data.examples.collate` plus

  segment_ids: [b, L] int32  1, 2, ... per example within its row, in order;
                             0 on padding.
  positions:   [b, L] int32  position of the token within its example
                             (0 at the example's first token); 0 on padding.

A batch without them (one example per row, any padding) means one segment
per row; `default_segments` gives its arrays.

Pure numpy: the study pipeline and `ttcjax.training.roles` both pack with
`pack`, and nothing here imports TensorFlow.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ttcjax.data import examples

SEGMENT_FEATURES = ("segment_ids", "positions")
DTYPES = {"segment_ids": np.int32, "positions": np.int32}
# Enters the hashed config of every training stage that packs, so finished
# studies made with another packing are recomputed. 1 was plain
# concatenation (no segment ids: examples attended to their row neighbours
# and positions ran on across them); 2 is this module.
VERSION = 2


def assign_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
  """Groups example indices into rows, in order, greedily.

  An example goes into the current row if it fits, else starts a new row
  (the examples' order is kept, so rows built from a shuffled list are
  shuffled too).

  Args:
    lengths: tokens of each example.
    row_len: tokens per row.

  Returns:
    Per row, the indices of its examples.

  Raises:
    ValueError: an example is longer than `row_len` (naming it).
  """
  if row_len < 1:
    raise ValueError(f"pack: row_len must be >= 1, got {row_len}")
  rows, current, used = [], [], 0
  for i, n in enumerate(lengths):
    if n > row_len:
      raise ValueError(f"pack: example {i} has {n} tokens > row_len="
                       f"{row_len}")
    if current and used + n > row_len:
      rows.append(current)
      current, used = [], 0
    current.append(i)
    used += n
  if current:
    rows.append(current)
  return rows


def pack(exs: Sequence[Mapping[str, np.ndarray]],
         row_len: int) -> dict[str, np.ndarray]:
  """Packs unpadded examples, in order, into rows of `row_len` tokens.

  Args:
    exs: unpadded examples (`ttcjax.data.examples`; missing features are
      zeros, a missing `token_mask` is all True).
    row_len: tokens per row, L.

  Returns:
    `{feature: [rows, L]}`: the contract's five features (right-padded, as
    `examples.collate` pads) plus `segment_ids` and `positions`. Each
    segment's first `loss_weights` entry is 0 (nothing in its segment
    predicts it).

  Raises:
    ValueError: an example is longer than `row_len`, or its arrays disagree
      in length.
  """
  lengths = [len(ex["tokens"]) for ex in exs]
  rows = assign_rows(lengths, row_len)
  batch = {k: np.zeros((len(rows), row_len), examples.DTYPES[k])
           for k in examples.FEATURES}
  batch.update({k: np.zeros((len(rows), row_len), DTYPES[k])
                for k in SEGMENT_FEATURES})
  for r, members in enumerate(rows):
    start = 0
    for segment, i in enumerate(members, start=1):
      ex, n = exs[i], lengths[i]
      span = slice(start, start + n)
      for key in examples.FEATURES:
        if key in ex:
          if len(ex[key]) != n:
            raise ValueError(f"pack: example {i} has {len(ex[key])} {key} "
                             f"but {n} tokens")
          batch[key][r, span] = ex[key]
        elif key == "token_mask":
          batch[key][r, span] = True
      batch["segment_ids"][r, span] = segment
      batch["positions"][r, span] = np.arange(n)
      batch["loss_weights"][r, start] = 0.0
      start += n
  return batch


def default_segments(token_mask: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
  """`(segment_ids, positions)` of an unpacked batch: one segment per row.

  Positions count the real tokens before each token, as the model counts
  them without explicit positions, so left- or right-padded rows are
  computed as before.

  Args:
    token_mask: `[b, L] bool`.

  Returns:
    `segment_ids [b, L] int32` (1 on real tokens, 0 on padding) and
    `positions [b, L] int32`.
  """
  mask = np.asarray(token_mask, bool)
  step = mask.astype(np.int32)
  return step, (np.cumsum(step, axis=1) - step).astype(np.int32)


def with_segments(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`batch` with `segment_ids` and `positions` (one segment per row where
  it has none)."""
  out = dict(batch)
  present = [k for k in SEGMENT_FEATURES if k in out]
  if len(present) == 1:
    raise ValueError(f"a batch with {present[0]!r} needs both "
                     f"{SEGMENT_FEATURES} (ttcjax.data.packing.pack gives "
                     f"both)")
  if not present:
    out["segment_ids"], out["positions"] = default_segments(out["token_mask"])
  return out
