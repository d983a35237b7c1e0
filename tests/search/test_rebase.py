"""REBASE (`ttcjax.search.rebase`): the width rule, the prune rule over a
hand-made group, and the search on the toy LM/PRM of `ttcjax.testing`."""

import collections

import jax
import numpy as np
import pytest

from ttcjax import search, testing
from ttcjax.search import rebase, records
from ttcjax.search.tree import Group

N = 8
KEY = jax.random.key(0)
TASK = testing.task_fns()
VERIFIER = testing.verifier_fns(7)


def test_widths_share_the_total_by_a_softmax():
  got = rebase.widths([0.9, 0.5, 0.1], 8, 0.2)
  assert got.sum() == 8 and list(got) == sorted(got, reverse=True)
  share = 8 * np.exp(np.array([0.9, 0.5, 0.1]) / 0.2)
  share /= np.exp(np.array([0.9, 0.5, 0.1]) / 0.2).sum()
  assert np.all(np.abs(got - share) < 1)  # rounded, by largest remainder
  assert list(rebase.widths([0.9, 0.5, 0.1], 8, 1e-3)) == [8, 0, 0]
  assert list(rebase.widths([0.9, 0.5, 0.1, 0.3], 8, 1e3)) == [2, 2, 2, 2]
  assert list(rebase.widths([0.2, 0.2], 3, 1.0)) == [2, 1]  # tie: first
  assert list(rebase.widths([0.5], 0, 1.0)) == [0]
  assert len(rebase.widths([], 4, 1.0)) == 0


def test_balance_spends_exactly_the_width_left():
  group = Group(rows=(0, 1, 2, 3, 4), status=("step", "complete", "step",
                                              "truncated", "step"),
                value=(0.9, 0.8, 0.1, 0.7, 0.5), finished=2, budget=8,
                size=8)
  out = rebase.balance(group, temperature=0.5)
  assert out.complete == (1,) and out.truncated == (3,)
  counts = dict(out.children)
  assert sum(counts.values()) == 8 - 2 - 1
  assert counts[0] >= counts.get(4, 0) >= counts.get(2, 0)
  # Width all spent: nothing continues.
  done = Group(rows=(0, 1), status=("complete", "step"), value=(0.9, 0.1),
               finished=7, budget=8, size=8)
  assert rebase.balance(done, 0.5).children == ()


def test_rebase_is_registered_with_its_own_identity():
  assert "rebase" in search.strategy_names(family="search")
  config = search.make_config("rebase", temperature=0.2)
  assert records.hparams_of(config, 16, "majority") == {
      "selection": "majority", "aggregation": "last", "max_rounds": 40,
      "stop_at_answer": True, "temperature": 0.2}
  with pytest.raises(ValueError, match="temperature"):
    search.make_config("rebase", temperature=0.0)
  with pytest.raises(ValueError, match="beam_width"):
    search.make_config("rebase", beam_width=4)
  with pytest.raises(ValueError, match="registered"):
    search.make_config("rebase2")


@pytest.mark.parametrize("temperature", [0.05, 10.0])
def test_rebase_expands_rows_by_their_share_of_the_width(temperature):
  problems = [search.SearchProblem("toy-0", [testing.QUERY])]
  config = search.make_config("rebase", temperature=temperature,
                              problems_per_batch=2, trace=True)
  (result,) = search.run_search(
      config, problems, N, testing.policy_fns(testing.lm_params(
          {1: 0.7, 7: 0.3})), VERIFIER, TASK, KEY)
  rounds = result.trace
  assert rounds[0].parents == (-1,) * N
  for before, after in zip(rounds[:-1], rounds[1:]):
    value = dict(zip(before.slots, before.values))
    going = sorted((s for s, st in zip(before.slots, before.status)
                    if st == "step"), key=lambda s: (-value[s], s))
    left = N - sum(st == "complete" for r in rounds[:rounds.index(after)]
                   for st in r.status)
    want = rebase.widths([value[s] for s in going], left, temperature)
    children = collections.Counter(after.parents)
    assert [children[s] for s in going] == list(want)
  finished = [c for c in result.candidates if c.finished]
  assert len(finished) == N and result.generations_used == N
  assert result.answer is not None and result.strategy == "rebase"
