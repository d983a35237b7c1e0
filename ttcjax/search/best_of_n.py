"""Best-of-N: N whole solutions per problem, scored once, one answer chosen.

Each prompt is prefilled once and its cache fanned out to N rows; all
problems x N rows decode together, and all candidates are scored in one
verifier call. Smaller budgets are derived from the largest by subsampling
(`subsample`), and `bootstrap_accuracy` turns repeated subsamples into the
mean and spread of accuracy per budget, as in Snell et al.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ttcjax.search import base, batching
from ttcjax.search.base import (PolicyFns, SearchProblem, SearchResult,
                                TaskFns, VerifierFns)
from ttcjax.search.selection import choose, group_answers, select
from ttcjax.search.strategy import SearchConfig, register


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class BestOfNConfig(SearchConfig):
  """Best-of-N: no hyper-parameters beyond `SearchConfig`'s."""
  strategy = "best_of_n"

  def run(self, problems, budget, policy, verifier, task, key):
    return best_of_n(problems, budget, policy, verifier, task, self, key)

  def identity(self, budget: int) -> dict[str, Any]:
    del budget
    return {"aggregation": self.aggregation}


def best_of_n(problems: Sequence[SearchProblem], budget: int,
              policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
              config: SearchConfig, key: jax.Array) -> list[SearchResult]:
  """Samples `budget` solutions per problem and selects an answer.

  Args:
    problems: the queries.
    budget: N, solutions per problem (generations).
    policy: policy callbacks; solutions run to EOS or `decoder.max_gen`.
    verifier: scores every step of every candidate (one call per batch).
    task: answer extraction and equivalence.
    config: `selection` and `aggregation` are used.
    key: base key; see `base.search_key`.

  Returns:
    One `SearchResult` per problem, in order.
  """
  if budget < 1:
    raise ValueError(f"best_of_n budget must be >= 1, got {budget}")
  results = []
  for real, padded in batching.chunks(problems, config):
    results += _best_of_n_batch(real, padded, budget, policy, verifier, task,
                                config, key)
  return results


def _best_of_n_batch(real, padded, budget, policy, verifier, task, config,
                     key) -> list[SearchResult]:
  dec, n = policy.decoder, budget
  prompts, mask = batching.pad_prompts(padded, policy.pad_id,
                                       policy.prompt_len)
  problem_keys = jax.numpy.stack([
      base.search_key(key, p.uid, "best_of_n", budget) for p in padded])
  # Padding problems are frozen at once: they only fill the batch shape.
  state = dec.sample(policy.params, prompts, mask,
                     policy.init_cache(len(padded), policy.max_len),
                     policy.sampler, batching.row_keys(problem_keys, n, 0), n,
                     dec.max_gen, shard=policy.shard,
                     frozen=np.repeat(np.arange(len(padded)) >= len(real), n))
  tokens, num = jax.device_get((state.tokens, state.num_generated))

  rows = range(len(real) * n)
  solutions, ends, finished = [], [], []
  for r in rows:
    ids = tokens[r, :num[r]]
    done = num[r] > 0 and int(ids[-1]) == dec.eos_id
    solution = ids[:-1] if done else ids
    finished.append(done)
    solutions.append(solution)
    ends.append(batching.step_ends_of(solution, 0, len(solution),
                                      dec.stop_ids))
  solutions += [None] * (len(padded) - len(real)) * n
  prompt_rows = [p.prompt_ids for p in padded for _ in range(n)]
  scores, read = batching.score_rows(verifier, prompt_rows, solutions,
                                 ends + [[]] * (len(solutions) - len(ends)))

  results = []
  for i, problem in enumerate(real):
    span = range(i * n, (i + 1) * n)
    candidates = tuple(
        batching.make_candidate(tokens[r, :num[r]], ends[r], scores[r],
                            config.aggregation, finished[r], policy, task,
                            verifier_tokens=read[r],
                            cut=None if finished[r] else "token_cap")
        for r in span)
    chosen = select(candidates, config.selection, task.equiv_fn)
    results.append(SearchResult(
        uid=problem.uid, strategy="best_of_n", budget=n,
        candidates=candidates, chosen=chosen,
        answer=candidates[chosen].answer if chosen >= 0 else None,
        policy_tokens_generated=int(sum(num[r] for r in span)),
        prompt_tokens_prefilled=len(problem.prompt_ids),
        verifier_tokens_read=int(sum(read[r] for r in span)),
        generations_used=n))
  return results


def _generator(rng) -> np.random.Generator:
  return rng if isinstance(rng, np.random.Generator) else (
      np.random.default_rng(rng))


