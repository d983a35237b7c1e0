"""A verifier cache per row of a tree search: each round reads only new tokens.

Full re-scoring (`batching.score_rows`) reads every candidate's whole input
(prompt and all its steps) every round, so a PRM's cost grows with the
square of a solution's length. With `VerifierFns.incremental`, a tree
search keeps the verifier's key/value cache for every row of its batch
instead (`RowCache`):

* after the policy's prefill, the verifier reads each problem's prompt
  layout once and the cache is fanned out to the problem's N rows;
* each round, a row with a new step feeds only the ids its new step adds to
  its verifier input (`build_input`'s layout, step tags included), right
  padded to the round's widest row; the step's score is read at its end;
  rows without a new step feed padding only;
* lookahead roll-outs are fed on top and read, then the cache's bookkeeping
  is rolled back to the point after the new step (`cache.rollback`, as
  `stepping.rollout_and_rollback` does for the policy): the rows go on
  from there and keep nothing of their roll-outs;
* survivors' children take their parent's cache rows (`cache.take` with
  the policy's `src`).

Every call takes as many cache slots for all rows as its widest row (the
width rounded up to a power of two, so few shapes compile), and the cache
doubles as it fills, up to `IncrementalVerifier.max_len`. So that one long
step does not make every row read padding as wide as itself, the at most
1/8 of the rows with the longest chunks read what does not fit the others'
width in a batch of their own (gathered, then put back; not with `shard`).
With `IncrementalVerifier.rows`, a call reads at most that many rows: the
rows are fed in groups (each group's cache rows gathered, extended, then
put back), so the activation peak is a group's, not the batch's, at the
cost of one group's cache copy (`ttcjax.memory` counts both). A round that would
need more slots, or a `build_input` that does not extend a row's earlier
ids, raises `Fallback` before anything is fed; the search then re-scores
that batch in full from that round on. Scores equal full re-scoring up to
float rounding.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.decoding.decoder import put_rows
from ttcjax.search.base import VerifierFns
from ttcjax.search.batching import bucket


class Fallback(Exception):
  """The rows cannot be scored incrementally (cache full, or a layout that
  does not extend the ids fed so far)."""


@functools.partial(jax.jit, static_argnums=0)
def _extend(extend_fn, params, tokens, mask, cache):
  return extend_fn(params, tokens, mask, cache)


class RowCache:
  """The verifier's cache for every row of a batch, and the ids it holds.

  Attributes:
    fed: per row, the verifier ids its cache holds (host side).
    prompt_read: per problem, the prompt-layout tokens read at the start.
  """

  def __init__(self, verifier: VerifierFns,
               prompts: Sequence[Sequence[int]], rows_per_problem: int):
    """Reads every problem's prompt layout once, then fans it out.

    Raises:
      Fallback: a prompt layout longer than the cache's `max_len`.
    """
    self.verifier = verifier
    self.inc = verifier.incremental
    layouts = [list(verifier.build_input(list(p), [], [])[0])
               for p in prompts]
    width = max(len(ids) for ids in layouts)
    if width > self.inc.max_len:
      raise Fallback(f"prompt layout of {width} ids exceeds "
                     f"IncrementalVerifier.max_len={self.inc.max_len}")
    self.cache = self.inc.init_cache(len(prompts), self._slots(width))
    self.cache = self._place(self.cache)
    self._feed(dict(enumerate(layouts)), len(prompts))
    self.cache = self._place(self.cache.take(jnp.repeat(
        jnp.arange(len(prompts)), rows_per_problem)))
    self.fed = [list(ids) for ids in layouts for _ in range(rows_per_problem)]
    self.prompt_read = [len(ids) for ids in layouts]

  def _place(self, tree):
    return tree if self.verifier.shard is None else self.verifier.shard(tree)

  def _slots(self, used: int) -> int:
    return bucket(used + 1, self.inc.max_len)

  def _fit(self, longest: int, index: int) -> int:
    """The width of a call feeding at most `longest` ids at slot `index`:
    a power of two, or what is left of the cache.

    Raises:
      Fallback: the cache cannot hold `longest` more ids.
    """
    left = self.inc.max_len - index
    if longest > left:
      raise Fallback(f"{index + longest} verifier cache slots exceed "
                     f"IncrementalVerifier.max_len={self.inc.max_len}")
    return bucket(longest, left)

  def _plan(self, lengths: dict[int, int], rows: int
            ) -> tuple[int, int, list[int]]:
    """How to feed rows of `lengths` ids: `(width, straggler width,
    stragglers)`. All rows feed up to `width` ids in one call; the at most
    `rows // 8` stragglers with more then feed the rest as a batch of their
    own (never with `shard`). Both widths together are at most the one
    width a single call would take (`_fit`)."""
    one = self._fit(max(lengths.values()), int(self.cache.index))
    few = rows // 8
    if self.verifier.shard is not None or few == 0:
      return one, 0, []
    ordered = sorted(lengths.values(), reverse=True)
    main = bucket(ordered[few], one) if len(ordered) > few else 0
    long = sorted(r for r, n in lengths.items() if n > main)
    if not long or main >= one:
      return one, 0, []
    return main, bucket(ordered[0] - main, one - main), long

  def _feed(self, chunks: dict[int, list[int]], rows: int) -> np.ndarray:
    """Feeds `chunks[r]` to row `r` (other rows: padding).

    Returns:
      `[rows, width]` scores of the fed positions (right-padded chunks).
    """
    main, extra, long = self._plan({r: len(c) for r, c in chunks.items()},
                                   rows)
    needed = int(self.cache.index) + main + extra
    if needed > self.cache.max_len:
      self.cache = self._place(self.cache.grow(self._slots(needed - 1)))
    ids = np.full((rows, main + extra), self.verifier.pad_id, np.int32)
    mask = np.zeros((rows, main + extra), bool)
    for r, chunk in chunks.items():
      ids[r, :len(chunk)] = chunk
      mask[r, :len(chunk)] = True
    scores = np.zeros((rows, main + extra), np.float32)
    if main:
      scores[:, :main] = self._extend_rows(ids[:, :main], mask[:, :main])
    if long:
      # Stragglers, repeated to `rows // 8` rows (the copies feed nothing),
      # read the rest of their chunks on their own.
      scores[long, main:] = self._extend_rows(
          ids[long, main:], mask[long, main:], np.asarray(long),
          pad_to=rows // 8)
    return scores

  def _extend_rows(self, ids: np.ndarray, mask: np.ndarray,
                   which: np.ndarray | None = None, pad_to: int = 0
                   ) -> np.ndarray:
    """Feeds `ids` (`mask`) to cache rows `which` (None: every row, in
    order), at most `IncrementalVerifier.rows` rows a call; a subset's
    rows are gathered (repeated up to `pad_to` rows, the copies feeding
    nothing), extended, and put back.

    Returns:
      the scores of the fed positions, one row per row of `ids`.
    """
    n = len(ids)
    group = self.inc.rows or max(n, pad_to)
    if which is None and group >= n:
      out, self.cache = _extend(self.inc.extend_fn, self.verifier.params,
                                *self._place((ids, mask)), self.cache)
      return np.asarray(jax.device_get(out))
    which = np.arange(n) if which is None else which
    size = min(group, max(n, pad_to))
    out = np.zeros(ids.shape, np.float32)
    index = self.cache.index  # every group writes from the same slot
    for start in range(0, n, size):
      real = which[start:start + size]
      sub = np.resize(real, size)
      fill = np.arange(size) >= len(real)
      pick = np.resize(np.arange(start, start + len(real)), size)
      cache = self._place(self.cache.take(jnp.asarray(sub)).replace(
          index=index))
      got, cache = _extend(self.inc.extend_fn, self.verifier.params,
                           *self._place((ids[pick],
                                         mask[pick] & ~fill[:, None])),
                           cache)
      self.cache = self._place(put_rows(self.cache, jnp.asarray(real), cache))
      out[start:start + len(real)] = np.asarray(
          jax.device_get(got))[:len(real)]
    return out

  def take(self, src: np.ndarray) -> None:
    """Rows `src` (the policy's expansion), bookkeeping included."""
    self.cache = self._place(self.cache.take(jnp.asarray(src)))
    self.fed = [list(self.fed[s]) for s in src]

  def _chunk(self, r: int, ids: list[int], positions: list[int],
             first: int) -> tuple[list[int], dict[int, int]]:
    """The ids beyond those row `r` holds, and `{step: column}` for steps
    from `first`."""
    held = len(self.fed[r])
    if ids[:held] != self.fed[r]:
      raise Fallback(f"row {r}: the verifier layout does not extend the "
                     "ids it read before")
    columns = {}
    for j, p in enumerate(positions[first:], first):
      if p < held:
        raise Fallback(f"row {r}: step {j} is scored at {p}, before the "
                       f"{held} ids read already")
      columns[j] = p - held
    return ids[held:], columns

  def score(self, prompts: Sequence[Sequence[int]],
            steps: dict[int, tuple[Sequence[int], list[int], int]],
            rollouts: dict[int, tuple[Sequence[int], list[int]]],
            ) -> tuple[dict[int, list[float]], dict[int, int]]:
    """Scores the rows' new steps (and roll-outs), keeping only the steps.

    Args:
      prompts: per row, the policy prompt.
      steps: `{row: (solution ids, step ends, first new step)}`: the row's
        solution up to its last step's end; its cache keeps it.
      rollouts: `{row: (solution ids, step ends)}` for rows of `steps`
        valued at the end of a roll-out that added steps (their solution
        extends the row's); read, then forgotten.

    Returns:
      `({row: step scores}, {row: tokens read})`: one score per step end
      of the row's roll-out (else its steps), NaN for steps read in
      earlier rounds.

    Raises:
      Fallback: before anything is fed, if the rows cannot be scored
        incrementally.
    """
    build, rows = self.verifier.build_input, len(self.fed)
    permanent, temporary, columns, rolled, full = {}, {}, {}, {}, {}
    out, read = {}, {}
    for r, (solution, ends, first) in steps.items():
      ids, positions = build(prompts[r], [int(i) for i in solution], ends)
      ids = list(ids)
      permanent[r], cols = self._chunk(r, ids, positions, first)
      columns[r] = list(cols.items())
      full[r] = ids
      count = len(ends)
      if r in rollouts:
        solution, ends = rollouts[r]
        rids, rpositions = build(prompts[r], [int(i) for i in solution],
                                 ends)
        rids = list(rids)
        if rids[:len(ids)] != ids:
          raise Fallback(f"row {r}: the roll-out's layout does not extend "
                         "the step's")
        temporary[r] = rids[len(ids):]
        rolled[r] = [(j, p - len(ids)) for j, p in
                     enumerate(rpositions[count:], count)]
        if any(c < 0 for _, c in rolled[r]):
          raise Fallback(f"row {r}: a roll-out step is scored before the "
                         "roll-out")
        count = len(ends)
      out[r] = [float("nan")] * count
    if not permanent:
      return out, read
    index = int(self.cache.index)
    index += self._fit(max(map(len, permanent.values())), index)
    if temporary:
      self._fit(max(map(len, temporary.values())), index)
    scores = self._feed(permanent, rows)
    for r in steps:
      for j, c in columns[r]:
        out[r][j] = float(scores[r, c])
      read[r] = len(permanent[r])
      self.fed[r] = full[r]
    temporary = {r: c for r, c in temporary.items() if c}
    if temporary:
      cache = self.cache
      bookkeeping = (cache.index, cache.valid, cache.next_pos)
      scores = self._feed(temporary, rows)
      self.cache = self._place(self.cache.rollback(*bookkeeping))
      for r, chunk in temporary.items():
        for j, c in rolled[r]:
          out[r][j] = float(scores[r, c])
        read[r] += len(chunk)
    return out, read

