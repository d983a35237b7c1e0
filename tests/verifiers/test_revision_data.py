"""Revision-model and revision-ORM data: structure, balance, contract layout."""

import collections

import numpy as np
import pytest

from ttcjax.data import examples as ex
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.verifiers import revision_data as rd

TOK = ByteTokenizer()
PROBLEMS = arithmetic.generate(arithmetic.ArithmeticConfig(min_ops=2), 6,
                               seed=0)
QUESTIONS = {p.uid: p.question for p in PROBLEMS}


def _wrong(problem, j):
  steps = arithmetic.split_steps(problem.solution)
  return "".join(steps[:-1]) + f"#### {int(problem.answer) + j + 1}\n"


def _samples(pattern=(4, 1, 0, 8, 3, 2), n=8):
  """Problem i gets pattern[i] correct samples out of n."""
  out = {}
  for problem, right in zip(PROBLEMS, pattern):
    out[problem.uid] = [(problem.solution, True)] * right + [
        (_wrong(problem, j), False) for j in range(n - right)]
    for text, ok in out[problem.uid]:
      assert arithmetic.grade(text, problem) == ok
  return out


def test_revision_lm_examples_learn_the_correct_target_after_wrong_attempts():
  samples = _samples()
  examples, stats = rd.revision_lm_examples(
      TOK, QUESTIONS, samples, np.random.default_rng(0), max_len=256)
  n_right = sum(ok for s in samples.values() for _, ok in s)
  assert stats["n_trajectories"] == n_right == len(examples) + stats[
      "n_too_long"]
  assert stats["n_too_long"] == 0
  assert sum(v for k, v in stats.items() if k.startswith("attempts_")) == (
      n_right)
  assert stats.get("attempts_4", 0) > 0 and stats.get("attempts_0", 0) > 0
  for e in examples:
    target = e["loss_weights"] > 0
    text = TOK.decode(e["tokens"][target])
    assert e["tokens"][target][-1] == TOK.eos_id
    question = TOK.decode(e["tokens"][~target])
    uid = next(u for u, q in QUESTIONS.items()
               if question.startswith(q + "\n"))
    assert arithmetic.grade(text, next(p for p in PROBLEMS if p.uid == uid))
    assert question.endswith(ex.REVISION_HEADER)
    # Every attempt in context is wrong.
    for part in question.split("Attempt ")[1:]:
      attempt = part.split(":\n", 1)[1].replace(ex.REVISION_HEADER, "")
      assert (attempt, False) in samples[uid]
    assert not e["reward_weights"].any()
  batch, _ = rd.revision_lm_batch(TOK, QUESTIONS, samples,
                                  np.random.default_rng(0), 256)
  np.testing.assert_array_equal(batch["tokens"],
                                ex.collate(examples, 256)["tokens"])


def test_orm_candidates_from_samples_take_history_from_the_same_problem():
  samples = _samples()
  for context in ("any", "wrong"):
    cands = rd.orm_candidates_from_samples(
        samples, np.random.default_rng(1), max_k=4, context=context)
    assert len(cands) == sum(len(s) for s in samples.values())
    lengths = collections.Counter(len(c.attempts) for c in cands)
    assert max(lengths) <= 4 and lengths[0] and lengths[4]
    for c in cands:
      texts = dict(samples[c.uid])
      assert texts[c.solution] == c.correct
      assert all(a in texts for a in c.attempts)
      if context == "wrong":
        assert not any(texts[a] for a in c.attempts)
  again = rd.orm_candidates_from_samples(samples, np.random.default_rng(1))
  assert again == rd.orm_candidates_from_samples(samples,
                                                 np.random.default_rng(1))
  with pytest.raises(ValueError, match="context"):
    rd.orm_candidates_from_samples(samples, np.random.default_rng(0),
                                   context="right")


@pytest.mark.parametrize("pattern", [(4, 1, 0, 8, 3, 2), (0, 0, 0, 0, 1, 0),
                                     (8, 8, 8, 8, 8, 8)])
def test_balance_pairs_within_problems_then_across(pattern):
  samples = _samples(pattern)
  cands = rd.orm_candidates_from_samples(samples, np.random.default_rng(2))
  kept = rd.balance(cands, np.random.default_rng(3))
  right = sum(c.correct for c in kept)
  assert right == len(kept) - right
  total_right, total = sum(pattern), 8 * len(pattern)
  assert right == min(total_right, total - total_right)
  per = collections.defaultdict(lambda: [0, 0])
  for c in kept:
    per[c.uid][c.correct] += 1
  for problem, r in zip(PROBLEMS, pattern):
    # At least the within-problem pairs are kept.
    assert min(per[problem.uid]) >= min(r, 8 - r)
  position = {id(c): i for i, c in enumerate(cands)}
  order = [position[id(c)] for c in kept]
  assert order == sorted(order)


