"""Revision-model and revision-ORM training data (Snell et al. 2024, Sec. 6.1).

The input is, per training problem, its question text and N parallel samples
`(solution text, correct)` from the policy.

Revision model (an LM): `ttcjax.data.examples.build_revision_trajectories`
turns the samples into `(question, wrong attempts, correct target)` triples
(k ~ U{0..4} wrong attempts, the last the one closest in edit distance to the
target), and `revision_example` lays each out as revision prompt -> target.

Revision ORM: at inference a sequential-revision chain is judged with its
history in context, so the ORM reads the same revision prompt the revision
model reads, followed by the judged solution (no EOS), and learns its
correctness at the last token:

    [bos] question \\n Attempt 1: \\n ... Revised solution: \\n <solution>
                                                                     ^ label

Inference must lay the verifier input out the same way: prompt ids
`revision_prompt_ids(tokenizer, question, previous attempts)`, then the
solution's ids. The candidates (context, solution, label) come from
parallel samples (`orm_candidates_from_samples`: each sample judged with k ~
U{0..max_k} other samples of its problem as earlier attempts) or from real
revision chains (`orm_candidates_from_chains`: each element judged with the
elements before it).

Balance (`balance`): an ORM trained on mostly-wrong data learns to say
"wrong". Correct and wrong candidates are paired within each problem first
(min(#correct, #wrong) of each, so problem difficulty alone does not predict
the label), then the leftovers, which are one class per problem, are paired
across problems; the rest of the majority class is dropped. The result has
exactly as many correct as wrong examples (only impossible when one class is
absent altogether, in which case nothing is kept).

Everything here is numpy and Python; batches come out in the trainer's
contract through `ttcjax.data.examples.collate`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ttcjax.data.examples import (DTYPES, MAX_CONTEXT, Example,
                                  ExampleTooLongError, TextTokenizer,
                                  build_revision_trajectories, collate,
                                  revision_example, revision_prompt_ids)

Sample = tuple[str, bool]  # (solution text, is correct)
CONTEXTS = ("any", "wrong")


@dataclasses.dataclass(frozen=True)
class OrmCandidate:
  """One revision-ORM example before tokenisation.

  Attributes:
    uid: problem id.
    attempts: earlier attempts shown in context, oldest first.
    solution: the judged solution text.
    correct: its label.
  """
  uid: Any
  attempts: tuple[str, ...]
  solution: str
  correct: bool


def _question(questions: Mapping[Any, str], uid: Any) -> str:
  if uid not in questions:
    raise KeyError(f"no question text for problem {uid!r}")
  return questions[uid]


def revision_lm_examples(tokenizer: TextTokenizer,
                         questions: Mapping[Any, str],
                         samples: Mapping[Any, Sequence[Sample]],
                         rng: np.random.Generator, *,
                         max_len: int | None = None,
                         max_context: int = MAX_CONTEXT, max_k: int = 4,
                         keep_correct: float = 0.0
                         ) -> tuple[list[Example], dict[str, int]]:
  """Revision-model LM examples: one per correct sample.

  With `keep_correct > 0` (not in the paper), each trajectory also yields,
  with that probability, a second example whose last attempt is the target
  itself: a chain's later attempts see right answers as well as wrong ones,
  and this teaches the model to keep a right answer instead of revising it
  away.

  Args:
    tokenizer: see `ttcjax.data.examples.TextTokenizer`.
    questions: uid -> question text.
    samples: uid -> [(solution text, correct)], the policy's N samples.
    rng: consumed by `build_revision_trajectories`.
    max_len: longest example (oldest attempts are dropped first to fit).
    max_context: most attempts in context.
    max_k: most wrong attempts drawn per trajectory.
    keep_correct: probability of the extra keep-the-right-answer example
      per trajectory (drawn after the trajectories, from `rng`).

  Returns:
    `(examples, stats)`: `n_trajectories`, `n_too_long` (skipped: the
    target alone does not fit), `n_examples`, `n_keep_correct` (extra
    examples), and `attempts_<k>` counts of trajectories with k attempts in
    context.
  """
  if not 0.0 <= keep_correct <= 1.0:
    raise ValueError(f"keep_correct must be in [0, 1], got {keep_correct}")
  trajectories = build_revision_trajectories(samples, rng, max_context, max_k)
  if keep_correct > 0:
    keep = rng.random(len(trajectories)) < keep_correct
    trajectories = trajectories + [
        (uid, list(attempts) + [target], target)
        for (uid, attempts, target), k in zip(trajectories, keep) if k]
  examples = []
  stats = collections.Counter(n_trajectories=len(trajectories), n_too_long=0)
  stats["n_keep_correct"] = (int(keep.sum()) if keep_correct > 0 else 0)
  for uid, attempts, target in trajectories:
    stats[f"attempts_{len(attempts)}"] += 1
    try:
      examples.append(revision_example(tokenizer, _question(questions, uid),
                                       attempts, target, max_len,
                                       max_context))
    except ExampleTooLongError:
      stats["n_too_long"] += 1
  stats["n_examples"] = len(examples)
  return examples, dict(stats)


def orm_candidates_from_samples(samples: Mapping[Any, Sequence[Sample]],
                                rng: np.random.Generator, *, max_k: int = 4,
                                max_context: int = MAX_CONTEXT,
                                context: str = "any") -> list[OrmCandidate]:
  """Every sample judged with other samples of its problem as its history.

  Problems are visited in `sorted(uid, key=str)` order and samples in list
  order; for each, `k ~ U{0..max_k}` is drawn (then capped at the samples
  available), and k distinct other samples are drawn in random order; the
  last `max_context` are kept.

  Args:
    samples: uid -> [(solution text, correct)].
    rng: numpy generator (consumed).
    max_k: most earlier attempts.
    max_context: most attempts kept.
    context: 'any' (history drawn from all other samples, as a revision
      chain's history can hold right and wrong answers) or 'wrong' (only
      wrong ones, as the revision model is trained on).

  Returns:
    One candidate per sample.
  """
  if context not in CONTEXTS:
    raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
  if max_k < 0 or max_context < 0:
    raise ValueError(f"max_k={max_k} and max_context={max_context} must be "
                     f">= 0")
  out = []
  for uid in sorted(samples, key=str):
    group = list(samples[uid])
    for t, (text, ok) in enumerate(group):
      pool = [s for j, (s, c) in enumerate(group)
              if j != t and (context == "any" or not c)]
      k = min(int(rng.integers(0, max_k + 1)), len(pool))
      history = [pool[j] for j in rng.choice(len(pool), size=k,
                                             replace=False)]
      kept = history[-max_context:] if max_context else []
      out.append(OrmCandidate(uid, tuple(kept), text, bool(ok)))
  return out


def orm_candidates_from_chains(
    chains: Mapping[Any, Sequence[Sequence[Sample]]],
    max_context: int = MAX_CONTEXT) -> list[OrmCandidate]:
  """Every element of every revision chain, judged with its predecessors.

  Args:
    chains: uid -> chains, each `[(text, correct), ...]` in revision order.
    max_context: most earlier attempts kept (the latest).

  Returns:
    One candidate per chain element, uids in `sorted(key=str)` order.
  """
  out = []
  for uid in sorted(chains, key=str):
    for chain in chains[uid]:
      texts = [text for text, _ in chain]
      for j, (text, ok) in enumerate(chain):
        kept = texts[:j][-max_context:] if max_context else []
        out.append(OrmCandidate(uid, tuple(kept), text, bool(ok)))
  return out


def balance(candidates: Sequence[OrmCandidate],
            rng: np.random.Generator) -> list[OrmCandidate]:
  """Equal numbers of correct and wrong candidates (see module docstring).

  Within a problem, the kept members of its majority class are drawn at
  random; across problems, leftovers are drawn at random from the larger
  pool. The kept candidates stay in their input order.
  """
  by_uid = collections.defaultdict(lambda: ([], []))
  for i, c in enumerate(candidates):
    by_uid[c.uid][0 if c.correct else 1].append(i)
  keep, leftover = [], ([], [])
  for uid in sorted(by_uid, key=str):
    right, wrong = by_uid[uid]
    m = min(len(right), len(wrong))
    for cls, group in enumerate((right, wrong)):
      order = rng.permutation(len(group))
      keep += [group[j] for j in order[:m]]
      leftover[cls].extend(group[j] for j in order[m:])
  m = min(len(leftover[0]), len(leftover[1]))
  for pool in leftover:
    keep += [pool[j] for j in rng.choice(len(pool), size=m, replace=False)]
  return [candidates[i] for i in sorted(keep)]


def orm_example_with_history(tokenizer: TextTokenizer, question: str,
                             attempts: Sequence[str], solution: str,
                             label: float, max_len: int | None = None,
                             max_context: int = MAX_CONTEXT) -> Example:
  """A revision-ORM example: revision prompt, then the solution; label last.

  Equals `orm_example(tokenizer, revision_prompt(question, attempts),
  solution)` when it fits; when it does not, the oldest attempts are dropped
  first (as `revision_prompt_ids` does for the revision model), then the
  prompt is cut from its left.

  Raises:
    ValueError: empty solution or label outside [0, 1].
    ExampleTooLongError: the BOS and solution alone exceed max_len.
  """
  label = float(label)
  if not 0.0 <= label <= 1.0:
    raise ValueError(f"orm_example_with_history: label must be in [0, 1], "
                     f"got {label!r}")
  solution_ids = [int(i) for i in tokenizer.encode(solution)]
  if not solution_ids:
    raise ValueError("orm_example_with_history: the solution encodes to no "
                     "tokens")
  max_prompt = None if max_len is None else max_len - len(solution_ids)
  try:
    n_bos = int(getattr(tokenizer, "bos_id", None) is not None)
  except NotImplementedError:  # seqio.Vocabulary's default: no BOS
    n_bos = 0
  if max_prompt is not None and max_prompt < max(n_bos, 1):
    raise ExampleTooLongError(
        f"orm_example_with_history: a {len(solution_ids)}-token solution "
        f"leaves no room for a prompt in max_len={max_len}")
  tokens = revision_prompt_ids(tokenizer, question, attempts, max_prompt,
                               max_context) + solution_ids
  n = len(tokens)
  example = {key: np.zeros(n, dtype) for key, dtype in DTYPES.items()}
  example["tokens"][:] = tokens
  example["token_mask"][:] = True
  example["reward_targets"][-1] = label
  example["reward_weights"][-1] = 1.0
  return example


def revision_orm_examples(tokenizer: TextTokenizer,
                          questions: Mapping[Any, str],
                          candidates: Sequence[OrmCandidate], *,
                          max_len: int | None = None,
                          max_context: int = MAX_CONTEXT
                          ) -> tuple[list[Example], dict[str, int]]:
  """Tokenises candidates (balance them first, if wanted).

  Returns:
    `(examples, stats)`: `n_candidates`, `n_too_long` (skipped),
    `n_correct`, `n_wrong` (of the examples kept).
  """
  examples, stats = [], dict(n_candidates=len(candidates), n_too_long=0,
                             n_correct=0, n_wrong=0)
  for c in candidates:
    try:
      examples.append(orm_example_with_history(
          tokenizer, _question(questions, c.uid), c.attempts, c.solution,
          float(c.correct), max_len, max_context))
    except ExampleTooLongError:
      stats["n_too_long"] += 1
      continue
    stats["n_correct" if c.correct else "n_wrong"] += 1
  return examples, stats


def revision_lm_batch(tokenizer: TextTokenizer, questions: Mapping[Any, str],
                      samples: Mapping[Any, Sequence[Sample]],
                      rng: np.random.Generator, max_len: int, **kwargs
                      ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
  """`revision_lm_examples` collated into one contract batch `[n, max_len]`
  (e.g. for `ttcjax.training.ArraySource`); kwargs go to it."""
  examples, stats = revision_lm_examples(tokenizer, questions, samples, rng,
                                         max_len=max_len, **kwargs)
  return collate(examples, max_len), stats


def revision_orm_batch(tokenizer: TextTokenizer, questions: Mapping[Any, str],
                       samples: Mapping[Any, Sequence[Sample]],
                       rng: np.random.Generator, max_len: int, *,
                       balanced: bool = True, max_k: int = 4,
                       max_context: int = MAX_CONTEXT, context: str = "any"
                       ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
  """Revision-ORM data from parallel samples as one contract batch.

  Candidates from `orm_candidates_from_samples`, then (if `balanced`)
  `balance`, then tokenised; too-long examples are skipped after balancing,
  so counts can differ by those (reported in the stats).
  """
  candidates = orm_candidates_from_samples(samples, rng, max_k=max_k,
                                           max_context=max_context,
                                           context=context)
  chosen = balance(candidates, rng) if balanced else candidates
  examples, stats = revision_orm_examples(tokenizer, questions, chosen,
                                          max_len=max_len,
                                          max_context=max_context)
  return collate(examples, max_len), dict(stats,
                                          n_unbalanced=len(candidates))
