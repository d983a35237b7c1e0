"""The oracle verifier: a task's exact step checker as a PRM (a control).

Where a task can check every step exactly (`Task.has_step_checker`, e.g. the
arithmetic task), searching with the checker instead of a learned PRM gives
the ceiling of each search strategy: what it reaches when the verifier is
perfect, which separates the quality of the search from the quality of the
verifier (Snell et al. 2024 study the learned PRM only).

At every step end the oracle scores 1.0 when the step and every step before
it are correct and 0.0 otherwise, so the paper's final-step aggregation
('last') reads "the whole solution is correct, step by step". "Correct" is
the task's `Task.oracle_values`: step validity (`check_steps`) where a valid
prefix can always be completed (arithmetic), the ideal value where it cannot
(Countdown: a valid step into a dead end scores 0, since the target is no
longer reachable from the numbers left). Scores are
computed on the host from the decoded text, exactly: the prefix up to the
step end is decoded and passed to `Task.check_steps` with the problem whose
prompt the row starts with.

It plugs into search as any verifier does: `score_fn(params, tokens[n, L],
token_mask[n, L]) -> [n, L]`, a `jax.pure_callback` inside the jitted
scorer, so search code stays model- and task-agnostic. Each row must be laid
out as `search.concat_input` lays it out (the problem's prompt ids, then the
solution ids); a row whose prompt is no known problem's is an error.

Cost: the tokens the oracle reads are counted like a PRM's
(`SearchResult.verifier_tokens_read`), but they cost no model FLOPs; the
sweep records them with `flops_verifier = 0` (`ttcjax.search.records`,
`verifier_free`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.search import base

CheckSteps = Callable[[Any, str], Sequence[bool] | None]


@dataclasses.dataclass(frozen=True, eq=False)
class StepOracle:
  """Exact prefix correctness of a row, position by position.

  Hashed by identity (`eq=False`): its `score_fn` is a static jit argument,
  so keep one object per search run.

  Attributes:
    check_steps: `(problem, text) -> per-step verdicts` (a task's
      `oracle_values`, e.g. `tasks.get("arithmetic").oracle_values`); None
      or an empty list counts as wrong.
    problems: prompt ids (a tuple, BOS included, as the policy read them)
      -> problem.
    decode: ids -> text (solution ids only, no EOS).
    stop_ids: ids that end a step (the policy's step delimiters).
  """
  check_steps: CheckSteps
  problems: Mapping[tuple[int, ...], Any]
  decode: Callable[[Sequence[int]], str]
  stop_ids: frozenset[int]

  def __post_init__(self):
    object.__setattr__(self, "problems", {
        tuple(int(i) for i in k): v for k, v in self.problems.items()})
    object.__setattr__(self, "stop_ids",
                       frozenset(int(i) for i in self.stop_ids))
    if not self.problems:
      raise ValueError("StepOracle: no problems")
    if not self.stop_ids:
      raise ValueError("StepOracle: stop_ids is empty")
    # Longest first, so a prompt that extends another is matched whole.
    object.__setattr__(self, "_lengths", sorted(
        {len(k) for k in self.problems}, reverse=True))

  def prefix_correct(self, problem: Any, solution_ids: Sequence[int]) -> bool:
    """Whether every step of `decode(solution_ids)` is correct."""
    verdicts = self.check_steps(problem, self.decode(list(solution_ids)))
    return bool(verdicts) and all(verdicts)

  def _problem_of(self, ids: Sequence[int]) -> tuple[Any, int]:
    for length in self._lengths:
      problem = self.problems.get(tuple(int(i) for i in ids[:length]))
      if problem is not None:
        return problem, length
    raise ValueError(f"oracle verifier: a row starts with no known problem's "
                     f"prompt (first ids {list(map(int, ids[:16]))}); it "
                     f"needs every searched problem's prompt ids")

  def row_scores(self, ids: Sequence[int]) -> np.ndarray:
    """Scores of one unpadded row `[prompt ids, solution ids]`.

    Returns:
      `[len(ids)] float32`: 1.0 over the prompt; at each step end (a stop
      id, and the row's last token) 1.0 if all steps so far are correct,
      else 0.0; other positions carry the value of the last step end
      before them (the prompt's 1.0 before the first).
    """
    problem, start = self._problem_of(ids)
    out = np.ones(len(ids), np.float32)
    value = 1.0
    for j in range(start, len(ids)):
      if value and (int(ids[j]) in self.stop_ids or j == len(ids) - 1):
        value = float(self.prefix_correct(problem, ids[start:j + 1]))
      out[j] = value
    return out

  def host_scores(self, tokens: np.ndarray,
                  token_mask: np.ndarray) -> np.ndarray:
    """`[n, L] float32` scores of a batch (any padding; 0 on padding)."""
    tokens, mask = np.asarray(tokens), np.asarray(token_mask, bool)
    out = np.zeros(tokens.shape, np.float32)
    for r in range(tokens.shape[0]):
      where = np.flatnonzero(mask[r])
      if where.size:
        out[r, where] = self.row_scores(tokens[r, where])
    return out

  def score_fn(self, params: Any, tokens: jax.Array,
               token_mask: jax.Array) -> jax.Array:
    """The verifier callback; `params` are ignored (an oracle has none)."""
    del params
    return jax.pure_callback(
        self.host_scores, jax.ShapeDtypeStruct(tokens.shape, jnp.float32),
        tokens, token_mask, vmap_method="sequential")


def verifier_fns(check_steps: CheckSteps,
                 problems: Mapping[Sequence[int], Any], *,
                 decode: Callable[[Sequence[int]], str],
                 stop_ids: Sequence[int], max_len: int,
                 pad_id: int = 0) -> base.VerifierFns:
  """The oracle as `VerifierFns` (prompt + solution input, no params).

  Args:
    check_steps: `(problem, text) -> [bool per step]`, the task's
      `Task.oracle_values` (its exact step checker, or its ideal value).
    problems: prompt ids -> problem, for every problem searched.
    decode: ids -> text.
    stop_ids: the policy's step-delimiter ids.
    max_len: longest verifier input (prompt + solution).
    pad_id: padding id.

  Returns:
    `VerifierFns` whose score_fn is a `StepOracle`'s (unsharded: the
    callback reads whole rows on the host).
  """
  oracle = StepOracle(check_steps=check_steps,
                      problems={tuple(k): v for k, v in problems.items()},
                      decode=decode, stop_ids=frozenset(stop_ids))
  return base.VerifierFns(score_fn=oracle.score_fn, params=None,
                          max_len=max_len, pad_id=pad_id)


def task_verifier_fns(task: Any, problems: Sequence[Any],
                      prompt_ids: Callable[[Any], Sequence[int]], *,
                      decode: Callable[[Sequence[int]], str],
                      stop_ids: Sequence[int], max_len: int,
                      pad_id: int = 0) -> base.VerifierFns:
  """`verifier_fns` from a `ttcjax.tasks.Task` and its problems.

  Args:
    task: a task with an exact step checker (`task.has_step_checker`).
    problems: the problems searched.
    prompt_ids: problem -> the prompt ids the policy reads.
    decode, stop_ids, max_len, pad_id: as in `verifier_fns`.

  Raises:
    ValueError: the task has no step checker, or two problems share a
      prompt but not an answer.
  """
  if not task.has_step_checker:
    raise ValueError(f"the oracle verifier needs a task with an exact step "
                     f"checker; task {task.name!r} has none")
  by_prompt: dict[tuple[int, ...], Any] = {}
  for problem in problems:
    ids = tuple(int(i) for i in prompt_ids(problem))
    seen = by_prompt.setdefault(ids, problem)
    if seen.answer != problem.answer:
      raise ValueError(f"oracle verifier: problems {seen.uid!r} and "
                       f"{problem.uid!r} share a prompt but not an answer")
  return verifier_fns(task.oracle_values, by_prompt, decode=decode,
                      stop_ids=stop_ids, max_len=max_len, pad_id=pad_id)
