"""Monte-Carlo step labels for PRM training (Snell et al. 2024, Sec. 5, App. D).

No human labels: the policy labels its own samples. For a solution with steps
`s_1 .. s_n`, the soft label of step `i < n` is the fraction of K roll-outs,
sampled by the policy from `prompt + s_1 .. s_i` to EOS, whose final answer
is correct (the paper: 16 samples per problem, 16 roll-outs per step). A
roll-out from the whole solution would be the solution itself, so the last
step's label is the solution's own correctness (1.0 or 0.0) and costs no
roll-out.

Batching: every (problem, solution, step) prefix is a job; `prefixes_per_batch`
jobs are the rows of one `Decoder.prefill(..., num_samples=K)` call, so each
prefix is prefilled ONCE and its cache fanned out to its K roll-outs, which
then decode to EOS together. Prefixes are left-padded to one width (the
longest prefix of the call, or `LabelConfig.prefix_len`) and the last batch
is padded with frozen copies, so all batches compile to one shape.

Randomness: roll-out `j` from step `s` of solution `i` of problem `uid` uses
`fold_in(fold_in(fold_in(fold_in(key, stable_hash(uid)), i), s), j)`, so a
label depends on nothing else (not on batch size or the other problems).

Drops: a solution with no steps, or whose own answer the grader cannot parse
(`correct_fn` returns None), is dropped and counted; one cut by the token cap
is kept if the grader still finds an answer. A roll-out whose answer is
unparsable, or that hits the token cap without one, counts as wrong.

This module takes callbacks (a `ttcjax.search.PolicyFns`-like bundle and a
grader) and never imports a model class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from ttcjax.keys import stable_hash
from ttcjax.data.examples import (DTYPES, Example, ExampleTooLongError,
                                  collate)
from ttcjax.decoding import Sampler, Sampling, left_pad

# `correct_fn(uid, token_ids) -> True / False / None (unparsable answer)`.
Grader = Callable[[str, Sequence[int]], "bool | None"]


@dataclasses.dataclass(frozen=True)
class LabelProblem:
  """A training problem: stable id, prompt ids as the policy saw them, and
  the reference answer (used by `make_grader`; may be None with a custom
  grader)."""
  uid: str
  prompt_ids: tuple[int, ...]
  reference: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "prompt_ids",
                       tuple(int(i) for i in self.prompt_ids))
    if not self.prompt_ids:
      raise ValueError(f"LabelProblem {self.uid!r} has an empty prompt")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelConfig:
  """How roll-outs are run.

  Attributes:
    rollouts: K, roll-outs per step prefix (the paper's 16).
    prefixes_per_batch: prefixes prefilled per call (rows before fan-out;
      the decode batch is `prefixes_per_batch * rollouts` rows).
    max_new_tokens: cap on a roll-out's tokens; None: the decoder's max_gen.
    prefix_len: fixed prefix width (prompt + steps); None: the longest prefix
      of the call. Fix it to reuse one compiled shape across calls.
    sampler: roll-out sampler (temperature 1 by default).
  """
  rollouts: int = 16
  prefixes_per_batch: int = 16
  max_new_tokens: int | None = None
  prefix_len: int | None = None
  sampler: Sampler = Sampling(1.0)

  def __post_init__(self):
    for name in ("rollouts", "prefixes_per_batch", "max_new_tokens",
                 "prefix_len"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"LabelConfig.{name} must be a positive int, got "
                         f"{value!r}")


@dataclasses.dataclass(frozen=True)
class LabeledSolution:
  """One solution with a Monte-Carlo label per step.

  Attributes:
    uid: problem id.
    solution_index: index of the solution in its problem's list.
    prompt_ids: the problem's prompt ids.
    steps: token ids of each step (delimiter included, EOS removed).
    step_labels: per step, the fraction of roll-outs that were correct; the
      last is `float(correct)`.
    correct: the solution's own answer is right.
  """
  uid: str
  solution_index: int
  prompt_ids: tuple[int, ...]
  steps: tuple[tuple[int, ...], ...]
  step_labels: tuple[float, ...]
  correct: bool


def rollout_key(key: jax.Array, uid: str, solution_index: int,
                step_index: int, rollout: int) -> jax.Array:
  """The key of one roll-out (see the module docstring)."""
  for value in (stable_hash(uid), solution_index, step_index, rollout):
    key = jax.random.fold_in(key, value)
  return key


@jax.jit
def _fold_rows(key: jax.Array, columns: jax.Array) -> jax.Array:
  """`[rows]` keys: `key` folded with each row of `columns [rows, c] uint32`
  in turn (equal to chained `jax.random.fold_in` calls)."""

  def one(values):
    k = key
    for c in range(columns.shape[1]):
      k = jax.random.fold_in(k, values[c])
    return k

  return jax.vmap(one)(columns)


def split_steps(token_ids: Sequence[int], eos_id: int,
                stop_ids: Sequence[int]) -> list[tuple[int, ...]]:
  """Steps of generated ids: cut after each delimiter; the ids from the first
  EOS on are removed; trailing ids without a delimiter form a last step."""
  ids = [int(i) for i in token_ids]
  if eos_id in ids:
    ids = ids[:ids.index(eos_id)]
  stops, steps, start = set(int(s) for s in stop_ids), [], 0
  for i, t in enumerate(ids):
    if t in stops:
      steps.append(tuple(ids[start:i + 1]))
      start = i + 1
  if start < len(ids):
    steps.append(tuple(ids[start:]))
  return steps


def make_grader(problems: Sequence[LabelProblem],
                answer_fn: Callable[[Sequence[int]], str | None],
                equiv_fn: Callable[[str, str], bool]) -> Grader:
  """A grader comparing `answer_fn(ids)` with each problem's reference.

  Returns None when the answer is unparsable; False when the problem has no
  reference.
  """
  references = {p.uid: p.reference for p in problems}

  def correct_fn(uid: str, token_ids: Sequence[int]) -> bool | None:
    answer = answer_fn(token_ids)
    if answer is None:
      return None
    reference = references[uid]
    return reference is not None and (answer == reference or
                                      equiv_fn(answer, reference))

  return correct_fn


def task_grader(task: Any, problems: Mapping[str, Any],
                answer_fn: Callable[[Sequence[int]], str | None]) -> Grader:
  """A grader asking the task: `task.grade_answer(answer_fn(ids), problem)`.

  Args:
    task: a `ttcjax.tasks.Task` (only `grade_answer` is used).
    problems: uid -> the task's problem.
    answer_fn: generated ids -> the task's extracted answer, or None.

  Returns:
    A `Grader`: None when there is no answer, else the task's verdict.
  """

  def correct_fn(uid: str, token_ids: Sequence[int]) -> bool | None:
    answer = answer_fn(token_ids)
    if answer is None:
      return None
    return bool(task.grade_answer(answer, problems[uid]))

  return correct_fn


def _left_pad(rows: Sequence[Sequence[int]], width: int,
              pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  return left_pad(rows, pad_id, width)


def sample_solutions(problems: Sequence[LabelProblem], policy: Any,
                     num_samples: int, key: jax.Array, *,
                     problems_per_batch: int | None = None,
                     sampler: Sampler = Sampling(1.0)
                     ) -> tuple[list[list[tuple[int, ...]]], dict[str, int]]:
  """Samples whole solutions to label (the paper: 16 per problem).

  Each prompt is prefilled once and fanned out to `num_samples` rows; rows
  decode to EOS or the decoder's `max_gen`. Sample `j` of problem `uid` uses
  `fold_in(fold_in(fold_in(key, stable_hash("sample")), stable_hash(uid)), j)`.

  Args:
    problems: the problems.
    policy: as for `label_solutions`; prompts are padded to
      `policy.prompt_len` if it has one (else the longest prompt), and the
      cache holds that width plus `decoder.max_gen`.
    num_samples: solutions per problem.
    key: base key.
    problems_per_batch: problems per prefill call (None: all); the last
      batch is padded to the same shape.
    sampler: the proposal sampler.

  Returns:
    `(per problem its solutions' generated ids, EOS included when sampled;
    {"generated_tokens", "prompt_tokens"})`.
  """
  if not problems:
    return [], dict(generated_tokens=0, prompt_tokens=0)
  dec = policy.decoder
  longest = max(len(p.prompt_ids) for p in problems)
  width = getattr(policy, "prompt_len", None) or longest
  if longest > width:
    raise ValueError(f"a prompt of {longest} tokens exceeds "
                     f"policy.prompt_len={width}")
  key = jax.random.fold_in(key, stable_hash("sample"))
  size = problems_per_batch or len(problems)
  out, stats = [], dict(generated_tokens=0, prompt_tokens=0)
  for start in range(0, len(problems), size):
    real = list(problems[start:start + size])
    padded = real + [real[0]] * (size - len(real))
    prompts, mask = _left_pad([p.prompt_ids for p in padded], width,
                              policy.pad_id)
    rngs = _fold_rows(key, np.stack([
        np.repeat([stable_hash(p.uid) for p in padded], num_samples),
        np.tile(np.arange(num_samples), size)], 1).astype(np.uint32))
    state = dec.sample(
        policy.params, prompts, mask,
        policy.init_cache(size, width + dec.max_gen), sampler, rngs,
        num_samples, dec.max_gen - 1, shard=getattr(policy, "shard", None),
        frozen=np.repeat(np.arange(size) >= len(real), num_samples))
    tokens, num = jax.device_get((state.tokens, state.num_generated))
    for p, problem in enumerate(real):
      rows = range(p * num_samples, (p + 1) * num_samples)
      out.append([tuple(tokens[r, :num[r]].tolist()) for r in rows])
      stats["generated_tokens"] += int(sum(num[r] for r in rows))
      stats["prompt_tokens"] += len(problem.prompt_ids)
  return out, stats


def label_solutions(problems: Sequence[LabelProblem],
                    solutions: Sequence[Sequence[Sequence[int]]],
                    correct_fn: Grader, policy: Any, config: LabelConfig,
                    key: jax.Array
                    ) -> tuple[list[LabeledSolution], dict[str, int]]:
  """Labels every step of every solution by Monte-Carlo roll-outs.

  Args:
    problems: the problems.
    solutions: per problem, its sampled solutions as generated ids (EOS may
      be included; steps end at the decoder's `stop_ids`).
    correct_fn: `(uid, token_ids) -> bool | None`; it receives a whole
      solution (a sample, or a step prefix followed by a roll-out, EOS
      included when sampled).
    policy: a `ttcjax.search.PolicyFns` or any object with `decoder`,
      `params`, `init_cache(batch, max_len)`, `pad_id` and optionally
      `shard`; its `sampler`, `max_len` and `prompt_len` are not used.
    config: roll-out settings.
    key: base key.

  Returns:
    `(records, stats)`: one `LabeledSolution` per kept solution, in input
    order, and counts `n_solutions`, `n_dropped_unparsable`, `n_prefixes`,
    `n_rollouts`, `rollout_tokens` (generated) and `prompt_tokens`
    (prefilled, each prefix once).
  """
  if len(problems) != len(solutions):
    raise ValueError(f"label_solutions: {len(problems)} problems but "
                     f"{len(solutions)} solution lists")
  dec = policy.decoder
  stats = dict(n_solutions=0, n_dropped_unparsable=0, n_prefixes=0,
               n_rollouts=0, rollout_tokens=0, prompt_tokens=0)
  # kept: (problem, solution index, steps, correct); jobs: (index in kept,
  # step index, prompt + steps so far, steps so far).
  kept, jobs = [], []
  for problem, samples in zip(problems, solutions):
    for i, ids in enumerate(samples):
      stats["n_solutions"] += 1
      steps = split_steps(ids, dec.eos_id, dec.stop_ids)
      ids = [int(t) for t in ids]
      correct = correct_fn(problem.uid, ids) if steps else None
      if correct is None:
        stats["n_dropped_unparsable"] += 1
        continue
      for s in range(len(steps) - 1):
        done = [t for step in steps[:s + 1] for t in step]
        jobs.append((len(kept), s, list(problem.prompt_ids) + done, done))
      kept.append((problem, i, steps, bool(correct)))

  hits = [np.zeros(len(steps) - 1) for _, _, steps, _ in kept]
  for batch_jobs, counts in _run_jobs(jobs, kept, correct_fn, policy, config,
                                      key, stats):
    for (record, s, _, _), count in zip(batch_jobs, counts):
      hits[record][s] = count
  k = config.rollouts
  records = [
      LabeledSolution(uid=p.uid, solution_index=i, prompt_ids=p.prompt_ids,
                      steps=tuple(steps),
                      step_labels=tuple(float(h) / k for h in hits[r]) +
                      (float(correct),), correct=correct)
      for r, (p, i, steps, correct) in enumerate(kept)]
  return records, stats


def _run_jobs(jobs, kept, correct_fn, policy, config, key, stats):
  """Yields `(jobs of a batch, correct roll-outs per job)`."""
  if not jobs:
    return
  dec, k = policy.decoder, config.rollouts
  max_new = config.max_new_tokens or dec.max_gen
  dec = dataclasses.replace(dec, max_gen=max_new)
  longest = max(len(prefix) for _, _, prefix, _ in jobs)
  width = config.prefix_len or longest
  if longest > width:
    raise ValueError(f"a step prefix of {longest} tokens exceeds "
                     f"LabelConfig.prefix_len={width}")
  size = config.prefixes_per_batch
  for start in range(0, len(jobs), size):
    real = jobs[start:start + size]
    padded = real + [real[0]] * (size - len(real))
    prefixes, mask = _left_pad([j[2] for j in padded], width, policy.pad_id)
    meta = np.repeat([(stable_hash(kept[r][0].uid), kept[r][1], s)
                      for r, s, _, _ in padded], k, axis=0)
    rngs = _fold_rows(key, np.concatenate(
        [meta, np.tile(np.arange(k), size)[:, None]], 1).astype(np.uint32))
    cache = policy.init_cache(size, width + max_new)
    inputs = (prefixes, mask, cache, rngs)
    if getattr(policy, "shard", None) is not None:
      inputs = policy.shard(inputs)
    state = dec.prefill(policy.params, *inputs[:3], config.sampler,
                        inputs[3], k)
    # Padding rows only fill the batch shape: frozen after their first token.
    frozen = np.repeat(np.arange(size) >= len(real), k)
    state = state.replace(finished=state.finished | frozen)
    if max_new > 1:
      state = dec.decode(policy.params, state, config.sampler, max_new - 1,
                         "eos")
    tokens, num = jax.device_get((state.tokens, state.num_generated))
    correct = []
    for p, (record, _, prefix, done) in enumerate(real):
      uid = kept[record][0].uid
      rows = range(p * k, (p + 1) * k)
      correct.append(sum(
          bool(correct_fn(uid, done + tokens[r, :num[r]].tolist()))
          for r in rows))
      stats["rollout_tokens"] += int(sum(num[r] for r in rows))
      stats["prompt_tokens"] += len(prefix)
    stats["n_prefixes"] += len(real)
    stats["n_rollouts"] += len(real) * k
    yield real, correct


def prm_example_from_ids(prompt_ids: Sequence[int],
                         steps: Sequence[Sequence[int]],
                         step_labels: Sequence[float],
                         max_len: int | None = None,
                         bos_id: int | None = None) -> Example:
  """A PRM example at the token level: `prompt_ids + steps`, one label each.

  The same layout as `ttcjax.data.examples.prm_example` (and as the verifier
  input `ttcjax.search.concat_input` at inference): step i's label sits on
  its last token, no EOS, no LM loss. Working on ids avoids re-tokenising
  generated text, which for BPE tokenizers need not give the same ids.

  Args:
    prompt_ids: the prompt as the policy saw it (BOS included if any).
    steps: token ids per step, each non-empty.
    step_labels: one label in [0, 1] per step.
    max_len: longest allowed sequence, or None. The prompt loses tokens from
      its left, keeping a leading `bos_id`.
    bos_id: the BOS id kept when cutting the prompt.

  Returns:
    One unpadded example (see `ttcjax.data.examples`).

  Raises:
    ValueError: lengths differ, no steps, an empty step or a bad label.
    ExampleTooLongError: the BOS and steps alone exceed max_len.
  """
  if len(steps) != len(step_labels) or not steps:
    raise ValueError(f"prm_example_from_ids: {len(steps)} steps and "
                     f"{len(step_labels)} step_labels (need equal, >= 1)")
  labels = np.asarray(step_labels, np.float32)
  if not np.all((labels >= 0) & (labels <= 1)):
    raise ValueError(f"prm_example_from_ids: labels must be in [0, 1], got "
                     f"{list(step_labels)}")
  if any(len(s) == 0 for s in steps):
    raise ValueError("prm_example_from_ids: an empty step")
  prompt = [int(i) for i in prompt_ids]
  n_steps = sum(len(s) for s in steps)
  if max_len is not None and len(prompt) + n_steps > max_len:
    keep = int(bos_id is not None and prompt[:1] == [bos_id])
    room = max_len - n_steps - keep
    if room < 0:
      raise ExampleTooLongError(
          f"prm_example_from_ids: {n_steps} step tokens (+{keep} BOS) do not "
          f"fit in max_len={max_len}")
    prompt = prompt[:keep] + prompt[len(prompt) - room:]
  tokens = prompt + [int(t) for s in steps for t in s]
  ends = len(prompt) + np.cumsum([len(s) for s in steps]) - 1
  n = len(tokens)
  example = {key: np.zeros(n, dtype) for key, dtype in DTYPES.items()}
  example["tokens"][:] = tokens
  example["token_mask"][:] = True
  example["reward_targets"][ends] = labels
  example["reward_weights"][ends] = 1.0
  return example


def prm_examples(records: Sequence[LabeledSolution],
                 max_len: int | None = None, bos_id: int | None = None
                 ) -> tuple[list[Example], int]:
  """PRM examples of labelled solutions; those too long are skipped.

  Returns:
    `(examples, number skipped as too long)`.
  """
  out, skipped = [], 0
  for r in records:
    try:
      out.append(prm_example_from_ids(r.prompt_ids, r.steps, r.step_labels,
                                      max_len, bos_id))
    except ExampleTooLongError:
      skipped += 1
  return out, skipped


def prm_batch(records: Sequence[LabeledSolution], max_len: int,
              bos_id: int | None = None) -> dict[str, np.ndarray]:
  """All records as one contract batch `[n, max_len]` (e.g. for
  `ttcjax.training.ArraySource`); too-long records are skipped."""
  examples, _ = prm_examples(records, max_len, bos_id)
  return collate(examples, max_len)

