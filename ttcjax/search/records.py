"""Per-problem search records: one JSON line per (problem, strategy,
hyper-parameters, budget), appended durably and resumable.

A record holds the answer a strategy chose, whether it is correct, and what
it cost, counted three ways (STYLE.md: the unit of a budget is always
named): generations, tokens (policy sampled, prompt prefilled, verifier
read) and, when model configs are given, FLOPs from the counter the caller
passes (`ttcjax.analysis.flops.search_flops`: `search` imports no analysis).

`RecordWriter` appends a batch of records with one write, then flushes and
fsyncs, so a killed run loses at most the batch being written; a line cut
short by the kill is dropped by `read_records` / `existing_keys` and cut off
by the next `RecordWriter` before it appends. A rerun computes the keys
already written and skips them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from ttcjax import faults
from ttcjax.search.base import SearchResult
from ttcjax.search.strategy import SearchConfig

RECORDS_FILE = "records.jsonl"
Key = tuple[str, str, str, int]


def hparams_of(config: SearchConfig, budget: int,
               selection: str | None = None) -> dict[str, Any]:
  """The hyper-parameters that define a strategy's run at budget N: the
  config's `hparams` (see `ttcjax.search.strategy.SearchConfig`).

  Only the fields the strategy uses are kept, resolved for `budget` (a
  'sqrt' beam width becomes its M), so two configs that run the same search
  share a key.

  Args:
    config: the strategy's config.
    budget: N.
    selection: overrides `config.selection` (answers re-selected from the
      same candidates).

  Returns:
    A JSON-ready dict.
  """
  return config.hparams(budget, selection)


def key_of(uid: str, strategy: str, hparams: Mapping[str, Any],
           budget: int) -> Key:
  """The identity of a record: (uid, strategy, hparams as sorted JSON, N)."""
  return (str(uid), str(strategy), json.dumps(dict(hparams), sort_keys=True),
          int(budget))


def record_key(record: Mapping[str, Any]) -> Key:
  """`key_of` a record dict."""
  return key_of(record["uid"], record["strategy"], record["hparams"],
                record["budget"])


def make_record(result: SearchResult, *, hparams: Mapping[str, Any],
                chosen: int | None = None,
                grade_fn: Callable[[str | None], bool],
                policy_config: Any = None, verifier_config: Any = None,
                policy_context: int | None = None,
                verifier_context: int | None = None,
                verifier_free: bool = False,
                flops_fn: Callable[..., Any] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """One record from a `SearchResult`.

  Args:
    result: the strategy's result for one problem.
    hparams: from `hparams_of`.
    chosen: the chosen candidate index (default `result.chosen`; pass one to
      record another selection over the same candidates).
    grade_fn: `answer -> correct`, from the task (False for None).
    policy_config: the policy's `ModelConfig` (the revision model for
      'revisions'); with it the record gets FLOPs from `flops_fn`.
    verifier_config: the verifier's `ModelConfig` (PRM or ORM).
    policy_context: keys per policy token for `flops_fn` (default the
      config's `max_len`; the cache length is exact for our dense decode).
    verifier_context: keys per verifier token (default its `max_len`).
    verifier_free: the verifier is no model (the oracle of
      `ttcjax.verifiers.oracle`): its tokens are recorded in
      `verifier_tokens`, but `flops_verifier` is 0.
    flops_fn: the FLOPs counter, called as
      `ttcjax.analysis.flops.search_flops` is (which it usually is); needed
      with `policy_config`.
    extra: more JSON-ready fields (reference answer, difficulty, ...).

  Returns:
    A JSON-ready dict with uid, strategy, hparams, budget, answer, correct,
    chosen, generations, policy_tokens, prompt_tokens, verifier_tokens,
    per-candidate answers/scores/finished/correct/tokens (and `cut`, the
    reason, for an unfinished one), and flops_policy /
    flops_verifier / flops when `policy_config` is given.

  Raises:
    ValueError: `policy_config` without `flops_fn`.
  """
  if policy_config is not None and flops_fn is None:
    raise ValueError("make_record: policy_config is given but flops_fn is "
                     "None (pass ttcjax.analysis.flops.search_flops)")
  chosen = result.chosen if chosen is None else chosen
  answer = result.candidates[chosen].answer if chosen >= 0 else None
  graded = {}

  def grade(a):
    if a not in graded:
      graded[a] = bool(a is not None and grade_fn(a))
    return graded[a]

  record = {
      "uid": result.uid, "strategy": result.strategy,
      "hparams": dict(hparams), "budget": result.budget,
      "answer": answer, "correct": grade(answer), "chosen": chosen,
      "generations": result.generations_used,
      "policy_tokens": result.policy_tokens_generated,
      "prompt_tokens": result.prompt_tokens_prefilled,
      "verifier_tokens": result.verifier_tokens_read,
      "candidates": [dict({"answer": c.answer, "score": round(c.score, 6),
                           "finished": c.finished, "correct": grade(c.answer),
                           "tokens": len(c.token_ids)},
                          **({} if c.cut is None else {"cut": c.cut}))
                     for c in result.candidates],
  }
  if policy_config is not None:
    count = flops_fn(
        policy_config, prompt_tokens=result.prompt_tokens_prefilled,
        generated_tokens=result.policy_tokens_generated,
        verifier=None if verifier_free else verifier_config,
        verifier_tokens=0 if verifier_free else result.verifier_tokens_read,
        policy_context=policy_context, verifier_context=verifier_context)
    record.update(flops_policy=count.policy, flops_verifier=count.verifier,
                  flops=count.total)
  record.update(extra or {})
  return record


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Records of a records.jsonl (none if it does not exist).

  A last line without its newline is what a killed write leaves: it is
  dropped. Any other unreadable line is an error naming `path:line`.

  Raises:
    faults.CorruptArtefactError: a line (not the last, unfinished one) is
      not JSON or not a record; a `ValueError` naming `path:line`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  if lines and lines[-1]:  # no final newline: a cut-short write
    lines = lines[:-1]
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      record_key(record)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      what = ("not JSON" if isinstance(e, ValueError) and
              not isinstance(e, faults.CorruptArtefactError)
              else "not a search record")
      raise faults.CorruptArtefactError(
          path, number, f"{what} ({type(e).__name__}: {e})") from None
    records.append(record)
  return records


def existing_keys(path: str | os.PathLike) -> set[Key]:
  """Keys of the complete records in `path` (see `read_records`)."""
  return {record_key(r) for r in read_records(path)}


class RecordWriter:
  """Appends records to a jsonl file, durably, one batch per write.

  On opening, a cut-short last line left by a killed run is removed, so new
  records start on a line of their own.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    _drop_partial_line(self.path)

  def write(self, records: Iterable[Mapping[str, Any]]) -> int:
    """Appends `records` (one JSON line each), then flush and fsync.

    Returns:
      How many were written.
    """
    lines = [json.dumps(dict(r), sort_keys=True) + "\n" for r in records]
    if not lines:
      return 0
    data = "".join(lines).encode("utf-8")
    with faults.writing(self.path):
      size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
      try:
        with open(self.path, "ab") as f:
          f.write(data)
          f.flush()
          os.fsync(f.fileno())
      except OSError:
        # A full disk may have taken part of the batch: cut it back, so the
        # file holds whole batches only (the rerun redoes this one).
        try:
          os.truncate(self.path, size)
        except OSError:
          pass  # the next RecordWriter drops a cut-short last line
        raise
    return len(lines)


def _drop_partial_line(path: str) -> None:
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if not data or data.endswith(b"\n"):
      return
    f.truncate(data.rfind(b"\n") + 1)
    f.flush()
    os.fsync(f.fileno())


def missing(problem_uids: Sequence[str], strategy: str,
            hparams: Sequence[Mapping[str, Any]], budget: int,
            done: set[Key]) -> list[int]:
  """Indices of problems with some record of `hparams` not yet in `done`."""
  return [i for i, uid in enumerate(problem_uids)
          if any(key_of(uid, strategy, h, budget) not in done
                 for h in hparams)]
