"""The sweep loop: strategies x hyper-parameters x budgets -> records.jsonl.

`run_sweep` runs every `StrategySpec` grid point at every budget over a list
of `SearchProblem`s and appends one record per (problem, strategy,
hyper-parameters, budget, selection) to a records file
(`ttcjax.search.records`). Records already there are skipped, so a killed
sweep resumes where it stopped and a finished one reruns as a no-op. The
models arrive as `Bundle`s of callbacks, built on first need by the caller
(`ttcjax.experiments.sweep_runner` restores checkpoints into them): this
module never sees a model.

Selection never changes what a strategy samples (keys fold problem,
strategy and budget only), so each `StrategySpec.selections` entry is a
record re-selected from the same search, not a second search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax

from ttcjax import distributed, preemption
from ttcjax.search import base, records, strategy
from ttcjax.search.run import run_search
from ttcjax.search.tree import TreeConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategySpec:
  """One strategy's sweep: a grid of its config's fields x budgets.

  Attributes:
    strategy: a registered strategy name (`ttcjax.search.strategy_names`).
    budgets: N values (generations). Grid points that do not fit a budget
      (a beam width or revision length that does not divide N) are skipped.
    grid: config field -> values; every combination is run.
    selections: answer selections recorded from each search.
    base: other config fields, fixed.
  """
  strategy: str
  budgets: Sequence[int]
  grid: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
  selections: Sequence[str] = ("weighted",)
  base: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "budgets", tuple(int(b) for b in self.budgets))
    object.__setattr__(self, "selections", tuple(self.selections))
    object.__setattr__(self, "grid", {k: tuple(v) if isinstance(
        v, (list, tuple)) else (v,) for k, v in dict(self.grid).items()})
    object.__setattr__(self, "base", dict(self.base))
    for name in ("strategy", "selection", "problems_per_batch"):
      if name in self.grid or name in self.base:
        raise ValueError(f"StrategySpec({self.strategy!r}): {name!r} is set "
                         f"by the spec or the run, not in grid/base")
    if not self.budgets or min(self.budgets) < 1:
      raise ValueError(f"StrategySpec({self.strategy!r}).budgets must be "
                       f"positive, got {self.budgets}")
    strategy.get(self.strategy)  # an unknown name lists the registered
    for how in self.selections:
      strategy.make_config(self.strategy, selection=how)  # validates
    self.configs(None)  # validates every grid point

  def configs(self, problems_per_batch: int | None
              ) -> list[strategy.SearchConfig]:
    """The config of every grid point."""
    names = sorted(self.grid)
    out = []
    for values in itertools.product(*(self.grid[n] for n in names)):
      fields = dict(self.base, **dict(zip(names, values)))
      try:
        out.append(strategy.make_config(
            self.strategy, selection=self.selections[0],
            problems_per_batch=problems_per_batch, **fields))
      except (TypeError, ValueError) as e:
        raise ValueError(f"StrategySpec({self.strategy!r}): {e}") from None
    return out

  @property
  def role(self) -> str:
    """The models it needs: 'prm' (policy + PRM) or 'revision'."""
    return strategy.get(self.strategy).role


@dataclasses.dataclass(frozen=True)
class Bundle:
  """The models a role's strategies run on, as callbacks.

  Attributes:
    policy: the policy (or revision model) callbacks.
    verifier: the PRM (or ORM) callbacks.
    policy_config: the policy's model config, for records' FLOPs (opaque
      here; see `records.make_record`).
    verifier_config: the verifier's model config, likewise.
    verifier_free: the verifier is no model (the oracle control): records
      count its tokens but no verifier FLOPs.
    flops_fn: the records' FLOPs counter (`records.make_record`'s; the
      caller passes `ttcjax.analysis.flops.search_flops`); needed with
      `policy_config`.
  """
  policy: base.PolicyFns
  verifier: base.VerifierFns
  policy_config: Any = None
  verifier_config: Any = None
  verifier_free: bool = False
  flops_fn: Callable[..., Any] | None = None


def verifier_context(verifier: base.VerifierFns,
                     config: strategy.SearchConfig) -> int:
  """Keys each verifier token attends, for records' FLOPs (the dense
  context of `ttcjax.analysis.flops.search_flops`): `VerifierFns.max_len`,
  the most a full read pads to; for a tree search with
  `VerifierFns.incremental`, the larger of that and the cache's slots (a
  cached read attends every slot; a batch whose cache fills re-reads in
  full)."""
  if verifier.incremental is not None and isinstance(config, TreeConfig):
    return max(verifier.max_len, verifier.incremental.max_len)
  return verifier.max_len


@dataclasses.dataclass(frozen=True)
class Problem:
  """A problem of the sweep: its search input and what its records carry.

  Attributes:
    search: uid and prompt ids.
    reference: the reference answer (graded with `TaskFns.equiv_fn`
      unless `grade` is given).
    extra: JSON-ready fields added to each of its records.
    grade: `answer -> correct` for this problem (e.g. the task's
      `grade_answer`, which Countdown needs: its answer is a derivation);
      None: `TaskFns.equiv_fn(answer, reference)`.
  """
  search: base.SearchProblem
  reference: str
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  grade: Callable[[str | None], bool] | None = None


def chosen_for(result: base.SearchResult, config: strategy.SearchConfig,
               how: str, equiv_fn: Callable[[str, str], bool]) -> int:
  """The candidate `how` selects from a finished search's candidates."""
  if how == config.selection:
    return result.chosen
  return config.reselect(result.candidates, how, equiv_fn)


