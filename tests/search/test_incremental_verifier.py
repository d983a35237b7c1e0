"""Tree search with an incremental verifier (a cache per row) equals full
re-scoring, and reads only the tokens it feeds."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ttcjax import decoding, models, partitioning, search, testing
from ttcjax.experiments import callbacks
from ttcjax.search import batching, incremental

KEY = jax.random.key(0)
TASK = testing.task_fns()
REAL = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=64, reward_head=True)
TAG, GOOD, BAD = 15, 4, 5  # step tag, '+' and '-' ids of the LM-head PRM


@functools.cache
def _params(seed):
  return testing.numpy_params(REAL, seed=seed)


def _policy():
  decoder = decoding.Decoder(models.decode_step_fn(REAL), eos_id=testing.EOS,
                             stop_ids=(testing.NL,), max_gen=16)
  return search.PolicyFns(
      decoder=decoder, params=_params(0),
      init_cache=lambda b, n: models.init_cache(REAL, b, n), max_len=64,
      pad_id=testing.PAD, prompt_len=4)


def _verifier(step_tags, cache_len):
  """The PRM re-scoring in full (cache_len None) or incrementally."""
  tags = (GOOD, BAD) if step_tags else None
  return search.VerifierFns(
      score_fn=callbacks.reward_score_fn(REAL, None, tags),
      params=_params(1), max_len=64, pad_id=testing.PAD,
      build_input=(search.StepTagInput((TAG,)) if step_tags else
                   search.concat_input),
      incremental=(None if cache_len is None else
                   callbacks.incremental_verifier(REAL, cache_len, tags)))


def _problems(count=3):
  return [search.SearchProblem(f"inc-{i}", [testing.QUERY] * (1 + i % 3))
          for i in range(count)]


def _run(strategy, verifier, policy=None, count=3, **kw):
  config = search.make_config(strategy, trace=True, problems_per_batch=count,
                              max_rounds=5, **kw)
  return search.run_search(config, _problems(count), 4, policy or _policy(),
                           verifier, TASK, KEY)


@pytest.fixture
def fed(monkeypatch):
  """Counts the real (unmasked) tokens of every incremental verifier call."""
  count = []
  extend = incremental._extend

  def spy(extend_fn, params, tokens, mask, cache):
    count.append(int(np.asarray(mask).sum()))
    return extend(extend_fn, params, tokens, mask, cache)

  monkeypatch.setattr(incremental, "_extend", spy)
  return count


def _assert_same(full, inc):
  for a, b in zip(full, inc):
    assert [c.token_ids for c in a.candidates] == [c.token_ids
                                                   for c in b.candidates]
    assert [c.finished for c in a.candidates] == [c.finished
                                                  for c in b.candidates]
    for ca, cb in zip(a.candidates, b.candidates):
      assert len(ca.step_scores) == len(cb.step_scores)
      np.testing.assert_allclose(ca.step_scores, cb.step_scores, atol=1e-5)
    assert a.chosen == b.chosen
    assert a.policy_tokens_generated == b.policy_tokens_generated
    for ta, tb in zip(a.trace, b.trace):
      assert dataclasses.replace(ta, values=()) == dataclasses.replace(
          tb, values=())
      np.testing.assert_allclose(ta.values, tb.values, atol=1e-5)


@pytest.mark.parametrize("strategy,kw", [("beam", {"beam_width": 2}),
                                         ("dvts", {"beam_width": 2}),
                                         ("lookahead", {"lookahead": 1,
                                                        "beam_width": 2}),
                                         ("lookahead", {"lookahead": 2,
                                                        "beam_width": 2})])
@pytest.mark.parametrize("step_tags", [False, True])
def test_incremental_scores_equal_full_rescoring(fed, strategy, kw,
                                                 step_tags):
  full = _run(strategy, _verifier(step_tags, None), **kw)
  assert not fed  # no incremental call without the callbacks
  inc = _run(strategy, _verifier(step_tags, 256), **kw)
  _assert_same(full, inc)
  rounds = max(len(r.trace) for r in full)
  assert rounds >= 2 and sum(len(c.step_ends) for r in full
                             for c in r.candidates) > len(full)
  if strategy == "lookahead":
    assert any(sum(t.rollout_tokens) for r in full for t in r.trace)
  read = sum(r.verifier_tokens_read for r in inc)
  assert read == sum(fed)  # the prompts once, then only new tokens
  assert read < sum(r.verifier_tokens_read for r in full)
  # The prompt layout is read once per problem, not once per row.
  assert fed[0] == sum(len(p.prompt_ids) for p in _problems())


@pytest.mark.parametrize("strategy,kw", [("beam", {"beam_width": 2}),
                                         ("lookahead", {"lookahead": 1,
                                                        "beam_width": 2})])
def test_rows_read_in_groups_equal_one_call(monkeypatch, strategy, kw):
  """`IncrementalVerifier.rows=5` of 12 rows: calls of at most 5 rows
  (groups of 5, 5 and 2 padded to 5), same scores and tokens read."""
  shapes, extend = [], incremental._extend

  def spy(extend_fn, params, tokens, mask, cache):
    shapes.append(tokens.shape)
    assert cache.valid.shape[0] == tokens.shape[0]
    return extend(extend_fn, params, tokens, mask, cache)

  monkeypatch.setattr(incremental, "_extend", spy)
  whole = _run(strategy, _verifier(True, 256), **kw)
  assert max(n for n, _ in shapes[1:]) == 12
  shapes.clear()
  inc = _verifier(True, 256)
  grouped = dataclasses.replace(
      inc, incremental=dataclasses.replace(inc.incremental, rows=5))
  parts = _run(strategy, grouped, **kw)
  _assert_same(whole, parts)
  assert [r.verifier_tokens_read for r in whole] == [
      r.verifier_tokens_read for r in parts]
  assert shapes and max(n for n, _ in shapes) == 5


def test_incremental_verifier_rows_are_validated():
  with pytest.raises(ValueError, match="IncrementalVerifier.rows"):
    callbacks.incremental_verifier(REAL, 64, rows=0)


@pytest.mark.parametrize("strategy,kw", [("beam", {"beam_width": 2}),
                                         ("lookahead", {"lookahead": 1,
                                                        "beam_width": 2})])
def test_full_rescoring_counts_every_prefix_it_rereads(fed, monkeypatch,
                                                       strategy, kw):
  """Without the cache, a result's verifier tokens are the real (unmasked)
  tokens of every PRM call: each round's whole inputs, prompt included."""
  real, step_scores = [], batching.step_scores

  def spy(score_fn, params, tokens, mask, ends):
    real.append(int(np.asarray(mask).sum()))
    return step_scores(score_fn, params, tokens, mask, ends)

  monkeypatch.setattr(batching, "step_scores", spy)
  full = _run(strategy, _verifier(True, None), **kw)
  assert len(real) >= 2 and not fed
  assert sum(r.verifier_tokens_read for r in full) == sum(real)
  real.clear()
  inc = _run(strategy, _verifier(True, 256), **kw)
  assert not real  # every batch read incrementally
  assert sum(r.verifier_tokens_read for r in inc) == sum(fed)


