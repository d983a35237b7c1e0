"""Search semantics on the toy LM/PRM of `ttcjax.testing`, plus the real model.

Shapes are fixed across tests (2 problems per batch, N=8 rows each, 16
generated tokens, 64 cache slots, 32 verifier tokens) so the decode loop and
the scorer compile once.
"""

import collections
import dataclasses
import functools
import math

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ttcjax import decoding, models, partitioning, search, testing, verifiers
from ttcjax.search import base, batching, stepping as la, tree
from ttcjax.tasks import math as math_task

N = 8
KEY = jax.random.key(0)
SEVENS = (testing.digit(7), testing.NL) * 3
TASK = testing.task_fns()
VERIFIER = testing.verifier_fns(7)
BASE_LM = testing.lm_params({1: 0.7, 7: 0.3})


def _policy(params=BASE_LM, **kw):
  return testing.policy_fns(params, **kw)


def _problems(count, start=0):
  return [search.SearchProblem(f"toy-{i}", [testing.QUERY] * (1 + i % 3))
          for i in range(start, start + count)]


def _config(strategy, **kw):
  kw.setdefault("problems_per_batch", 2)
  return search.make_config(strategy, **kw)


def _run(strategy, problems, policy=None, budget=N, verifier=VERIFIER, **kw):
  return search.run_search(_config(strategy, **kw), problems, budget,
                           policy or _policy(), verifier, TASK, KEY)


# --- Strategy semantics ------------------------------------------------------


def test_beam_finds_the_path_the_prm_prefers_where_best_of_n_does_not():
  problems = _problems(12)
  found = lambda results: sum(
      any(c.token_ids[:6] == SEVENS for c in r.candidates) for r in results)
  bon = found(_run("best_of_n", problems))
  beam = found(_run("beam", problems, beam_width=4))
  assert beam >= 8 and beam >= 2 * bon, (beam, bon)


@pytest.mark.parametrize("width", [2, 4, "sqrt"])
def test_beam_keeps_n_over_m_and_expands_each_m_times(width):
  (result,) = _run("beam", _problems(1), beam_width=width, trace=True)
  m = 2 if width == "sqrt" else width
  rounds = result.trace
  assert len(rounds) == 4  # three digit steps, then the answer line
  assert rounds[0].parents == (-1,) * N
  for before, after in zip(rounds[:-1], rounds[1:]):
    assert len(before.survivors) == N // m
    # The survivors are the best-valued rows of the round.
    value = dict(zip(before.slots, before.values))
    worst_kept = min(value[s] for s in before.survivors)
    assert all(value[s] <= worst_kept for s in before.slots
               if s not in before.survivors)
    assert sorted(after.parents) == sorted(list(before.survivors) * m)
    assert after.slots == tuple(range(N))
  assert rounds[-1].status == ("complete",) * N
  assert len(result.candidates) == N and all(c.finished
                                             for c in result.candidates)
  assert result.generations_used == N


def test_dvts_subtrees_keep_their_best_child():
  (result,) = _run("dvts", _problems(1), beam_width=4, trace=True)
  rounds = result.trace
  for before, after in zip(rounds[:-1], rounds[1:]):
    # One survivor per subtree of 4 rows, expanded into that subtree.
    assert len(before.survivors) == N // 4
    for g, kept in enumerate(sorted(before.survivors)):
      assert kept // 4 == g
      assert after.parents[4 * g:4 * g + 4] == (kept,) * 4
  # Each subtree leaves all 4 rows of its last expansion (search-and-learn).
  assert len(result.candidates) == N
  assert all(c.finished for c in result.candidates)


