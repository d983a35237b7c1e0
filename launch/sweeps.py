"""Sweeps: lists of gin-binding dicts, one work unit per dict.

A sweep is a `list[dict[str, value]]`: binding name -> python value (made
gin text by `argv.gin_literal`, or `argv.GinRaw` for a reference). Build them
from axes and combine:

    seeds = axis("search.SearchRun.seed", [0, 1, 2])
    product(axis("search.SearchRun.temperature", [0.7, 1.0]),
            axis("search.SearchRun.max_new_tokens", [512, 1024]),
            seeds)                                         # 2 x 2 x 3 = 12
    zip_(axis("A", [1, 2]), axis("B", ["x", "y"]))         # 2 points
    chain(sweep_a, sweep_b)                                # concatenation

`--sweep=<name>` picks one of `SWEEPS`; `--sweep='<json>'` gives a JSON
list of dicts, or a dict of name -> list of values (their product).
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Mapping, Sequence

from launch.argv import GinRaw, LaunchError

Point = dict[str, Any]
Sweep = list[Point]


def axis(name: str, values: Sequence[Any]) -> Sweep:
  """One binding over `values`: `[{name: v} for v in values]`."""
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise LaunchError(f"sweep axis {name!r}: values must be a list, got "
                      f"{values!r}")
  if not values:
    raise LaunchError(f"sweep axis {name!r} has no values")
  return [{name: v} for v in values]


def _merge(points: Sequence[Mapping[str, Any]]) -> Point:
  out: Point = {}
  for point in points:
    for name, value in point.items():
      if name in out:
        raise LaunchError(f"sweep binding {name!r} is set by two combined "
                          "sweeps")
      out[name] = value
  return out


def product(*sweeps: Sequence[Mapping[str, Any]]) -> Sweep:
  """Every combination, first sweep slowest (like nested loops)."""
  return [_merge(points) for points in itertools.product(*sweeps)]


def zip_(*sweeps: Sequence[Mapping[str, Any]]) -> Sweep:
  """Point i of every sweep merged; the sweeps must be equally long."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise LaunchError(f"zip_ of sweeps of different lengths {sorted(lengths)}")
  return [_merge(points) for points in zip(*sweeps)]


def chain(*sweeps: Sequence[Mapping[str, Any]]) -> Sweep:
  """The sweeps one after another."""
  return [dict(p) for s in sweeps for p in s]


def strategy_budget_seed(strategies: Sequence[str], budgets: Sequence[int],
                         seeds: Sequence[int] = (0,)) -> Sweep:
  """strategy x budget x seed, one search per work unit.

  Binds `search.SearchRun.strategies` to the one scoped `StrategySpec` and
  that spec's `budgets` to the one budget, so it works with any gin files
  that define the scopes (`<strategy>/search.StrategySpec.*`), e.g.
  `search/best_of_n.gin` plus `search/beam.gin`, or
  `experiments/math500_tpu.gin`.
  """
  return [{"search.SearchRun.strategies":
               [GinRaw(f"@{s}/search.StrategySpec()")],
           f"{s}/search.StrategySpec.budgets": [b],
           "search.SearchRun.seed": seed}
          for s, b, seed in itertools.product(strategies, budgets, seeds)]


def smoke() -> Sweep:
  """2 strategies x 2 budgets x 1 seed of a tiny run (4 work units)."""
  return strategy_budget_seed(["best_of_n", "beam"], [4, 16])


def math500() -> Sweep:
  """MATH-500: best-of-N, beam, lookahead, DVTS x 16/64/256 x 1 seed."""
  return strategy_budget_seed(["best_of_n", "beam", "lookahead", "dvts"],
                              [16, 64, 256])


def seeds(n: int = 3) -> Sweep:
  """Seeds 0..n-1 of whatever the gin files configure."""
  return axis("search.SearchRun.seed", list(range(n)))


SWEEPS: dict[str, Callable[[], Sweep]] = {
    "smoke": smoke, "math500": math500, "seeds": seeds,
}


def from_flag(value: str | None) -> Sweep:
  """`--sweep`: a name in `SWEEPS`, or JSON (a list of dicts, or a dict of
  name -> values whose product is taken). Empty: one point, no bindings."""
  if not value:
    return [{}]
  if value in SWEEPS:
    return SWEEPS[value]()
  try:
    parsed = json.loads(value)
  except json.JSONDecodeError:
    raise LaunchError(f"--sweep={value!r}: neither a sweep name "
                      f"({', '.join(sorted(SWEEPS))}) nor JSON") from None
  if isinstance(parsed, dict):
    return product(*(axis(k, v) for k, v in parsed.items()))
  if isinstance(parsed, list) and all(isinstance(p, dict) for p in parsed):
    return [dict(p) for p in parsed] or [{}]
  raise LaunchError(f"--sweep={value!r}: JSON must be a list of binding "
                    "dicts or a dict of name -> list of values")