def _fits(config: strategy.SearchConfig, budget: int) -> str | None:
  """Why `config` cannot run at `budget`, or None."""
  try:
    config.rows(budget)
  except ValueError as e:
    return str(e)
  return None


def _existing_keys(path: str) -> set[records.Key]:
  """Keys already in `path`, the same set on every process.

  Process 0 reads the file and broadcasts the keys, so the workdir need not
  be visible to the other hosts, and every process skips the same records
  (the loops below must agree, for their collectives to pair up).
  """
  if jax.process_count() == 1:
    return records.existing_keys(path)
  keys = distributed.broadcast_from_primary(
      sorted(records.existing_keys(path)) if distributed.is_primary()
      else None)
  return {tuple(k) for k in keys}


def _claim(done: set[records.Key], uid: str, strategy: str,
           hparams: Sequence[Mapping[str, Any]], budget: int) -> list[bool]:
  """Per hparams, whether its record of `uid` is new; marks those done."""
  fresh = []
  for hp in hparams:
    ident = records.key_of(uid, strategy, hp, budget)
    fresh.append(ident not in done)
    done.add(ident)
  return fresh


def batch_problems(size: int, config: strategy.SearchConfig, budget: int,
                   max_rows: int | None) -> int:
  """Problems per batch: `size`, fewer when their rows exceed `max_rows`."""
  if max_rows is None:
    return size
  return max(1, min(size, max_rows // config.rows(budget)))


def _pending_generations(specs: Sequence[StrategySpec], uids: Sequence[str],
                         size: int, done: set[records.Key]) -> int:
  """Generations the unfinished records of `specs` will take (progress)."""
  total = 0
  for spec in specs:
    seen = set()
    for config, budget in itertools.product(spec.configs(size),
                                            spec.budgets):
      if _fits(config, budget):
        continue
      hparams = [records.hparams_of(config, budget, how)
                 for how in spec.selections]
      ident = records.key_of("", config.strategy, hparams[0], budget)
      if ident in seen:
        continue
      seen.add(ident)
      todo = records.missing(uids, config.strategy, hparams, budget, done)
      total += len(todo) * config.generations(budget)
  return total


def run_sweep(specs: Sequence[StrategySpec], problems: Sequence[Problem],
              task: base.TaskFns, bundles: Callable[[], Mapping[str, Bundle]],
              key: jax.Array, path: str | os.PathLike, *,
              problems_per_batch: int | None,
              max_rows: int | None = None,
              active: Callable[[], contextlib.AbstractContextManager] =
              contextlib.nullcontext,
              progress: Callable[[int, int], None] | None = None
              ) -> dict[str, int]:
  """Runs every sweep of `specs`, appending records to `path`.

  On several processes (`jax.distributed`, see `ttcjax.distributed`), each
  strategy x hyper-parameters x budget's problem batches (contiguous blocks
  of `problems_per_batch` problems, the same batches one process would run)
  are dealt round-robin: in round r, process p runs batch
  `r * process_count + p`. Each round's records are gathered to process 0,
  which alone writes files, in batch order, so the file is the one a single
  process would write. Keys fold the problem uid, so a record does not
  depend on which process ran it. Every process must call it with the same
  arguments.

  Args:
    specs: the sweeps, in order.
    problems: the problems, in order.
    task: answer extraction and equivalence (also grades records).
    bundles: builds `{role: Bundle}` for the roles of `specs`; called once,
      on first need (a finished rerun builds nothing).
    key: base key of every search (`base.search_key`).
    path: the records file (its directory is created by process 0).
    problems_per_batch: problems per search batch (None: all); records are
      written (flush + fsync) after each round of batches.
    max_rows: most policy rows in one batch (`batch_problems`).
    active: context entered around each search (e.g. a mesh).
    progress: called after each round of batches with (generations done,
      generations to do) of this call's unfinished records.

  Returns:
    `{"written": records appended, "skipped": records already there}` (the
    whole run's, on every process).
  """
  path = os.fspath(path)
  hosts, host = jax.process_count(), jax.process_index()
  primary = host == 0
  if primary:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  done = _existing_keys(path)
  writer = records.RecordWriter(path) if primary else None
  by_uid = {p.search.uid: p for p in problems}
  search_problems = [p.search for p in problems]
  built = None  # restored on first need: a finished rerun loads nothing
  counts = {"written": 0, "skipped": 0}
  # Fewer problems than a batch: no padding problems to decode.
  size = min(problems_per_batch or len(problems), max(len(problems), 1))
  rounds = 0  # the preemption sync point's step: the same on every process
  pending = (_pending_generations(specs, [p.uid for p in search_problems],
                                  size, done)
             if progress is not None else 0)
  generated = 0
  for spec in specs:
    seen = set()
    for config, budget in itertools.product(spec.configs(size),
                                            spec.budgets):
      why = _fits(config, budget)
      if why:
        logging.info("skipping %s at N=%d: %s", config.strategy, budget, why)
        continue
      hparams = [records.hparams_of(config, budget, how)
                 for how in spec.selections]
      ident = records.key_of("", config.strategy, hparams[0], budget)
      if ident in seen:  # e.g. beam_width 4 and 'sqrt' at N=16
        continue
      seen.add(ident)
      per_batch = batch_problems(size, config, budget, max_rows)
      if per_batch != size:
        config = dataclasses.replace(config, problems_per_batch=per_batch)
      counts["skipped"] += sum(
          records.key_of(p.uid, config.strategy, hp, budget) in done
          for p in search_problems for hp in hparams)
      todo = records.missing([p.uid for p in search_problems],
                             config.strategy, hparams, budget, done)
      if not todo:
        continue
      if built is None:
        built = bundles()
      models = built[config.role]
      batches = [todo[start:start + per_batch]
                 for start in range(0, len(todo), per_batch)]
      mine_total = sum(map(len, batches[host::hosts]))
      mine_done = 0
      for first in range(0, len(batches), hosts):
        began = time.perf_counter()
        # Every process claims the round's new records in batch order, as
        # one process would, so `done` and the counts agree everywhere.
        fresh = [[_claim(done, search_problems[i].uid, config.strategy,
                         hparams, budget) for i in batch]
                 for batch in batches[first:first + hosts]]
        written = sum(f for batch in fresh for row in batch for f in row)
        out = []
        if host < len(fresh):
          batch = [search_problems[i] for i in batches[first + host]]
          with active():
            results = run_search(config, batch, budget, models.policy,
                                 models.verifier, task, key)
          for result, row in zip(results, fresh[host]):
            problem = by_uid[result.uid]
            grade = problem.grade or (
                lambda a, ref=problem.reference: task.equiv_fn(a, ref))
            for how, hp, new in zip(spec.selections, hparams, row):
              if not new:
                continue
              out.append(records.make_record(
                  result, hparams=hp,
                  chosen=chosen_for(result, config, how, task.equiv_fn),
                  grade_fn=grade, policy_config=models.policy_config,
                  verifier_config=models.verifier_config,
                  policy_context=models.policy.max_len,
                  verifier_context=verifier_context(models.verifier,
                                                    config),
                  verifier_free=models.verifier_free,
                  flops_fn=models.flops_fn, extra=problem.extra))
          mine_done += len(batch)
        if hosts > 1:
          logging.info("host %d/%d: %d/%d problems of %s N=%d %s, %d records"
                       " in %.1f s", host, hosts, mine_done, mine_total,
                       config.strategy, budget, hparams[0], len(out),
                       time.perf_counter() - began)
          out = distributed.gather_items(out)
        if primary:
          if len(out) != written:  # the processes' loops disagree
            raise RuntimeError(f"{path}: gathered {len(out)} records of "
                               f"{config.strategy} N={budget}, expected "
                               f"{written}")
          writer.write(out)
          logging.info("%s N=%d %s: %d records in %.1f s", config.strategy,
                       budget, hparams[0], written,
                       time.perf_counter() - began)
        counts["written"] += written
        if progress is not None:
          generated += config.generations(budget) * sum(
              map(len, batches[first:first + hosts]))
          progress(generated, pending)
        rounds += 1
        # After the round's records are on disk (fsynced): a SIGTERM ends
        # the run here, and a rerun redoes no batch.
        preemption.check(f"{counts['written']} records of this run written "
                         f"to {path}", rounds)
  return counts