def test_beam_refills_to_n_when_fewer_than_n_over_m_go_on():
  # Most rows write the answer after one step, so beams end in different
  # rounds and often fewer than N/M = 2 rows go on.
  policy = _policy(testing.lm_params({1: 0.7, 7: 0.3}, (0.0, 0.8, 0.8,
                                                        1.0)))
  results = _run("beam", _problems(6), policy, beam_width=4, trace=True)
  refilled = 0
  for result in results:
    for before, after in zip(result.trace[:-1], result.trace[1:]):
      going = before.status.count("step")
      assert len(before.survivors) == min(going, N // 4)
      refilled += len(before.survivors) < N // 4
      # The pool is N rows again, the best survivors first to get extras.
      counts = collections.Counter(after.parents)
      assert after.slots == tuple(range(N))
      assert [counts[s] for s in before.survivors] == search.beam.refill(
          len(before.survivors), N)
    lengths = {len(c.step_ends) for c in result.candidates}
    assert len(lengths) > 1  # candidates ended in different rounds
    assert len(result.candidates) == N
  assert refilled  # the case the rule is about happened
  assert search.beam.refill(3, 16) == [6, 5, 5]
  assert search.beam.refill(2, 8) == [4, 4] and search.beam.refill(0, 8) == []


@pytest.mark.parametrize("strategy", ["beam", "dvts", "lookahead"])
def test_the_last_round_decodes_to_eos(strategy):
  # Two rounds: one step each, then the last round writes the rest of the
  # solution (two digit steps and the answer line) and EOS, every step
  # scored by the PRM.
  (result,) = _run(strategy, _problems(1), beam_width=4, max_rounds=2,
                   trace=True)
  assert len(result.trace) == 2
  assert result.trace[-1].new_tokens == (8,) * N  # "d\nd\n#a\n$"
  assert set(result.trace[-1].status) == {"complete"}
  assert len(result.candidates) == N
  for c in result.candidates:
    assert c.finished and c.answer is not None and c.cut is None
    assert c.token_ids[-1] == testing.EOS
    assert len(c.step_ends) == len(c.step_scores) == 4
  assert result.chosen >= 0


def test_unfinished_candidates_are_never_chosen():
  # Answer after 1 or 2 steps: a DVTS subtree whose best child wrote the
  # answer leaves its other rows, which only ended a step, unfinished.
  policy = _policy(testing.lm_params({1: 0.7, 7: 0.3}, (0.0, 0.5, 1.0)))
  results = _run("dvts", _problems(8), policy, beam_width=2)
  statuses = [c.finished for r in results for c in r.candidates]
  assert all(len(r.candidates) == N for r in results)
  assert any(statuses) and not all(statuses)
  # The siblings had only ended a step: left behind, not cut by a limit.
  assert {c.cut for r in results for c in r.candidates
          if not c.finished} == {"left_behind"}
  assert all(c.cut is None for r in results for c in r.candidates
             if c.finished)
  for r in results:
    if r.chosen >= 0:
      assert r.candidates[r.chosen].finished
    else:
      assert not any(c.finished and c.answer for c in r.candidates)
  # Eleven steps do not fit in 16 tokens: nothing can be chosen.
  policy = _policy(testing.lm_params({1: 1.0}, (0.0,) * 11 + (1.0,)))
  for strategy in ("beam", "dvts"):
    (result,) = _run(strategy, _problems(1), policy, beam_width=4)
    assert result.candidates and not any(c.finished
                                         for c in result.candidates)
    assert result.chosen == -1 and result.answer is None
    assert {c.cut for c in result.candidates} == {"token_cap"}


def test_candidates_cut_by_max_gen_end_unfinished():
  # Eleven steps do not fit in 16 tokens.
  policy = _policy(testing.lm_params({1: 1.0}, (0.0,) * 11 + (1.0,)))
  for strategy in ("best_of_n", "beam"):
    (result,) = _run(strategy, _problems(1), policy)
    assert result.answer is None
    assert all(not c.finished and len(c.token_ids) == 16
               and c.cut == "token_cap" for c in result.candidates)


@pytest.mark.parametrize("max_len", [9, 10])
def test_a_full_cache_cuts_candidates(max_len):
  # 4 prompt slots, then each sampled token is fed one iteration later:
  # the three digit steps take 5 slots, the answer line 3 more. With 9
  # slots the fourth round cannot start; with 10 it stops mid-line.
  (result,) = _run("beam", _problems(1), _policy(max_len=max_len),
                   beam_width=2, trace=True)
  assert len(result.trace) == 4 and result.answer is None
  assert result.trace[-1].new_tokens == (max_len - 9,) * N
  assert set(result.trace[-1].status) == {"truncated"}
  assert result.candidates and not any(c.finished for c in result.candidates)
  assert {c.cut for c in result.candidates} == {"cache_end"}


def test_giving_up_finishes_without_an_answer():
  policy = _policy(testing.lm_params({1: 0.7, 7: 0.3}, (0.0, 0.0, 0.0, 1.0),
                                     (0.0, 0.5, 0.0, 0.0)))
  (result,) = _run("beam", _problems(1), policy, beam_width=2)
  gave_up = [c for c in result.candidates if c.answer is None]
  assert gave_up and all(c.finished and c.token_ids[-1] == testing.EOS
                         for c in gave_up)
  assert result.candidates[result.chosen].answer is not None


def test_stop_at_answer_saves_the_eos_round():
  (stop,) = _run("beam", _problems(1), beam_width=2)
  (go_on,) = _run("beam", _problems(1), beam_width=2, stop_at_answer=False)
  assert all(c.token_ids[-1] == testing.NL for c in stop.candidates)
  assert all(c.token_ids[-1] == testing.EOS for c in go_on.candidates)
  # Same samples up to the answer line; then one EOS per row, unscored.
  assert go_on.policy_tokens_generated == stop.policy_tokens_generated + N
  assert go_on.verifier_tokens_read == stop.verifier_tokens_read


def test_lookahead_values_steps_at_the_end_of_greedy_rollouts():
  (result,) = _run("lookahead", _problems(1), lookahead=2, beam_width=2,
                   trace=True)
  first = result.trace[0]
  assert all(t == 2 for t in first.new_tokens)  # "d\n"
  assert all(t == 4 for t in first.rollout_tokens)  # greedy "1\n1\n"
  # Value = PRM after "d 1 1": (1 + sevens) / (2 + 3).
  assert set(np.round(first.values, 6)) <= {0.2, 0.4}
  assert result.generations_used == N * 3


# --- Exact accounting --------------------------------------------------------


def _replay(result, prompt_len):
  """Tokens generated and read, recomputed from the trace's tree, and the
  lengths of the rows that completed."""
  generated = read = 0
  lengths, complete = {}, collections.Counter()
  for rnd in result.trace:
    now = {}
    for slot, parent, new, roll, value, status in zip(
        rnd.slots, rnd.parents, rnd.new_tokens, rnd.rollout_tokens,
        rnd.values, rnd.status):
      now[slot] = lengths.get(parent, 0) + new
      generated += new + roll
      if not math.isnan(value):
        read += prompt_len + now[slot] + roll
      complete[now[slot]] += status == "complete"
    lengths = now
  return generated, read, complete


@pytest.mark.parametrize("strategy,kw", [
    ("beam", {"beam_width": 2}), ("beam", {"beam_width": 4}),
    ("dvts", {"beam_width": 2}), ("lookahead", {"lookahead": 1}),
    ("lookahead", {"lookahead": 3, "beam_width": 4})])
def test_tree_search_counts_add_up(strategy, kw):
  problems = _problems(3)
  for problem, result in zip(problems, _run(strategy, problems, trace=True,
                                            **kw)):
    prompt_len = len(problem.prompt_ids)
    generated, read, complete = _replay(result, prompt_len)
    assert (result.policy_tokens_generated,
            result.verifier_tokens_read) == (generated, read)
    finished = collections.Counter(len(c.token_ids) for c in result.candidates
                                   if c.finished)
    assert finished and not finished - complete
    assert result.prompt_tokens_prefilled == prompt_len
    assert result.generations_used == N * (1 + kw.get("lookahead", 0))


def test_best_of_n_counts_add_up():
  problems = _problems(3)
  for problem, result in zip(problems, _run("best_of_n", problems)):
    cands = result.candidates
    assert len(cands) == N and all(c.finished for c in cands)
    assert result.policy_tokens_generated == sum(len(c.token_ids)
                                                 for c in cands)
    # The verifier reads prompt + solution, EOS excluded.
    prompt_len = len(problem.prompt_ids)
    assert result.verifier_tokens_read == sum(
        prompt_len + len(c.token_ids) - 1 for c in cands)
    assert result.prompt_tokens_prefilled == prompt_len  # once, fanned out
    assert result.chosen == search.select(cands, "weighted", TASK.equiv_fn)


def test_one_decode_and_one_score_call_per_round(monkeypatch):
  calls = {"decode": 0, "score": 0}

  def count(name, fn):
    def wrapped(*args, **kw):
      calls[name] += 1
      return fn(*args, **kw)
    return wrapped

  monkeypatch.setattr(tree, "decode_step", count("decode", tree.decode_step))
  monkeypatch.setattr(batching, "step_scores",
                      count("score", batching.step_scores))
  results = _run("beam", _problems(2), beam_width=2, trace=True)
  assert {len(r.trace) for r in results} == {4}
  assert calls == {"decode": 4, "score": 4}  # both problems share each call


# --- Determinism -------------------------------------------------------------


STRATEGIES = [("best_of_n", {}), ("beam", {"beam_width": 2}),
              ("dvts", {"beam_width": 4}), ("lookahead", {"lookahead": 1})]


@pytest.mark.parametrize("strategy,kw", STRATEGIES)
def test_results_do_not_depend_on_the_rest_of_the_batch(strategy, kw):
  a, b, c = _problems(3)
  alone = _run(strategy, [a], **kw)[0]
  assert _run(strategy, [a, b], **kw)[0] == alone
  assert _run(strategy, [c, a], **kw)[1] == alone
  assert _run(strategy, [a], **kw)[0] == alone  # same key, same result
  other = search.run_search(_config(strategy, **kw), [a], N, _policy(),
                            VERIFIER, TASK, jax.random.key(1))[0]
  assert other.candidates != alone.candidates


def test_search_key_folds_uid_strategy_and_budget():
  keys = [search.search_key(KEY, "u", "beam", 8),
          search.search_key(KEY, "v", "beam", 8),
          search.search_key(KEY, "u", "dvts", 8),
          search.search_key(KEY, "u", "beam", 16)]
  data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
  assert len(data) == 4
  assert base.stable_hash("toy-0") == base.stable_hash("toy-0")
  assert base.stable_hash("toy-0") == 1029068436  # same in every process


# --- Lookahead rollback ------------------------------------------------------

REAL = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=64, reward_head=True)