def test_a_full_cache_falls_back_to_full_rescoring(fed):
  kw = {"lookahead": 1, "beam_width": 2}
  full = _run("lookahead", _verifier(True, None), **kw)
  # 48 slots hold the prompts and round 0's steps and roll-outs, not
  # round 1's: the batch goes on re-scoring in full.
  inc = _run("lookahead", _verifier(True, 48), **kw)
  _assert_same(full, inc)
  assert len(fed) > 1  # it began incrementally
  assert (sum(fed) < sum(r.verifier_tokens_read for r in inc) <
          sum(r.verifier_tokens_read for r in full))


def test_a_layout_that_does_not_extend_falls_back(fed):
  def numbered(prompt_ids, solution_ids, step_ends):
    # The step count first: a longer solution changes the first id.
    ids, positions = search.concat_input(prompt_ids, solution_ids, step_ends)
    return [4 + len(step_ends) % 8] + ids, [p + 1 for p in positions]

  full_verifier = dataclasses.replace(_verifier(False, None),
                                      build_input=numbered)
  inc_verifier = dataclasses.replace(_verifier(False, 256),
                                     build_input=numbered)
  full = _run("beam", full_verifier, beam_width=2)
  inc = _run("beam", inc_verifier, beam_width=2)
  _assert_same(full, inc)
  assert len(fed) == 1  # the prompts; the first round falls back
  assert sum(r.verifier_tokens_read for r in inc) > sum(fed)


