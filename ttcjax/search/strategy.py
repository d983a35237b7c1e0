"""What a search strategy is, and the registry of strategies.

A strategy is one module that defines a frozen config class, subclassing
`SearchConfig`, and registers it with `@register`. The class holds the
strategy's hyper-parameters (validated in `__post_init__`) and answers every
question the rest of ttcjax asks about a strategy:

* `run(problems, budget, policy, verifier, task, key)`: the search;
* `identity(budget)`: the hyper-parameters that define its records (with
  `selection`, a record's `hparams`; see `ttcjax.search.records`);
* `generations(budget)`: its cost in generations;
* `rows(budget)`: policy rows per problem (raises when the budget does not
  fit the hyper-parameters);
* `reselect(candidates, how, equiv_fn)`: another answer selection over the
  same candidates;
* class attributes `strategy` (its name, also folded into its keys),
  `family` (strategies compared with each other by the study) and `role`
  ('prm': a policy and a PRM; 'revision': a revision model and its ORM).

`make_config('beam', beam_width=4)` builds a registered config by name;
an unknown name, or a field the strategy does not have, is an error naming
what exists. The built-in strategies register when `ttcjax.search` is
imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import jax

from ttcjax.search import selection as selection_lib
from ttcjax.search.base import (SELECTIONS, Candidate, PolicyFns,
                                SearchProblem, SearchResult, TaskFns,
                                VerifierFns)
from ttcjax.verifiers.scoring import AGGREGATIONS

ROLES = ("prm", "revision")
_REGISTRY: dict[str, type["SearchConfig"]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
  """The fields every strategy's config has; subclass it per strategy.

  Attributes:
    selection: final answer choice: 'plain' (highest score), 'weighted'
      (sum of scores per equivalent answer) or 'majority'.
    aggregation: step scores -> candidate score: 'last', 'min', 'prod',
      'mean'.
    problems_per_batch: problems per batch (rows = problems x
      `rows(N)`); the last batch is padded, so every batch compiles to the
      same shapes. None: all problems in one batch.
    trace: keep a per-round `RoundTrace` in each result (tree searches).
  """
  strategy: ClassVar[str] = ""
  family: ClassVar[str] = "search"
  role: ClassVar[str] = "prm"

  selection: str = "weighted"
  aggregation: str = "last"
  problems_per_batch: int | None = None
  trace: bool = False

  def __post_init__(self):
    if type(self).strategy not in _REGISTRY:
      raise TypeError(f"{type(self).__name__} is not a registered strategy "
                      f"config; build one with make_config(name, ...), name "
                      f"one of {names()}")
    for name, value, allowed in (("selection", self.selection, SELECTIONS),
                                 ("aggregation", self.aggregation,
                                  AGGREGATIONS)):
      if value not in allowed:
        raise ValueError(f"{self._where(name)} must be one of {allowed}, "
                         f"got {value!r}")
    if self.problems_per_batch is not None and self.problems_per_batch < 1:
      raise ValueError(f"{self._where('problems_per_batch')} must be >= 1, "
                       f"got {self.problems_per_batch}")

  def _where(self, field: str) -> str:
    return f"{type(self).__name__}({self.strategy!r}).{field}"

  def run(self, problems: Sequence[SearchProblem], budget: int,
          policy: PolicyFns, verifier: VerifierFns, task: TaskFns,
          key: jax.Array) -> list[SearchResult]:
    """Searches `problems` with budget N; one result each, in order."""
    raise NotImplementedError(f"{type(self).__name__}.run")

  def identity(self, budget: int) -> dict[str, Any]:
    """Hyper-parameters (besides `selection`) that define a run at budget
    N, resolved for N, so two configs that run the same search agree."""
    raise NotImplementedError(f"{type(self).__name__}.identity")

  def hparams(self, budget: int, selection: str | None = None
              ) -> dict[str, Any]:
    """A record's `hparams`: `selection` (default `self.selection`) and
    `identity(budget)`."""
    return {"selection": selection or self.selection,
            **self.identity(budget)}

  def generations(self, budget: int) -> int:
    """Generations a run with budget N costs (N unless it says more)."""
    return budget

  def rows(self, budget: int) -> int:
    """Policy rows per problem at budget N; raises ValueError (naming the
    field) when N does not fit the hyper-parameters."""
    if budget < 1:
      raise ValueError(f"{self.strategy}: budget N={budget} must be >= 1")
    return budget

  def reselect(self, candidates: Sequence[Candidate], how: str,
               equiv_fn: Callable[[str, str], bool]) -> int:
    """The index `how` selects among a finished search's candidates."""
    return selection_lib.select(candidates, how, equiv_fn)


def register(cls: type[SearchConfig]) -> type[SearchConfig]:
  """Class decorator: registers a strategy config under `cls.strategy`."""
  if not (isinstance(cls, type) and issubclass(cls, SearchConfig)):
    raise TypeError(f"register: {cls!r} is not a SearchConfig subclass")
  if not cls.strategy or cls.role not in ROLES:
    raise ValueError(f"register: {cls.__name__} needs a `strategy` name and "
                     f"a role in {ROLES}, got {cls.strategy!r}, {cls.role!r}")
  known = _REGISTRY.get(cls.strategy)
  if known is not None and known.__qualname__ != cls.__qualname__:
    raise ValueError(f"register: strategy {cls.strategy!r} is already "
                     f"{known.__module__}.{known.__qualname__}")
  _REGISTRY[cls.strategy] = cls
  return cls


def names(family: str | None = None) -> tuple[str, ...]:
  """Registered strategy names (of `family`, if given), in registration
  order."""
  return tuple(n for n, c in _REGISTRY.items()
               if family is None or c.family == family)


def get(strategy: str) -> type[SearchConfig]:
  """The config class registered as `strategy`."""
  if strategy not in _REGISTRY:
    raise ValueError(f"unknown search strategy {strategy!r}; registered: "
                     f"{names()}")
  return _REGISTRY[strategy]


def make_config(strategy: str, **fields: Any) -> SearchConfig:
  """The config of `strategy` with `fields` (its hyper-parameters and the
  common ones); a field it does not have is a ValueError naming its
  fields and the strategies that have it."""
  cls = get(strategy)
  own = {f.name for f in dataclasses.fields(cls)}
  for name in fields:
    if name not in own:
      owners = [n for n, c in _REGISTRY.items()
                if name in {f.name for f in dataclasses.fields(c)}]
      raise ValueError(f"strategy {strategy!r} has no field {name!r} (its "
                       f"fields: {sorted(own)}; {name!r} belongs to "
                       f"{owners or 'no strategy'})")
  return cls(**fields)