@functools.cache
def _real_params(seed):
  return testing.numpy_params(REAL, seed=seed)


def _real_policy(shard=None, params=None):
  decoder = decoding.Decoder(models.decode_step_fn(REAL), eos_id=testing.EOS,
                             stop_ids=(testing.NL,), max_gen=16)
  return search.PolicyFns(
      decoder=decoder, params=_real_params(0) if params is None else params,
      init_cache=lambda b, n: models.init_cache(REAL, b, n), max_len=64,
      pad_id=testing.PAD, prompt_len=4, shard=shard)


@pytest.mark.parametrize("which,n", [("toy", N), ("real", 4)])
def test_rollback_restores_the_state_exactly(which, n):
  policy = _policy() if which == "toy" else _real_policy()
  dec, sampler = policy.decoder, policy.sampler
  prompts, mask = batching.pad_prompts(_problems(2), testing.PAD, 4)
  rngs = batching.row_keys(jax.random.split(KEY, 2), n, 0)
  state = dec.prefill(policy.params, prompts, mask,
                      policy.init_cache(2, policy.max_len), sampler, rngs, n)
  everyone = np.ones(2 * n, bool)
  tokens, num = jax.device_get((state.tokens, state.num_generated))
  state = la.decode_step(policy, state, sampler,
                         la.step_ended(policy, tokens, num, everyone))
  tokens, num = jax.device_get((state.tokens, state.num_generated))
  rows = la.step_ended(policy, tokens, num, everyone) & (
      tokens[np.arange(2 * n), num - 1] != testing.EOS)
  assert rows.any()
  rolled, restored, calls = la.rollout_and_rollback(
      policy, state, rows, 2, lambda ids: False)
  assert calls >= 1
  assert int(rolled.cache.index) > int(state.cache.index)
  assert np.all(np.asarray(rolled.num_generated)[rows] > num[rows])
  for field in ("index", "valid", "next_pos"):
    np.testing.assert_array_equal(getattr(restored.cache, field),
                                  getattr(state.cache, field))
  for field in ("pending", "tokens", "logprobs", "num_generated",
                "step_start", "finished", "step_done"):
    np.testing.assert_array_equal(getattr(restored, field),
                                  getattr(state, field))
  # Continuing from the rolled-back cache equals continuing without roll-out.
  want = la.decode_step(policy, state, sampler, ~rows)
  got = la.decode_step(policy, restored, sampler, ~rows)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)