def subsample(result: SearchResult, n: int,
              rng: np.random.Generator | int, *, selection: str,
              equiv_fn: Callable[[str, str], bool]) -> SearchResult:
  """The result best-of-`n` would have had, from a best-of-N result.

  Draws `n` of the N candidates without replacement (kept in their original
  order), re-selects the answer and recounts: tokens generated and read are
  those of the drawn candidates; the prompt is still prefilled once.

  Args:
    result: a best-of-N result with N >= n candidates.
    n: the smaller budget.
    rng: numpy Generator or seed.
    selection: 'plain', 'weighted' or 'majority'.
    equiv_fn: answer equivalence.

  Returns:
    A `SearchResult` with `budget == generations_used == n`.
  """
  if result.strategy != "best_of_n":
    raise ValueError(f"subsample needs a best_of_n result, got "
                     f"{result.strategy!r} for {result.uid!r}")
  if not 1 <= n <= len(result.candidates):
    raise ValueError(f"subsample n={n} must be in [1, "
                     f"{len(result.candidates)}] for {result.uid!r}")
  idx = np.sort(_generator(rng).choice(len(result.candidates), n,
                                       replace=False))
  candidates = tuple(result.candidates[i] for i in idx)
  chosen = select(candidates, selection, equiv_fn)
  return dataclasses.replace(
      result, budget=n, candidates=candidates, chosen=chosen,
      answer=candidates[chosen].answer if chosen >= 0 else None,
      policy_tokens_generated=sum(len(c.token_ids) for c in candidates),
      verifier_tokens_read=sum(c.verifier_tokens or 0 for c in candidates),
      generations_used=n, trace=None)


@dataclasses.dataclass(frozen=True)
class AccuracyEstimate:
  """Accuracy at one budget over bootstrap resamples.

  Attributes:
    budget: n.
    mean: mean accuracy over resamples.
    std: standard deviation over resamples (the spread).
    per_resample: `[num_resamples]` accuracies.
  """
  budget: int
  mean: float
  std: float
  per_resample: tuple[float, ...]


def bootstrap_accuracy(results: Sequence[SearchResult],
                       references: Sequence[str | None],
                       budgets: Sequence[int], *, selection: str,
                       equiv_fn: Callable[[str, str], bool],
                       num_resamples: int = 100, seed: int = 0,
                       resample_problems: bool = False
                       ) -> dict[int, AccuracyEstimate]:
  """Mean and spread of best-of-n accuracy for each n, from best-of-N runs.

  Each resample draws, for every problem, `n` of its candidates without
  replacement and selects as `subsample` does (answers are grouped once,
  over all N candidates). Budget `n` uses its own random stream
  (`default_rng([seed, n])`), so adding a budget changes no other.

  Args:
    results: best-of-N results, one per problem.
    references: the reference answer per problem (None counts as wrong).
    budgets: the n to evaluate, each <= every result's N.
    selection: 'plain', 'weighted' or 'majority'.
    equiv_fn: answer equivalence (against the references too).
    num_resamples: resamples per budget.
    seed: seed of the resampling.
    resample_problems: also resample problems with replacement (adds the
      spread due to the problem set).

  Returns:
    `{n: AccuracyEstimate}`.
  """
  if len(results) != len(references) or not results:
    raise ValueError(f"bootstrap_accuracy: {len(results)} results and "
                     f"{len(references)} references")
  prepared = []
  for result, reference in zip(results, references):
    cands = result.candidates
    classes = group_answers([c.answer for c in cands], equiv_fn)
    heads = {}
    for c, k in zip(cands, classes):
      heads.setdefault(int(k), c.answer)
    correct = {k: reference is not None and (a == reference or
                                             equiv_fn(a, reference))
               for k, a in heads.items() if k >= 0}
    prepared.append((classes, np.array([c.score for c in cands]),
                     np.array([c.finished for c in cands], bool), correct))
  out = {}
  for n in budgets:
    if any(not 1 <= n <= len(r.candidates) for r in results):
      raise ValueError(f"bootstrap_accuracy: budget {n} exceeds a result's "
                       f"{min(len(r.candidates) for r in results)} candidates")
    rng = np.random.default_rng([seed, n])
    acc = np.zeros(num_resamples)
    for s in range(num_resamples):
      rows = (rng.integers(0, len(results), len(results)) if
              resample_problems else range(len(results)))
      hits = 0
      for i in rows:
        classes, scores, valid, correct = prepared[i]
        idx = np.sort(rng.choice(len(classes), n, replace=False))
        c = choose(classes[idx], scores[idx], valid[idx], selection)
        hits += c >= 0 and correct[int(classes[idx][c])]
      acc[s] = hits / len(results)
    out[n] = AccuracyEstimate(n, float(acc.mean()), float(acc.std()),
                              tuple(acc.tolist()))
  return out
