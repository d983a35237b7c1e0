"""Sweeps: products, zips and the named sweeps, as lists of binding dicts."""

import json
import os

import pytest

from launch import argv, sweeps

GIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "gin_configs")


def test_axis_and_product_order():
  got = sweeps.product(sweeps.axis("S", ["bon", "beam"]),
                       sweeps.axis("N", [16, 64]))
  assert got == [{"S": "bon", "N": 16}, {"S": "bon", "N": 64},
                 {"S": "beam", "N": 16}, {"S": "beam", "N": 64}]


def test_strategy_budget_seed_product_size():
  got = sweeps.product(sweeps.axis("S", ["a", "b"]),
                       sweeps.axis("N", [16, 64, 256]),
                       sweeps.axis("seed", [0, 1, 2]))
  assert len(got) == 18
  assert len({json.dumps(p, sort_keys=True) for p in got}) == 18


def test_zip_and_chain():
  z = sweeps.zip_(sweeps.axis("A", [1, 2]), sweeps.axis("B", ["x", "y"]))
  assert z == [{"A": 1, "B": "x"}, {"A": 2, "B": "y"}]
  assert sweeps.chain(z, [{"C": 0}]) == z + [{"C": 0}]
  with pytest.raises(argv.LaunchError, match="different lengths"):
    sweeps.zip_(sweeps.axis("A", [1, 2]), sweeps.axis("B", [1]))


def test_bad_sweeps_are_named():
  with pytest.raises(argv.LaunchError, match="set by two"):
    sweeps.product(sweeps.axis("A", [1]), sweeps.axis("A", [2]))
  with pytest.raises(argv.LaunchError, match="'A' has no values"):
    sweeps.axis("A", [])
  with pytest.raises(argv.LaunchError, match="must be a list"):
    sweeps.axis("A", "abc")


def test_list_values_stay_single_points():
  got = sweeps.axis("BUDGETS", [[16], [64, 256]])
  assert got == [{"BUDGETS": [16]}, {"BUDGETS": [64, 256]}]
  bindings = [argv.gin_binding(k, v) for p in got for k, v in p.items()]
  assert bindings == ["BUDGETS = [16]", "BUDGETS = [64, 256]"]


def test_from_flag():
  assert sweeps.from_flag(None) == [{}]
  assert sweeps.from_flag("seeds") == sweeps.seeds()
  assert sweeps.from_flag('{"A": [1, 2], "B": ["x y"]}') == [
      {"A": 1, "B": "x y"}, {"A": 2, "B": "x y"}]
  assert sweeps.from_flag('[{"A": 1}, {"A": "it\'s \\"q\\""}]') == [
      {"A": 1}, {"A": "it's \"q\""}]
  with pytest.raises(argv.LaunchError, match="neither a sweep name"):
    sweeps.from_flag("nope")
  with pytest.raises(argv.LaunchError, match="list of binding dicts"):
    sweeps.from_flag("[1, 2]")


def test_math500_sweep_is_strategy_by_budget():
  points = sweeps.math500()
  assert len(points) == 4 * 3
  assert [argv.gin_binding(k, v) for k, v in points[4].items()] == [
      "search.SearchRun.strategies = [@beam/search.StrategySpec()]",
      "beam/search.StrategySpec.budgets = [64]", "search.SearchRun.seed = 0"]
  assert len(sweeps.strategy_budget_seed(["a", "b"], [16, 64, 256],
                                         [0, 1, 2])) == 18


@pytest.mark.parametrize("sweep", ["smoke", "math500"])
def test_strategy_sweeps_use_scopes_the_gin_files_define(sweep):
  files = {"smoke": ["search/best_of_n.gin", "search/beam.gin"],
           "math500": ["experiments/math500_tpu.gin"]}[sweep]
  text = ""
  for name in files:
    with open(os.path.join(GIN, name)) as f:
      text += f.read()
  for point in sweeps.SWEEPS[sweep]():
    scope = point["search.SearchRun.strategies"][0].text[1:].split("/")[0]
    assert f"\n{scope}/search.StrategySpec.strategy = " in text, scope
    assert f"{scope}/search.StrategySpec.budgets" in point


def test_sweep_jobs_parse_with_gin():
  """Every point's bindings parse as gin after the search files', and the
  sweep's values are the ones gin ends up with."""
  gin = pytest.importorskip("gin")
  search = pytest.importorskip("ttcjax.main.search")
  config = argv.make_config(
      entry="search", workdir="gs://bkt/x", image="i", tpu="v4-8",
      gin_files=[os.path.join(GIN, "search", "best_of_n.gin"),
                 os.path.join(GIN, "search", "beam.gin")],
      gin_bindings=["search.Checkpoints.policy = '/p'",
                    "search.Checkpoints.prm = '/q'"])
  for job in argv.build_jobs(config, sweeps.smoke()):
    files = [a.split("=", 1)[1] for a in job.argv
             if a.startswith("--gin_file=")]
    bindings = [a.split("=", 1)[1] for a in job.argv
                if a.startswith("--gin_bindings=")]
    gin.clear_config()
    gin.parse_config_files_and_bindings(files, bindings)
    run = search.SearchRun()
    [spec] = run.strategies
    scope = job.point["search.SearchRun.strategies"][0].text[1:].split("/")[0]
    assert spec.strategy == scope
    assert list(spec.budgets) == job.point[
        f"{scope}/search.StrategySpec.budgets"]
  gin.clear_config()
