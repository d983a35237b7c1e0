"""Host-side batch plumbing shared by the strategies.

Padding prompts to a fixed width, per-row keys, fixed-size problem batches,
step boundaries, one-call scoring of many candidates, and turning a row into
a `Candidate`. None of it knows which strategy or model is in use.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.decoding import left_pad
from ttcjax.search.base import (Candidate, PolicyFns, SearchProblem,
                                TaskFns, VerifierFns)
from ttcjax.search.strategy import SearchConfig
from ttcjax.verifiers.scoring import aggregate, step_scores


def pad_prompts(problems: Sequence[SearchProblem], pad_id: int,
                width: int | None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads prompts to `width` (default: the longest;
  `decoding.left_pad`)."""
  longest = max(len(p.prompt_ids) for p in problems)
  if width is not None and longest > width:
    raise ValueError(f"a prompt of {longest} tokens exceeds "
                     f"PolicyFns.prompt_len={width}")
  return left_pad([p.prompt_ids for p in problems], pad_id, width)


def step_ends_of(ids: Sequence[int], start: int, end: int,
                 stop_ids: Sequence[int]) -> list[int]:
  """Exclusive step ends within `ids[start:end]`: after each delimiter, and
  at `end` if tokens follow the last delimiter."""
  stops = set(stop_ids)
  out = [i + 1 for i in range(start, end) if int(ids[i]) in stops]
  if end > (out[-1] if out else start):
    out.append(end)
  return out


def score_rows(verifier: VerifierFns, prompts: Sequence[Sequence[int]],
               solutions: Sequence[Sequence[int] | None],
               step_ends: Sequence[Sequence[int]]
               ) -> tuple[list[list[float]], list[int]]:
  """Scores the steps of many candidates in ONE `score_fn` call.

  Args:
    verifier: the verifier bundle.
    prompts: per row, prompt ids.
    solutions: per row, solution ids (EOS removed), or None to skip the row
      (it reads nothing).
    step_ends: per row, step ends within its solution.

  Returns:
    (per row the step scores (empty for skipped rows), per row the tokens
    read).

  The call reads only the rows not skipped (without `verifier.shard`),
  right-padded to the longest input: both counts are rounded up to a power
  of two, at most the row count and `verifier.max_len` and at least an
  eighth of them, so a search compiles a few shapes and early rounds read
  short prefixes.
  """
  rows = len(solutions)
  inputs = {}
  for r, solution in enumerate(solutions):
    if solution is None:
      continue
    row_ids, positions = verifier.build_input(prompts[r], solution,
                                              step_ends[r])
    if len(row_ids) > verifier.max_len:
      raise ValueError(f"verifier input of {len(row_ids)} tokens exceeds "
                       f"VerifierFns.max_len={verifier.max_len}")
    inputs[r] = row_ids, positions
  read = [len(inputs[r][0]) if r in inputs else 0 for r in range(rows)]
  out = [[] for _ in range(rows)]
  if not inputs:
    return out, read
  # Sharded rows must split evenly over devices: keep the row count.
  fed = (sorted(inputs) if verifier.shard is None else range(rows))
  # At most 4 sizes per axis: few compiles of the verifier.
  n = len(fed) if verifier.shard else max(bucket(len(fed), rows), rows // 8)
  width = max(bucket(max(read), verifier.max_len), verifier.max_len // 8)
  ids = np.full((n, width), verifier.pad_id, np.int32)
  mask = np.zeros((n, width), bool)
  ends = np.zeros((n, width), bool)
  for i, r in enumerate(fed):
    if r in inputs:
      row_ids, positions = inputs[r]
      ids[i, :len(row_ids)] = row_ids
      mask[i, :len(row_ids)] = True
      ends[i, positions] = True
  arrays = (ids, mask, ends)
  if verifier.shard is not None:
    arrays = verifier.shard(arrays)
  scores, step_mask = jax.device_get(
      step_scores(verifier.score_fn, verifier.params, *arrays))
  for i, r in enumerate(fed):
    if r in inputs:
      out[r] = scores[i, step_mask[i]].tolist()
  return out, read


def bucket(size: int, cap: int) -> int:
  """The smallest power of two >= `size`, at most `cap`: array sizes that
  follow a growing count with few distinct (compiled) shapes."""
  return min(cap, 1 << max(int(size) - 1, 0).bit_length())


def row_keys(problem_keys: jax.Array, rows_per_problem: int,
             round_index: int) -> jax.Array:
  """`[P * n]` keys: row `(p, j)` of round `r` gets
  `fold_in(fold_in(problem_keys[p], r), j)`, whatever else is in the batch."""
  fold = jax.vmap(jax.random.fold_in)
  num = problem_keys.shape[0]
  per_round = fold(problem_keys, np.full(num, round_index, np.uint32))
  slots = np.tile(np.arange(rows_per_problem, dtype=np.uint32), num)
  return fold(jnp.repeat(per_round, rows_per_problem, axis=0), slots)


def chunks(problems: Sequence[SearchProblem], config: SearchConfig):
  """Yields `(real, padded)` problem lists of `problems_per_batch` each;
  padding repeats the first problem and is dropped from the results."""
  problems = list(problems)
  if not problems:
    return
  size = config.problems_per_batch or len(problems)
  for start in range(0, len(problems), size):
    real = problems[start:start + size]
    yield real, real + [real[0]] * (size - len(real))


def make_candidate(ids: Sequence[int], step_ends: Sequence[int],
                   values: Sequence[float], how: str, finished: bool,
                   policy: PolicyFns, task: TaskFns,
                   verifier_tokens: int | None = None,
                   cut: str | None = None) -> Candidate:
  """A `Candidate` with its score, answer and (optional) text; `cut` says
  why an unfinished one ended (`base.CUT_REASONS`)."""
  ids = tuple(int(i) for i in ids)
  values = tuple(float(v) for v in values)
  score = float(aggregate(np.asarray([values], np.float32).reshape(1, -1),
                          np.ones((1, len(values)), bool), how)[0])
  return Candidate(
      token_ids=ids, step_ends=tuple(int(e) for e in step_ends),
      step_scores=values, score=score, answer=task.answer_fn(ids),
      finished=bool(finished), verifier_tokens=verifier_tokens,
      text=policy.detokenize(ids) if policy.detokenize else None, cut=cut)