@pytest.mark.parametrize("strategy,kw", [("beam", {"beam_width": 2}),
                                         ("lookahead", {"lookahead": 1}),
                                         ("dvts", {"beam_width": 2})])
def test_growing_cache_and_stragglers_give_the_plain_results(monkeypatch,
                                                          strategy, kw):
  slots = []

  def spy(policy, state, *args):
    slots.append(state.cache.max_len)
    return decode_step(policy, state, *args)

  decode_step, put = la.decode_step, decoding.DecodeState.put
  monkeypatch.setattr(la, "decode_step", spy)
  monkeypatch.setattr(tree, "decode_step", spy)
  puts = []
  monkeypatch.setattr(decoding.DecodeState, "put",
                      lambda self, rows, sub: puts.append(len(rows)) or
                      put(self, rows, sub))
  score_fn = verifiers.reward_head_score_fn(
      lambda p, t, m: models.reward_scores(REAL, p, t, m))
  verifier = search.VerifierFns(score_fn=score_fn, params=_real_params(1),
                                max_len=32)
  config = search.make_config(strategy, trace=True, **kw)

  def run(policy):
    return search.run_search(config, _problems(2), 4, policy, verifier, TASK,
                             KEY)

  grown = run(dataclasses.replace(_real_policy(), straggler_fraction=0.5))
  assert min(slots) == 8 and max(slots) > 8  # from 2 x the prompt, doubling
  assert puts and max(puts) <= 4  # <= 4 rows of 8 ended steps apart
  slots.clear()
  puts.clear()
  full = run(dataclasses.replace(_real_policy(), grow_cache=False,
                                 straggler_fraction=0.0))
  assert set(slots) == {64} and not puts
  for a, b in zip(grown, full):
    assert [c.token_ids for c in a.candidates] == [c.token_ids
                                                   for c in b.candidates]
    for ca, cb in zip(a.candidates, b.candidates):
      np.testing.assert_allclose(ca.step_scores, cb.step_scores, atol=1e-6)
    assert (a.policy_tokens_generated, a.verifier_tokens_read, a.trace) == (
        b.policy_tokens_generated, b.verifier_tokens_read, b.trace)


