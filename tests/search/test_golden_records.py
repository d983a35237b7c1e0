"""Golden record keys: `hparams` of existing strategies stay byte-identical.

`testdata/golden_records.jsonl` was written by the code at c0d0030 (before
strategies became plug-ins) from the sweep grid `SPECS` below: one record per
(strategy, hyper-parameters, budget, selection) a sweep runs, grid points
that do not fit a budget or repeat another (beam width 4 and 'sqrt' at
N=16) left out, in sweep order. A resumable sweep finds its finished records
by these keys, so any change to them makes every existing workdir rerun.
Never regenerate the file to make this test pass.
"""

import itertools
import json
import os

from ttcjax.search import records, sweep

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata",
                      "golden_records.jsonl")
_ALL = ("weighted", "majority", "plain")

SPECS = (
    sweep.StrategySpec(
        strategy="best_of_n", budgets=(1, 4, 16), selections=_ALL,
        grid={"aggregation": ["last", "min", "prod", "mean"]}),
    sweep.StrategySpec(
        strategy="beam", budgets=(4, 16, 64), selections=("weighted",
                                                          "majority"),
        grid={"beam_width": [1, 2, 4, "sqrt"], "max_rounds": [3, 40],
              "stop_at_answer": [True, False]}, base={"aggregation": "min"}),
    sweep.StrategySpec(
        strategy="lookahead", budgets=(4, 16), selections=_ALL,
        grid={"lookahead": [1, 3], "beam_width": [4, "sqrt"]},
        base={"aggregation": "last", "max_rounds": 40}),
    sweep.StrategySpec(
        strategy="dvts", budgets=(4, 16, 64), selections=("weighted",),
        grid={"beam_width": [2, 4, "sqrt"]},
        base={"aggregation": "prod", "max_rounds": 40}),
    sweep.StrategySpec(
        strategy="revisions", budgets=(4, 16, 64), selections=_ALL,
        grid={"revision_length": [1, 2, 4, 16, 64],
              "revision_context": [0, 4]}),
)


def _swept_keys():
  """(strategy, hparams JSON, budget) of each record a sweep of SPECS
  writes, in order, as the sweep runner computes them."""
  out = []
  for spec in SPECS:
    seen = set()
    for config, budget in itertools.product(spec.configs(None),
                                            spec.budgets):
      if sweep._fits(config, budget):  # pylint: disable=protected-access
        continue
      hparams = [records.hparams_of(config, budget, how)
                 for how in spec.selections]
      ident = records.key_of("", config.strategy, hparams[0], budget)
      if ident in seen:
        continue
      seen.add(ident)
      out += [(config.strategy, json.dumps(hp, sort_keys=True), budget)
              for hp in hparams]
  return out


def test_golden_file_is_what_it_says():
  with open(GOLDEN, encoding="utf-8") as f:
    lines = f.read().splitlines()
  # Written with sort_keys, one record a line, every strategy present.
  for line in lines:
    assert json.dumps(json.loads(line), sort_keys=True) == line
  assert {json.loads(l)["strategy"] for l in lines} == {
      "best_of_n", "beam", "lookahead", "dvts", "revisions"}


def test_sweep_keys_are_the_golden_ones_byte_for_byte():
  golden = [(r["strategy"], json.dumps(r["hparams"], sort_keys=True),
             r["budget"]) for r in records.read_records(GOLDEN)]
  swept = _swept_keys()
  assert len(swept) == len(golden)
  for got, want in zip(swept, golden):
    assert got == want


def test_a_resumed_sweep_finds_every_golden_record():
  done = records.existing_keys(GOLDEN)
  for r in records.read_records(GOLDEN):
    assert records.missing([r["uid"]], r["strategy"], [r["hparams"]],
                           r["budget"], done) == []
