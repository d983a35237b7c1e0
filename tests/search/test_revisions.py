"""Sequential revisions on the toy LM/ORM of `ttcjax.testing`.

The toy revision prompt is the problem's prompt plus one marker token per
attempt in context, so prompt lengths (hence counts) are known exactly, and
a recording `prompt_fn` shows which attempts each revision saw.
"""

import jax
import pytest

from ttcjax import decoding, search, testing
from ttcjax.data import examples
from ttcjax.search import batching
from ttcjax.search.base import Candidate
from ttcjax.search.revisions import (chain_count, select_revisions,
                                     with_prompt_fn)
from ttcjax.tokenizer import ByteTokenizer

KEY = jax.random.key(0)
MARK = 15  # one per attempt in context
TASK = testing.task_fns()
ORM = testing.verifier_fns(7)


class Recorder:
  """A toy `prompt_fn` that logs its calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, problem, attempts):
    self.calls.append((problem.uid, [list(a) for a in attempts]))
    return list(problem.prompt_ids) + [MARK] * len(attempts)


def _policy(prompt_fn):
  plain = testing.policy_fns(testing.lm_params({1: 0.6, 7: 0.4}),
                             prompt_len=8)
  policy = with_prompt_fn(plain, prompt_fn)
  assert policy.prompt_fn is prompt_fn and policy.decoder is plain.decoder
  return policy


def _problems(count, start=0):
  return [search.SearchProblem(f"toy-{i}", [testing.QUERY] * (1 + i % 3))
          for i in range(start, start + count)]


def _run(problems, budget=8, length=4, prompt_fn=None, key=KEY, **kw):
  kw.setdefault("problems_per_batch", 2)
  config = search.make_config("revisions", revision_length=length, **kw)
  return search.run_search(config, problems, budget,
                           _policy(prompt_fn or Recorder()), ORM, TASK, key)


def _solution(candidate):
  ids = list(candidate.token_ids)
  return ids[:-1] if ids and ids[-1] == testing.EOS else ids


def _toy_orm(solution):
  digits = [t - testing.DIGIT0 for i, t in enumerate(solution)
            if testing.DIGIT0 <= t < testing.DIGIT0 + 10 and
            (i == 0 or solution[i - 1] != testing.HASH)]
  return (1 + digits.count(7)) / (2 + len(digits))


def test_each_attempt_sees_the_last_four_attempts_of_its_chain_in_order():
  recorder = Recorder()
  length, chains = 6, 2
  (problem,) = _problems(1)
  (result,) = _run([problem], budget=length * chains, length=length,
                   prompt_fn=recorder)
  cands = result.candidates
  assert len(cands) == length * chains
  # Round 0: one call per problem (fanned out); then one per chain.
  assert recorder.calls[0] == (problem.uid, [])
  assert len(recorder.calls) == 1 + (length - 1) * chains
  for j in range(1, length):
    for c in range(chains):
      uid, seen = recorder.calls[1 + (j - 1) * chains + c]
      want = [_solution(cands[c * length + i])
              for i in range(max(0, j - 4), j)]
      assert uid == problem.uid and seen == want, (j, c)
      assert len(seen) == min(j, 4)


def test_the_orm_reads_each_attempt_after_its_own_prompt():
  problems = _problems(3)
  length, chains = 5, 2
  for problem, result in zip(problems, _run(problems, budget=10,
                                            length=length)):
    base_len = len(problem.prompt_ids)
    read = 0
    for k, cand in enumerate(result.candidates):
      j, solution = k % length, _solution(cand)
      prompt_len = base_len + min(j, 4)
      if solution:
        read += prompt_len + len(solution)
        assert cand.verifier_tokens == prompt_len + len(solution)
        # Scored once, at the attempt's last token.
        assert cand.step_scores == pytest.approx((_toy_orm(solution),))
        assert cand.step_ends == (len(solution),)
      assert cand.score == pytest.approx(cand.step_scores[0] if solution
                                         else 0.0)
    assert result.verifier_tokens_read == read
    prefilled = base_len + sum(chains * (base_len + min(j, 4))
                               for j in range(1, length))
    assert result.prompt_tokens_prefilled == prefilled
    assert result.policy_tokens_generated == sum(
        len(c.token_ids) for c in result.candidates)


@pytest.mark.parametrize("length", [1, 2, 4, 8])
def test_every_factorisation_of_the_budget(length):
  recorder = Recorder()
  problems = _problems(2)
  results = _run(problems, budget=8, length=length, prompt_fn=recorder)
  for problem, result in zip(problems, results):
    assert result.strategy == "revisions"
    assert result.budget == result.generations_used == 8
    assert len(result.candidates) == 8
    assert result.chosen == select_revisions(result.candidates, length,
                                             "weighted", TASK.equiv_fn)
    assert result.prompt_tokens_prefilled == len(problem.prompt_ids) + sum(
        (8 // length) * (len(problem.prompt_ids) + min(j, 4))
        for j in range(1, length))
  assert len(recorder.calls) == 2 + 2 * (8 // length) * (length - 1)


def test_budgets_must_split_into_chains():
  assert chain_count(16, 4) == 4
  for budget, length in ((6, 4), (0, 1), (2, 4)):
    with pytest.raises(ValueError, match="revision_length"):
      chain_count(budget, length)
  with pytest.raises(ValueError, match="revision_length"):
    _run(_problems(1), budget=6, length=4)
  with pytest.raises(ValueError, match="revisions"):
    search.make_config("beam", revision_length=2)
  with pytest.raises(TypeError, match="prompt_fn"):
    search.run_search(search.make_config("revisions"), _problems(1),
                      2, testing.policy_fns(testing.lm_params({1: 1.0})),
                      ORM, TASK, KEY)


def test_zero_context_revisions_see_no_attempt():
  recorder = Recorder()
  _run(_problems(1), budget=4, length=4, prompt_fn=recorder,
       revision_context=0)
  assert all(seen == [] for _, seen in recorder.calls)


def test_one_prefill_decode_and_score_per_round(monkeypatch):
  calls = {"prefill": 0, "decode": 0, "score": 0}

  def count(name, fn):
    def wrapped(*args, **kw):
      calls[name] += 1
      return fn(*args, **kw)
    return wrapped

  monkeypatch.setattr(decoding.Decoder, "prefill",
                      count("prefill", decoding.Decoder.prefill))
  monkeypatch.setattr(decoding.Decoder, "decode",
                      count("decode", decoding.Decoder.decode))
  monkeypatch.setattr(batching, "step_scores",
                      count("score", batching.step_scores))
  _run(_problems(2), budget=8, length=4)  # both problems in one batch
  assert calls == {"prefill": 4, "decode": 4, "score": 4}


# --- Determinism -------------------------------------------------------------


def test_same_key_same_result_and_batch_composition_does_not_matter():
  a, b, c = _problems(3)
  alone = _run([a])[0]
  assert _run([a])[0] == alone
  assert _run([a, b])[0] == alone
  assert _run([c, a])[1] == alone
  assert _run([c, b, a], problems_per_batch=None)[2] == alone
  other = _run([a], key=jax.random.key(1))[0]
  assert [x.token_ids for x in other.candidates] != [
      x.token_ids for x in alone.candidates]


# --- Selection ---------------------------------------------------------------


def _cands(rows):
  return tuple(Candidate(token_ids=(), step_ends=(), step_scores=(s,),
                         score=s, answer=a, finished=f,
                         cut=None if f else "token_cap") for a, s, f in rows)


def _select(rows, length, how):
  return select_revisions(_cands(rows), length, how, lambda x, y: x == y)


def test_hierarchical_selection_differs_from_flat_weighted_and_majority():
  # Chain 0 picks 'a' (0.9 against b's 0.8); chain 1 picks 'c' (0.6 against
  # b's 0.5); across chains 'a' (0.9) beats 'c' (0.6). Flat weighted would
  # pick 'b' (1.3) and majority 'b' (3 votes).
  rows = [("a", 0.9, True), ("b", 0.4, True), ("b", 0.4, True),
          ("b", 0.5, True), ("c", 0.3, True), ("c", 0.3, True)]
  assert _select(rows, 3, "weighted") == 0
  assert _select(rows, 3, "majority") == 1
  assert _select(rows, 3, "plain") == 0
  assert search.select(_cands(rows), "weighted", lambda x, y: x == y) == 1


def test_chain_winners_are_weighted_by_their_class_sum():
  # Chain winners: 'a' weighing 0.2 + 0.2 (chain 0), 'b' weighing 0.3
  # (chain 1), 'b' weighing 0.3 (chain 2): 'b' (0.6) wins, from chain 1.
  rows = [("a", 0.2, True), ("a", 0.2, True),
          ("b", 0.3, True), ("x", 0.1, True),
          ("y", 0.05, True), ("b", 0.3, True)]
  assert _select(rows, 2, "weighted") == 2
  assert _select(rows, 1, "weighted") == 2  # L = 1: plain weighted best-of-N
  assert _select(rows, 6, "weighted") == 2  # one chain: weighted over it


def test_unfinished_and_answerless_attempts_are_never_chosen():
  rows = [("a", 0.99, False), (None, 0.9, True),
          ("b", 0.1, True), ("a", 0.99, False)]
  for how in ("weighted", "majority", "plain"):
    assert _select(rows, 2, how) == 2
  assert _select(rows[:2] + [("c", 0.5, False), (None, 1.0, True)], 2,
                 "weighted") == -1


def test_search_lib_prompt_fn_is_the_trained_layout():
  from ttcjax.experiments import sweep_runner  # pylint: disable=g-import-not-at-top
  tok = ByteTokenizer()
  wrap = sweep_runner.Tokenizer(tok, tok.decode, tok.eos_id, tok.pad_id,
                               (tok.encode("\n")[0],))
  fn = sweep_runner.revision_prompt_fn({"p": "Compute: 1+2"}, wrap, 200)
  problem = search.SearchProblem("p", tok.encode("Compute: 1+2\n"))
  attempts = ["1+2=4\n#### 4\n", "1+2=5\n#### 5\n"]
  got = fn(problem, [tok.encode(a) for a in attempts])
  assert got == examples.revision_prompt_ids(tok, "Compute: 1+2", attempts)
  assert tok.decode(fn(problem, [])) == "Compute: 1+2\nRevised solution:\n"
  # Too long for the width: the oldest attempts go first.
  width = len(examples.revision_prompt_ids(tok, "Compute: 1+2", attempts[1:]))
  tight = sweep_runner.revision_prompt_fn({"p": "Compute: 1+2"}, wrap, width)
  assert tok.decode(tight(problem, [tok.encode(a) for a in attempts])) == (
      "Compute: 1+2\nAttempt 1:\n1+2=5\n#### 5\nRevised solution:\n")