def test_score_rows_reads_live_rows_at_a_power_of_two_width(monkeypatch):
  shapes = []

  def spy(score_fn, params, tokens, *rest):
    shapes.append(tokens.shape)
    return step_scores(score_fn, params, tokens, *rest)

  step_scores = batching.step_scores
  monkeypatch.setattr(batching, "step_scores", spy)
  score_fn = verifiers.reward_head_score_fn(
      lambda p, t, m: models.reward_scores(REAL, p, t, m))
  verifier = search.VerifierFns(score_fn=score_fn, params=_real_params(1),
                                max_len=32)
  prompts = [[1, 2, 3]] * 6
  solutions = [[4, 5, 6, 7, 8], None, [9] * 9, None, None, [2, 3]]
  ends = [[2, 5], [], [4, 9], [], [], [2]]
  got, read = batching.score_rows(verifier, prompts, solutions, ends)
  assert shapes == [(4, 16)]  # 3 rows read, the longest 12 tokens
  batching.score_rows(verifier, prompts, [None] * 5 + [[2]], [[]] * 5 + [[1]])
  assert shapes[-1] == (1, 4)  # never below an eighth of 6 rows, 32 tokens
  assert read == [8, 0, 12, 0, 0, 5]
  for r, solution in enumerate(solutions):  # each alone, full width
    if solution is None:
      assert got[r] == []
      continue
    ids = np.zeros((1, 32), np.int32)
    ids[0, :read[r]] = prompts[r] + solution
    step_ends = np.zeros((1, 32), bool)
    step_ends[0, [3 + e - 1 for e in ends[r]]] = True
    want, _ = step_scores(score_fn, verifier.params, ids,
                          np.arange(32)[None] < read[r], step_ends)
    np.testing.assert_allclose(got[r], np.asarray(want)[0, :len(ends[r])],
                               atol=1e-6)