def test_rowcache_keeps_no_rollout_tokens():
  verifier = _verifier(False, 64)
  prompts = [[testing.QUERY] * 2, [testing.QUERY] * 3]
  rows = incremental.RowCache(verifier, prompts, 2)
  row_prompts = [prompts[0]] * 2 + [prompts[1]] * 2
  index = int(rows.cache.index)
  steps = {0: ([6, testing.NL], [2], 0), 3: ([7, 8, testing.NL], [3], 0)}
  rollouts = {0: ([6, testing.NL, 9, testing.NL], [2, 4])}
  scores, read = rows.score(row_prompts, steps, rollouts)
  assert read == {0: 4, 3: 3}
  assert len(scores[0]) == 2 and len(scores[3]) == 1
  # The roll-out's slots were rolled back: only the step's 4 slots are used.
  assert int(rows.cache.index) == index + 4
  assert rows.fed[0] == prompts[0] + [6, testing.NL]
  valid = np.asarray(rows.cache.valid)
  assert valid.sum(1).tolist() == [4, 2, 3, 6]
  # Each score equals a full forward pass over the row's whole input.
  for r, ids, ends in [(0, prompts[0] + [6, testing.NL, 9, testing.NL],
                        [3, 5]), (3, prompts[1] + [7, 8, testing.NL], [5])]:
    want = verifier.score_fn(verifier.params, np.asarray([ids]),
                             np.ones((1, len(ids)), bool))
    np.testing.assert_allclose(scores[r], np.asarray(want)[0, ends],
                               atol=1e-5)
  # Children take their parent's cache and ids; a second step extends it.
  rows.take(np.array([0, 0, 3, 3]))
  scores, read = rows.score(row_prompts[:2] + [prompts[1]] * 2,
                            {1: ([6, testing.NL, 5, testing.NL], [2, 4], 1)},
                            {})
  ids = prompts[0] + [6, testing.NL, 5, testing.NL]
  want = verifier.score_fn(verifier.params, np.asarray([ids]),
                           np.ones((1, len(ids)), bool))
  assert read == {1: 2} and np.isnan(scores[1][0])
  np.testing.assert_allclose(scores[1][1], np.asarray(want)[0, -1],
                             atol=1e-5)


def test_sharded_incremental_verifier_equals_unsharded(fed, monkeypatch):
  specs, extend = [], incremental._extend

  def spy(extend_fn, params, tokens, mask, cache):
    specs.append(getattr(cache.valid.sharding, "spec", None))
    return extend(extend_fn, params, tokens, mask, cache)

  monkeypatch.setattr(incremental, "_extend", spy)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(data=8))
  replicate = lambda tree_: jax.device_put(tree_, NamedSharding(mesh, P()))
  shard = functools.partial(partitioning.shard_rows, mesh=mesh)
  plain = _run("lookahead", _verifier(False, 256), count=2, lookahead=1,
               beam_width=2)
  plain_fed = sum(fed)
  policy = dataclasses.replace(_policy(), params=replicate(_params(0)),
                               shard=shard)
  verifier = dataclasses.replace(_verifier(False, 256),
                                 params=replicate(_params(1)), shard=shard)
  sharded = _run("lookahead", verifier, policy, count=2, lookahead=1,
                 beam_width=2)
  _assert_same(plain, sharded)
  assert [r.verifier_tokens_read for r in plain] == [
      r.verifier_tokens_read for r in sharded]
  assert sum(fed) == 2 * plain_fed  # the sharded run fed the same tokens
  assert P("data") in specs  # the verifier cache's rows were split


def test_a_long_step_is_read_apart_from_the_short_ones(monkeypatch):
  shapes, extend = [], incremental._extend

  def spy(extend_fn, params, tokens, mask, cache):
    shapes.append(tokens.shape)
    return extend(extend_fn, params, tokens, mask, cache)

  monkeypatch.setattr(incremental, "_extend", spy)
  verifier = _verifier(True, 128)
  prompts = [[testing.QUERY] * 2, [testing.QUERY] * 3]
  rows = incremental.RowCache(verifier, prompts, 8)  # 16 rows: 2 stragglers
  row_prompts = [prompts[r // 8] for r in range(16)]
  index = int(rows.cache.index)
  long = [6, 7, 8, 9] * 5 + [testing.NL]
  steps = {r: ([6 + r % 4, testing.NL], [2], 0) for r in range(0, 16, 2)}
  steps[5] = (long, [len(long)], 0)
  scores, read = rows.score(row_prompts, steps, {})
  # Every row reads its 3 ids (2 and the tag) in a call 4 wide; row 5 (22
  # ids) its first 4 there and the other 18 in a call of 2 rows (row 5 and
  # a copy feeding nothing), as wide as what a single call would leave.
  assert shapes[-2:] == [(16, 4), (2, 28)]
  assert int(rows.cache.index) == index + 32  # as one call 32 wide would
  assert read == {**{r: 3 for r in range(0, 16, 2)}, 5: len(long) + 1}
  for r, (solution, ends, _) in steps.items():
    ids, positions = verifier.build_input(row_prompts[r], solution, ends)
    want = verifier.score_fn(verifier.params, np.asarray([ids]),
                             np.ones((1, len(ids)), bool))
    np.testing.assert_allclose(scores[r], np.asarray(want)[0, positions],
                               atol=1e-5)