def test_orm_example_with_history_layout():
  problem = PROBLEMS[0]
  attempts = [_wrong(problem, 0), _wrong(problem, 1)]
  got = rd.orm_example_with_history(TOK, problem.question, attempts,
                                    problem.solution, 1.0)
  want = ex.orm_example(TOK, ex.revision_prompt(problem.question, attempts),
                        problem.solution, 1.0)
  for key in ex.FEATURES:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert got[key].dtype == want[key].dtype
  assert np.flatnonzero(got["reward_weights"]).tolist() == [
      len(got["tokens"]) - 1]
  # Too long: the oldest attempt goes first, the solution stays whole.
  short = len(got["tokens"]) - 5
  cut = rd.orm_example_with_history(TOK, problem.question, attempts,
                                    problem.solution, 0.0, max_len=short)
  text = TOK.decode(cut["tokens"])
  assert len(cut["tokens"]) <= short and cut["tokens"][0] == TOK.bos_id
  assert text.endswith(ex.REVISION_HEADER + problem.solution)
  assert attempts[1] in text and attempts[0] not in text
  assert cut["reward_targets"][-1] == 0 and cut["reward_weights"][-1] == 1
  with pytest.raises(ex.ExampleTooLongError):
    rd.orm_example_with_history(TOK, problem.question, attempts,
                                problem.solution, 1.0, max_len=10)


def test_revision_orm_batch_is_a_balanced_contract_batch():
  batch, stats = rd.revision_orm_batch(TOK, QUESTIONS, _samples(),
                                       np.random.default_rng(4), 320)
  assert set(batch) == set(ex.FEATURES)
  n = len(batch["tokens"])
  assert n == stats["n_correct"] + stats["n_wrong"] and n > 0
  assert stats["n_correct"] == stats["n_wrong"] and stats["n_too_long"] == 0
  assert stats["n_unbalanced"] == 48
  lengths = batch["token_mask"].sum(1)
  last = lengths - 1
  weights = batch["reward_weights"]
  assert weights.sum() == n and np.all(weights[np.arange(n), last] == 1)
  assert batch["reward_targets"][np.arange(n), last].sum() == n / 2
  assert not batch["loss_weights"].any()
  assert batch["tokens"].dtype == np.int32 and batch["token_mask"].dtype == bool
  for row, length in zip(batch["tokens"], lengths):
    assert ex.REVISION_HEADER in TOK.decode(row[:length])
    assert not row[length:].any()
    assert TOK.eos_id not in row[:length]


def test_orm_candidates_from_chains():
  chains = {"q": [[("a", False), ("b", False), ("c", True)]],
            "p": [[("x", True)], [("y", False), ("z", True)]]}
  cands = rd.orm_candidates_from_chains(chains, max_context=1)
  assert [(c.uid, c.attempts, c.solution, c.correct) for c in cands] == [
      ("p", (), "x", True), ("p", (), "y", False), ("p", ("y",), "z", True),
      ("q", (), "a", False), ("q", ("a",), "b", False),
      ("q", ("b",), "c", True)]


def test_keep_correct_adds_examples_ending_in_their_own_target():
  samples = _samples()
  n_right = sum(ok for s in samples.values() for _, ok in s)
  base, _ = rd.revision_lm_examples(TOK, QUESTIONS, samples,
                                    np.random.default_rng(0), max_len=512)
  same, _ = rd.revision_lm_examples(TOK, QUESTIONS, samples,
                                    np.random.default_rng(0), max_len=512,
                                    keep_correct=0.0)
  for a, b in zip(base, same, strict=True):  # off: the paper's data, as is
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
  examples, stats = rd.revision_lm_examples(
      TOK, QUESTIONS, samples, np.random.default_rng(0), max_len=512,
      keep_correct=1.0)
  assert stats["n_keep_correct"] == n_right
  assert len(examples) == 2 * n_right - stats["n_too_long"]
  for e, b in zip(examples[:n_right], base, strict=True):
    np.testing.assert_array_equal(e["tokens"], b["tokens"])
  for e in examples[n_right:]:
    target = e["loss_weights"] > 0
    answer = TOK.decode(e["tokens"][target][:-1])  # EOS dropped
    question = TOK.decode(e["tokens"][~target])
    last = question.split("Attempt ")[-1].split(":\n", 1)[1]
    assert last.replace(ex.REVISION_HEADER, "").rstrip("\n") == (
        answer.rstrip("\n"))
  with pytest.raises(ValueError, match="keep_correct"):
    rd.revision_lm_examples(TOK, QUESTIONS, samples,
                            np.random.default_rng(0), keep_correct=1.5)