# --- Sharding ----------------------------------------------------------------


def test_sharded_beam_search_equals_unsharded(monkeypatch):
  specs = []

  def spy(*args):
    state = decode_step(*args)
    specs.append(getattr(state.tokens.sharding, "spec", None))
    return state

  decode_step = tree.decode_step
  monkeypatch.setattr(tree, "decode_step", spy)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=8))
  replicate = lambda tree_: jax.device_put(tree_, NamedSharding(mesh, P()))
  shard = functools.partial(partitioning.shard_rows, mesh=mesh)
  score_fn = verifiers.reward_head_score_fn(
      lambda p, t, m: models.reward_scores(REAL, p, t, m))

  def run(sharded):
    policy = _real_policy(shard if sharded else None,
                          replicate(_real_params(0)) if sharded else None)
    prm = replicate(_real_params(1)) if sharded else _real_params(1)
    verifier = search.VerifierFns(score_fn=score_fn, params=prm, max_len=32,
                                  shard=shard if sharded else None)
    config = search.make_config("beam", beam_width=2, max_rounds=3)
    return search.run_search(config, _problems(2), 4, policy, verifier, TASK,
                             KEY)

  plain, sharded = run(False), run(True)
  for a, b in zip(plain, sharded):
    assert [c.token_ids for c in a.candidates] == [c.token_ids
                                                   for c in b.candidates]
    for ca, cb in zip(a.candidates, b.candidates):
      np.testing.assert_allclose(ca.step_scores, cb.step_scores, atol=1e-5)
    assert (a.policy_tokens_generated, a.verifier_tokens_read) == (
        b.policy_tokens_generated, b.verifier_tokens_read)
  assert sum(r.policy_tokens_generated for r in plain) > 0
  assert P("data") in specs  # rows really were split over the 8 devices


# --- Selection, subsampling, bootstrap ---------------------------------------


def _cand(answer, score, finished=True, tokens=3, read=5):
  return search.Candidate(token_ids=(1,) * tokens, step_ends=(),
                          step_scores=(), score=score, answer=answer,
                          finished=finished, verifier_tokens=read,
                          cut=None if finished else "token_cap")


HAND = [_cand("1/2", 0.9), _cand("0.5", 0.3), _cand("3", 0.6),
        _cand("3", 0.5), _cand("7", 0.99, finished=False),
        _cand(None, 0.95), _cand("3", 0.05), _cand("9", 0.97)]


@pytest.mark.parametrize("how,index", [("plain", 7), ("weighted", 0),
                                       ("majority", 2)])
def test_selection_by_hand(how, index):
  assert search.select(HAND, how, math_task.is_equiv) == index


