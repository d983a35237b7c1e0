"""Sequential revisions in parallel chains (Snell et al. 2024, Sec. 6).

A budget of N generations is split as L sequential revisions times P
parallel chains, N = L * P (`RevisionsConfig.revision_length` is L; the paper's
ratio "sequential:parallel" is L:P, so 16:1 is one chain of 16 attempts and
1:16 is 16 independent samples). Attempt 1 of a chain is sampled from
`prompt_fn(problem, [])`, the revision prompt with no attempt in context
(the revision model is trained with 0 to 4 previous attempts, so this is a
prompt it knows; a caller who wants the base prompt returns
`problem.prompt_ids` for an empty list). Attempt j + 1 is sampled from
`prompt_fn(problem, attempts)` with the chain's last
`RevisionsConfig.revision_context` (4) attempts, oldest first, EOS removed.
`prompt_fn` is `PolicyFns.prompt_fn`, the revision model's prompt layout.

Round j decodes attempt j of every chain of every problem of the batch as
rows of one batch (`problems x P` rows): one prefill of the round's prompts
(round 1 prefills each problem's prompt once and fans it out to its P
chains, as best-of-N does) and one decode to EOS. Its attempts are then
scored in one verifier call.

The verifier is an outcome verifier (ORM) that reads each attempt with its
revision history: its input is the prompt the attempt was sampled from (the
question and the previous attempts) followed by the attempt, and its score
is read at the attempt's last token. An attempt is one unit: its candidate
has one "step" (the whole attempt) and one score.

Selection (`select_revisions`), with the config's `selection`:

* 'weighted' (the paper's hierarchical choice): within each chain,
  best-of-N weighted over its attempts (ORM scores summed per equivalent
  answer); the chain's winner is weighted by its class's sum; across chains,
  best-of-N weighted over the winners (weights summed per answer);
* 'majority': flat majority over all N attempts;
* 'plain': the single attempt with the highest ORM score.

Counts are exact: every prompt prefilled (round 1's once per problem, every
later one once per chain), every token sampled (EOS included), every token
the verifier read. Candidates are listed chain-major: chain c's attempt j
is `candidates[c * L + j]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ttcjax.search import base, batching
from ttcjax.search.base import (Candidate, PolicyFns, PromptFn,
                                SearchProblem, SearchResult, TaskFns,
                                VerifierFns)
from ttcjax.search.selection import choose, group_answers
from ttcjax.search.strategy import SearchConfig, register

RevisionPromptFn = PromptFn


@register
@dataclasses.dataclass(frozen=True, kw_only=True)
class RevisionsConfig(SearchConfig):
  """Sequential revisions in parallel chains; the policy is the revision
  model, with its `prompt_fn`, and the verifier its ORM.

  Attributes:
    revision_length: L, sequential revisions per chain: budget N runs
      N / L parallel chains of L attempts.
    revision_context: most previous attempts a revision sees.
  """
  strategy = "revisions"
  family = "revisions"
  role = "revision"
  revision_length: int = 1
  revision_context: int = 4

  def __post_init__(self):
    super().__post_init__()
    if self.revision_length < 1:
      raise ValueError(f"{self._where('revision_length')} must be >= 1, got "
                       f"{self.revision_length}")
    if self.revision_context < 0:
      raise ValueError(f"{self._where('revision_context')} must be >= 0, got "
                       f"{self.revision_context}")

  def run(self, problems, budget, policy, verifier, task, key):
    return revisions(problems, budget, policy, verifier, task, self, key)

  def identity(self, budget: int) -> dict[str, Any]:
    length = self.revision_length
    return {"revision_length": length, "chains": budget // length,
            "ratio": f"{length}:{budget // length}",
            "revision_context": self.revision_context}

  def rows(self, budget: int) -> int:
    return chain_count(budget, self.revision_length)

  def reselect(self, candidates, how, equiv_fn) -> int:
    return select_revisions(candidates, self.revision_length, how, equiv_fn)


def with_prompt_fn(policy: PolicyFns, prompt_fn: PromptFn) -> PolicyFns:
  """`policy` (the revision model's bundle) with its prompt builder."""
  return dataclasses.replace(policy, prompt_fn=prompt_fn)


def chain_count(budget: int, revision_length: int) -> int:
  """P = N / L parallel chains; raises unless L divides N."""
  if budget < 1 or revision_length < 1 or budget % revision_length:
    raise ValueError(f"revisions: budget N={budget} must be a positive "
                     f"multiple of RevisionsConfig.revision_length="
                     f"{revision_length}")
  return budget // revision_length


def revisions(problems: Sequence[SearchProblem], budget: int,
              policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
              config: RevisionsConfig, key: jax.Array) -> list[SearchResult]:
  """Runs N / L chains of L sequential revisions per problem.

  Args:
    problems: the queries (their `prompt_ids` are not used: every prompt
      comes from `policy.prompt_fn`).
    budget: N, attempts per problem (generations).
    policy: the revision model, with its `prompt_fn`; attempts run to EOS
      or `max_gen`.
    verifier: the ORM; reads each attempt after its prompt.
    task: answer extraction and equivalence.
    config: `revision_length`, `revision_context`, `selection`,
      `problems_per_batch`.
    key: base key; see `base.search_key`.

  Returns:
    One `SearchResult` per problem, in order.
  """
  if policy.prompt_fn is None:
    raise TypeError("revisions needs PolicyFns.prompt_fn, the revision "
                    "model's prompt layout (see with_prompt_fn)")
  chains = chain_count(budget, config.revision_length)
  results = []
  for real, padded in batching.chunks(problems, config):
    results += _Chains(real, padded, budget, chains, policy, verifier, task,
                       config, key).run()
  return results


class _Chains:
  """One batch: problems x P chains, advanced one attempt per round."""

  def __init__(self, real, padded, budget, chains, policy, verifier, task,
               config, key):
    self.real, self.padded, self.n, self.p = real, padded, budget, chains
    self.policy, self.verifier, self.task = policy, verifier, task
    self.config = config
    rows = len(padded) * chains
    self.problem = np.repeat(np.arange(len(padded)), chains)
    self.frozen = self.problem >= len(real)  # padding rows only fill shapes
    self.attempts = [[] for _ in range(rows)]  # [row][round] solution ids
    self.candidates = [[] for _ in range(rows)]
    self.problem_keys = jax.numpy.stack([
        base.search_key(key, p.uid, "revisions", budget) for p in padded])
    self.generated = np.zeros(len(real), np.int64)
    self.prefilled = np.zeros(len(real), np.int64)
    self.read = np.zeros(len(real), np.int64)
    self.filler: list[int] = []

  def _prompts(self, rnd: int) -> tuple[list[list[int]], int]:
    """The round's prompts (one per problem in round 0, else per row).

    Padding rows reuse the first problem's first prompt: they only fill the
    batch shape, and `prompt_fn` is called for real rows only.
    """
    fn, context = self.policy.prompt_fn, self.config.revision_context
    if rnd == 0:
      first = [list(fn(p, [])) for p in self.real]
      self.filler = first[0]
      return first + [self.filler] * (len(self.padded) - len(self.real)), (
          self.p)
    return [self.filler if self.frozen[r] else list(fn(
        self.padded[self.problem[r]],
        [list(a) for a in self.attempts[r][-context:]] if context else []))
            for r in range(len(self.problem))], 1

  def _decode(self, prompts, fan_out, rnd):
    """One prefill of `prompts` and one decode to EOS for every row."""
    policy, dec = self.policy, self.policy.decoder
    as_problems = [SearchProblem(f"row-{i}", ids)
                   for i, ids in enumerate(prompts)]
    ids, mask = batching.pad_prompts(as_problems, policy.pad_id,
                                     policy.prompt_len)
    state = dec.sample(policy.params, ids, mask,
                       policy.init_cache(len(prompts), policy.max_len),
                       policy.sampler,
                       batching.row_keys(self.problem_keys, self.p, rnd),
                       fan_out, dec.max_gen, frozen=self.frozen,
                       shard=policy.shard)
    return jax.device_get((state.tokens, state.num_generated))

  def run(self) -> list[SearchResult]:
    eos = self.policy.decoder.eos_id
    for rnd in range(self.config.revision_length):
      prompts, fan_out = self._prompts(rnd)
      for i, ids in enumerate(prompts):
        p = i if rnd == 0 else self.problem[i]
        if p < len(self.real):
          self.prefilled[p] += len(ids)
      tokens, num = self._decode(prompts, fan_out, rnd)
      row_prompts = (prompts if fan_out == 1 else
                     [prompts[p] for p in self.problem])
      solutions, finished = [], []
      for r in range(len(self.problem)):
        ids = tokens[r, :num[r]]
        done = bool(num[r] > 0 and int(ids[-1]) == eos)
        solution = [int(i) for i in (ids[:-1] if done else ids)]
        self.attempts[r].append(solution)
        finished.append(done)
        # Padding rows and empty attempts are not read by the verifier.
        solutions.append(solution if solution and not self.frozen[r]
                         else None)
      scores, read = batching.score_rows(
          self.verifier, row_prompts, solutions,
          [[len(s)] if s else [] for s in solutions])
      for r in np.flatnonzero(~self.frozen):
        p = self.problem[r]
        self.generated[p] += int(num[r])
        self.read[p] += read[r]
        ends = (len(solutions[r]),) if solutions[r] else ()
        self.candidates[r].append(batching.make_candidate(
            tokens[r, :num[r]], ends, scores[r], "last", finished[r],
            self.policy, self.task, verifier_tokens=read[r],
            cut=None if finished[r] else "token_cap"))
    return self._results()

  def _results(self) -> list[SearchResult]:
    out = []
    for i, problem in enumerate(self.real):
      candidates = tuple(c for r in range(i * self.p, (i + 1) * self.p)
                         for c in self.candidates[r])
      chosen = select_revisions(candidates, self.config.revision_length,
                                self.config.selection, self.task.equiv_fn)
      out.append(SearchResult(
          uid=problem.uid, strategy="revisions", budget=self.n,
          candidates=candidates, chosen=chosen,
          answer=candidates[chosen].answer if chosen >= 0 else None,
          policy_tokens_generated=int(self.generated[i]),
          prompt_tokens_prefilled=int(self.prefilled[i]),
          verifier_tokens_read=int(self.read[i]),
          generations_used=self.n))
    return out


def select_revisions(candidates: Sequence[Candidate], revision_length: int,
                     how: str, equiv_fn: Callable[[str, str], bool]) -> int:
  """Index of the chosen attempt among chain-major candidates, or -1.

  Args:
    candidates: P chains of L attempts, chain c's attempt j at `c * L + j`.
    revision_length: L.
    how: 'weighted' (hierarchical: within chains, then across), 'majority'
      (flat, over all attempts) or 'plain' (highest score).
    equiv_fn: answer equivalence.

  Returns:
    The chosen index; only finished attempts with an answer qualify. Ties
    go to the earlier chain, and within a chain to the earlier attempt.
  """
  chain_count(len(candidates), revision_length)
  classes = group_answers([c.answer for c in candidates], equiv_fn)
  scores = np.array([c.score for c in candidates], np.float64)
  valid = np.array([c.finished and c.answer is not None for c in candidates],
                   bool)
  if how != "weighted":
    return choose(classes, scores, valid, how)
  winners, weights = [], []
  for start in range(0, len(candidates), revision_length):
    span = slice(start, start + revision_length)
    best = choose(classes[span], scores[span], valid[span], "weighted")
    if best < 0:
      continue
    same = valid[span] & (classes[span] == classes[span][best])
    winners.append(start + best)
    weights.append(scores[span][same].sum())
  if not winners:
    return -1
  pick = choose(classes[winners], np.asarray(weights),
                np.ones(len(winners), bool), "weighted")
  return winners[pick]