def test_selection_ties_and_empty():
  tie = [_cand("a", 0.5), _cand("b", 0.5), _cand("b", 0.2), _cand("a", 0.2)]
  eq = lambda x, y: x == y
  assert search.select(tie, "plain", eq) == 0
  assert search.select(tie, "weighted", eq) == 0
  assert search.select(tie, "majority", eq) == 0
  assert search.select(tie[1:], "majority", eq) == 0
  assert search.select([_cand("a", 1.0, finished=False), _cand(None, 1.0)],
                       "weighted", eq) == -1
  np.testing.assert_array_equal(
      search.group_answers(["1/2", None, "0.5", "2"], math_task.is_equiv),
      [0, -1, 0, 1])


def _hand_result(candidates):
  return search.SearchResult(
      uid="hand", strategy="best_of_n", budget=len(candidates),
      candidates=tuple(candidates), chosen=0, answer=candidates[0].answer,
      policy_tokens_generated=sum(len(c.token_ids) for c in candidates),
      prompt_tokens_prefilled=4,
      verifier_tokens_read=sum(c.verifier_tokens for c in candidates),
      generations_used=len(candidates))


def test_subsample_recounts_and_reselects():
  cands = [_cand("3", 0.9, tokens=2, read=4), _cand("4", 0.2, tokens=3),
           _cand("4", 0.3, tokens=5, read=9), _cand("5", 0.1, tokens=7)]
  full = _hand_result(cands)
  eq = lambda x, y: x == y
  same = search.subsample(full, 4, np.random.default_rng(0),
                          selection="majority", equiv_fn=eq)
  assert same.candidates == full.candidates and same.answer == "4"
  for seed in range(5):
    sub = search.subsample(full, 2, seed, selection="plain", equiv_fn=eq)
    assert sub.budget == sub.generations_used == 2
    assert sub.policy_tokens_generated == sum(len(c.token_ids)
                                              for c in sub.candidates)
    assert sub.verifier_tokens_read == sum(c.verifier_tokens
                                           for c in sub.candidates)
    assert sub.prompt_tokens_prefilled == 4
    best = max(sub.candidates, key=lambda c: c.score)
    assert sub.answer == best.answer
  with pytest.raises(ValueError):
    search.subsample(full, 5, 0, selection="plain", equiv_fn=eq)


def test_bootstrap_accuracy():
  eq = lambda x, y: x == y
  right = _hand_result([_cand("1", 0.9), _cand("2", 0.1), _cand("1", 0.2),
                        _cand("3", 0.3)])
  wrong = _hand_result([_cand("5", 0.9), _cand("5", 0.8), _cand("6", 0.1),
                        _cand(None, 0.99)])
  stats = search.bootstrap_accuracy([right, wrong], ["1", "6"], [1, 4],
                                    selection="majority", equiv_fn=eq,
                                    num_resamples=400, seed=3)
  # n = N: every resample is the whole set: "1" wins, "5" wins.
  assert stats[4].mean == 0.5 and stats[4].std == 0.0
  # n = 1: P(correct) = 2/4 for `right`, 1/4 for `wrong` (None never wins).
  assert abs(stats[1].mean - (0.5 + 0.25) / 2) < 0.05
  assert stats[1].std > 0.1
  # Each budget has its own stream: the first draw of budget n is what
  # subsample draws with default_rng([seed, n]).
  first = search.subsample(right, 1, np.random.default_rng([3, 1]),
                           selection="majority", equiv_fn=eq)
  assert stats[1].per_resample[0] in (0.0, 0.5, 1.0)
  again = search.bootstrap_accuracy([right, wrong], ["1", "6"], [1],
                                    selection="majority", equiv_fn=eq,
                                    num_resamples=400, seed=3)
  assert again[1] == stats[1]
  single = search.bootstrap_accuracy([right], ["1"], [1],
                                     selection="majority", equiv_fn=eq,
                                     num_resamples=1, seed=3)
  assert single[1].mean == float(first.answer == "1")


def test_best_of_n_subsampled_budgets_come_from_the_largest():
  (result,) = _run("best_of_n", _problems(1))
  sub = search.subsample(result, 2, 0, selection="weighted",
                         equiv_fn=TASK.equiv_fn)
  assert set(sub.candidates) <= set(result.candidates)
  assert sub.policy_tokens_generated == sum(len(c.token_ids)
                                            for c in sub.candidates)


# --- Config ------------------------------------------------------------------


def test_search_config_validates_and_picks_widths():
  cfg = search.make_config("beam", beam_width="sqrt")
  assert [cfg.width(n) for n in (1, 4, 8, 16, 32, 64)] == [1, 2, 2, 4, 4, 8]
  assert search.make_config("beam", beam_width=4).width(2) == 2
  with pytest.raises(ValueError, match="multiple"):
    search.make_config("beam", beam_width=4).width(6)
  for bad in ({"strategy": "mcts"}, {"selection": "best"},
              {"aggregation": "max"}, {"beam_width": 0},
              {"strategy": "beam", "lookahead": 2}, {"max_rounds": 0}):
    bad = dict({"strategy": "beam"}, **bad)
    with pytest.raises(ValueError):
      search.make_config(bad.pop("strategy"), **bad)
  look = search.make_config("lookahead", lookahead=3)
  assert look.generations(8) == 32


def test_search_imports_no_model_or_data_stack():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import sys, ttcjax.search, ttcjax.verifiers; "
          "bad = [m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'seqio', 'gin') or m.startswith('ttcjax.models')]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_a_candidate_says_why_it_was_cut_and_only_if_it_was():
  with pytest.raises(ValueError, match="cut"):
    search.Candidate(token_ids=(), step_ends=(), step_scores=(), score=0.0,
                     answer=None, finished=False)
  with pytest.raises(ValueError, match="cut"):
    search.Candidate(token_ids=(), step_ends=(), step_scores=(), score=0.0,
                     answer=None, finished=True, cut="token_cap")
  with pytest.raises(ValueError, match="cut"):
    search.Candidate(token_ids=(), step_ends=(), step_scores=(), score=0.0,
                     answer=None, finished=False, cut="bored")


def test_a_child_of_a_shorter_beam_is_not_cut():
  # A random model that ends steps often, at random lengths: refilled
  # children land in rows that held longer beams. The cache (252 slots)
  # holds 12 rounds of 16-token steps, so no row may end at 'cache_end';
  # before tree.VERSION 3 a child was compared with its row's previous
  # occupant and cut as if the cache were full.
  cfg = REAL.replace(max_len=256)
  params = jax.tree.map(np.array, testing.numpy_params(cfg, seed=0))
  params["embedding"][:, 0] = 8.0
  params["embedding"][testing.NL, 0] += 3.0
  params["embedding"][testing.EOS, 0] += 1.0
  for i in range(cfg.n_layers):
    params[f"layer_{i}"]["attn"]["o_proj"]["kernel"][..., 0] = 0
    params[f"layer_{i}"]["mlp"]["down_proj"]["kernel"][:, 0] = 0
  policy = search.PolicyFns(
      decoder=decoding.Decoder(models.decode_step_fn(cfg),
                               eos_id=testing.EOS, stop_ids=(testing.NL,),
                               max_gen=16),
      params=params, init_cache=lambda b, n: models.init_cache(cfg, b, n),
      max_len=256, pad_id=testing.PAD, prompt_len=4)
  results = _run("beam", _problems(4), policy, budget=8, beam_width=2,
                 max_rounds=12, trace=True)
  reasons = collections.Counter(c.cut for r in results for c in r.candidates)
  lengths = {n for r in results for t in r.trace for n in t.new_tokens if n}
  assert len(lengths) > 2, lengths  # steps of many lengths
  assert reasons["cache_end"] == 0, reasons
  assert sum(c.finished for r in results for c in r.candidates) > 0
