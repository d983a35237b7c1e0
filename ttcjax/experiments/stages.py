"""A study as a sequence of named stages with atomic, resumable artefacts.

A `Stage` is a name, a function, the config it depends on and the earlier
stages it reads. `run_stages` runs the stages in order; each writes its
artefacts into a workdir like this:

  <workdir>/<stage>/          finished artefacts, with a `DONE` marker
  <workdir>/.<stage>.tmp/     the attempt in progress (wiped at each attempt)
  <workdir>/.<stage>.work/    scratch that survives a kill: trainer resume
                              checkpoints, finished chunks of long loops
  <workdir>/stages.jsonl      one line per stage run: status, seconds, info

Atomicity: a stage writes into `.<stage>.tmp/`; when its function returns,
every file is fsynced, `DONE` (JSON: stage, config hash, inputs' hashes,
file list) is written last, and the directory is renamed to `<stage>/`. A
directory without a readable `DONE` is never taken as finished.

Config hashes: a stage's hash covers its config (canonical JSON of nested
dataclasses, tuples, dicts and scalars) and the hashes of the stages it
reads, so a change upstream changes every hash downstream. When a finished
stage's stored hash differs from the new one, `on_change` decides:
'error' (the default) raises `StageConfigError` before anything runs, since
silently recomputing hours of work, or silently reusing stale artefacts, are
both worse than asking; 'rerun' recomputes the changed stages (and, through
the hashes, everything after them) and replaces their artefacts.

Resume: a killed stage leaves its `.work/` directory. Training resumes from
the trainer's own checkpoints kept there (`StageContext.work`), and long
loops use `StageContext.map_chunks`, which stores each finished chunk as a
JSON file and skips it on the next attempt. The work directory records the
hash it was made with and is wiped when the hash changes; it is removed once
the stage commits (or, after a kill between the commit and that, when the
finished stage is next skipped).

One writer: `run_stages` holds the workdir's lock
(`ttcjax.workdir_lock`); a second run refuses with `WorkdirLocked`.

Preemption: after SIGTERM (`ttcjax.preemption`) the runner stops before the
next stage and `map_chunks` before the next chunk (raising `Preempted`);
the trainer and the sweep stop at their own step and batch boundaries.

Damage: `DONE` also records each file's size. Before running, a finished
stage whose files are missing or changed in size is damaged; so is one
whose artefact a later stage's reader found unreadable
(`faults.CorruptArtefactError` from `read_json`, `records.read_records`,
...: the runner then leaves a `.<stage>.damaged` note). With
on_change='error' the run stops naming the file (and line) and the stage
to redo; with 'rerun' the damaged stage is recomputed from scratch.
Failed writes (`faults.WriteError`) leave every committed stage as it was.

Determinism: artefacts must depend on the config and seeds only. Run-time
facts (wall time, tokens/s) belong in the dict a stage function returns,
which goes to `stages.jsonl`, never into the artefacts. Chunk results pass
through JSON even when computed fresh, so a resumed run returns exactly
what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import pathlib
import shutil
import time
import types
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from ttcjax import faults, preemption, workdir_lock

DONE = "DONE"
LOG_FILE = "stages.jsonl"
ON_CHANGE = ("error", "rerun")
_FORMAT = 1

Path = pathlib.Path


class StageConfigError(RuntimeError):
  """A finished stage was made with another config than the one given."""


HASHED_IF_SET = "hashed_if_set"


def hashed_if_set(default: Any) -> Any:
  """A dataclass field left out of `jsonable` (so of config hashes) while it
  holds `default`: a field added to a config that finished stages hashed
  keeps their hashes, and changes them only when set."""
  return dataclasses.field(default=default, metadata={HASHED_IF_SET: True})


def _hashed(value: Any, field: dataclasses.Field) -> bool:
  if not field.metadata.get(HASHED_IF_SET):
    return True
  return getattr(value, field.name) != field.default


def jsonable(value: Any) -> Any:
  """Canonical JSON-ready form of a config: dataclasses (with their type
  name; `hashed_if_set` fields only when not at their default), mappings
  (keys as str), sequences and scalars."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    fields = {f.name: jsonable(getattr(value, f.name))
              for f in dataclasses.fields(value) if _hashed(value, f)}
    return {"__type__": type(value).__name__, **fields}
  if isinstance(value, Mapping):
    return {str(k): jsonable(v) for k, v in sorted(value.items(),
                                                   key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if value is None or isinstance(value, (bool, int, str)):
    return value
  if isinstance(value, float):
    return value if math.isfinite(value) else repr(value)
  if hasattr(value, "item") and callable(value.item):  # numpy scalars
    return jsonable(value.item())
  raise TypeError(f"stage configs must be dataclasses, mappings, sequences "
                  f"or scalars; got {type(value).__name__}: {value!r}")


def config_hash(config: Any, inputs: Mapping[str, str] = ()) -> str:
  """SHA-256 of a config and its input stages' hashes (hex, 16 chars)."""
  text = json.dumps({"config": jsonable(config),
                     "inputs": dict(sorted(dict(inputs).items()))},
                    sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- Durable files -----------------------------------------------------------


def _fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def atomic_write_bytes(path: os.PathLike, data: bytes) -> None:
  """Writes `path` via a temp sibling, fsync and rename.

  Raises:
    faults.WriteError: naming `path` (disk full, I/O error); `path` keeps
      its previous content and the temp sibling is removed.
  """
  path = Path(path)
  tmp = path.parent / f".{path.name}.tmp"
  with faults.writing(path):
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      _unlink_quietly(tmp)
      raise
    _fsync_dir(path.parent)


def _unlink_quietly(path: Path) -> None:
  try:
    path.unlink(missing_ok=True)
  except OSError:
    pass


def atomic_write_json(path: os.PathLike, obj: Any) -> None:
  """`atomic_write_bytes` of `obj` as sorted, compact JSON."""
  atomic_write_bytes(path, json.dumps(obj, sort_keys=True).encode())


def read_json(path: os.PathLike) -> Any:
  """A JSON artefact.

  Raises:
    faults.CorruptArtefactError: the file is missing, not UTF-8 or not
      JSON, naming the file and line (a `ValueError`).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise faults.CorruptArtefactError(path, None, "missing") from None
  except IsADirectoryError:
    raise faults.CorruptArtefactError(path, None, "a directory, not a "
                                      "file") from None
  try:
    return json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise faults.CorruptArtefactError(
        path, line, f"not UTF-8 (byte {e.start})") from None
  except json.JSONDecodeError as e:
    cut = e.pos >= len(data.rstrip()) or e.msg.startswith("Unterminated")
    what = "truncated JSON" if cut else "not JSON"
    raise faults.CorruptArtefactError(
        path, e.lineno, f"{what} ({e.msg}, column {e.colno})") from None


def _fsync_tree(root: Path) -> dict[str, int]:
  """fsyncs every file and directory under `root`; returns relative file
  -> size in bytes."""
  files = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      full = Path(dirpath) / name
      with faults.writing(full), open(full, "rb") as f:
        os.fsync(f.fileno())
        files[str(full.relative_to(root))] = os.fstat(f.fileno()).st_size
    with faults.writing(dirpath):
      _fsync_dir(Path(dirpath))
  return dict(sorted(files.items()))


def _remove(path: Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  elif path.exists() or path.is_symlink():
    path.unlink()


# --- Stages ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a study.

  Attributes:
    name: directory name under the workdir (letters, digits, '_', '-').
    fn: `fn(ctx: StageContext) -> dict | None`; writes artefacts under
      `ctx.out`. The returned dict (JSON-ready run-time facts such as wall
      time) is logged to `stages.jsonl`, not kept as an artefact.
    config: what the artefacts depend on besides the inputs (hashed).
    inputs: names of earlier stages whose artefacts `fn` reads.
    cost: relative expected run time, for the ETA (any positive unit).
  """
  name: str
  fn: Callable[["StageContext"], Mapping[str, Any] | None]
  config: Any = None
  inputs: tuple[str, ...] = ()
  cost: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "inputs", tuple(self.inputs))
    if (not self.name or self.name.startswith(".") or
        not all(c.isalnum() or c in "_-" for c in self.name)):
      raise ValueError(f"Stage.name must be letters, digits, '_' or '-', got "
                       f"{self.name!r}")
    if not self.cost > 0:
      raise ValueError(f"Stage {self.name!r}: cost must be > 0, got "
                       f"{self.cost!r}")


class StageScopeError(AttributeError):
  """A stage read a config field that its hashed config does not cover."""


class ConfigView:
  """One stage's view of a study config: what its hash covers, nothing else.

  While the stage's hashed config is built from the view, every dataclass
  field read is recorded. `scope` then seals it: the stage function, which
  receives the view, may read the recorded fields and those its input
  stages' views recorded (their hashes are folded into its own); any other
  field raises `StageScopeError` naming the stage and the field. So a stage
  that starts reading a field reruns when the field changes, or fails
  until its config hashes the field.

  Properties and methods of the config's class run against the view, so
  what they read is checked too; `replace(**changes)` returns a view of the
  changed config that may also read the changed fields.
  """

  def __init__(self, config: Any, allowed: frozenset[str] | None = None,
               stage: str | None = None):
    if not dataclasses.is_dataclass(config):
      raise TypeError(f"ConfigView needs a dataclass config, got "
                      f"{type(config).__name__}")
    object.__setattr__(self, "_config", config)
    object.__setattr__(self, "_fields",
                       frozenset(f.name for f in dataclasses.fields(config)))
    object.__setattr__(self, "_read", set())
    object.__setattr__(self, "_allowed", allowed)
    object.__setattr__(self, "_stage", stage)

  def __getattr__(self, name: str) -> Any:
    # Only called for names not in the instance dict (set in __init__);
    # private names never reach the config (and a copy without __init__
    # cannot recurse here).
    if name.startswith("_"):
      raise AttributeError(name)
    config = self._config
    if name in self._fields:
      if self._allowed is None:
        self._read.add(name)
      elif name not in self._allowed:
        raise StageScopeError(
            f"stage {self._stage!r} reads {type(config).__name__}.{name}, "
            f"which its hashed config does not cover: add it to the stage's "
            f"config (or to an input stage's)")
      return getattr(config, name)
    if name == "replace":
      def replace(**changes):
        allowed = self._allowed
        return ConfigView(dataclasses.replace(config, **changes),
                          None if allowed is None else allowed | set(changes),
                          self._stage)
      return replace
    attr = inspect.getattr_static(type(config), name)
    if isinstance(attr, property):
      return attr.fget(self)
    if inspect.isfunction(attr):
      return types.MethodType(attr, self)
    return getattr(config, name)

  def __setattr__(self, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

  def __repr__(self) -> str:
    return f"ConfigView({self._config!r}, stage={self._stage!r})"


def scope(todo: Sequence["Stage"]) -> None:
  """Seals the `ConfigView`s bound to each stage's function (a
  `functools.partial`): each may read the fields recorded while its hashed
  config was built, and those of its inputs' views."""
  allowed: dict[str, frozenset[str]] = {}
  for stage in todo:
    inherited = frozenset().union(*(allowed.get(n, frozenset())
                                    for n in stage.inputs))
    views = [a for a in _bound_args(stage.fn) if isinstance(a, ConfigView)]
    own = frozenset().union(*(v._read for v in views))  # pylint: disable=protected-access
    allowed[stage.name] = own | inherited
    for v in views:
      object.__setattr__(v, "_allowed", allowed[stage.name])
      object.__setattr__(v, "_stage", stage.name)


def _bound_args(fn: Any) -> list[Any]:
  if isinstance(fn, functools.partial):
    return list(fn.args) + list(fn.keywords.values())
  return []


@dataclasses.dataclass(frozen=True)
class StageContext:
  """What a stage function sees.

  Attributes:
    name: the stage's name.
    out: where artefacts go (a fresh temp directory, renamed on success).
    work: scratch that survives a kill (resume checkpoints, chunks).
    inputs: name -> finished artefact directory of each input stage.
    log: the runner's log function.
  """
  name: str
  out: Path
  work: Path
  inputs: Mapping[str, Path]
  log: Callable[[str], None]

  def input(self, name: str) -> Path:
    """The artefact directory of input stage `name`."""
    try:
      return self.inputs[name]
    except KeyError:
      raise KeyError(f"stage {self.name!r} did not declare {name!r} in its "
                     f"inputs {sorted(self.inputs)}") from None

  def map_chunks(self, label: str, items: Sequence[Any], chunk_size: int,
                 fn: Callable[[Sequence[Any]], list]) -> list:
    """`fn` over consecutive chunks of `items`, resumable chunk by chunk.

    Each finished chunk is stored as `work/<label>/<index>.json`; a rerun
    after a kill loads the stored chunks and computes the rest. Results go
    through JSON either way (tuples come back as lists), so a resumed run
    returns exactly what an uninterrupted one does.

    Args:
      label: names the loop (several loops may share a stage).
      items: the inputs.
      chunk_size: items per `fn` call.
      fn: maps a chunk to a JSON-ready list (usually one entry per item).

    Returns:
      The concatenated results of every chunk, in order.
    """
    if chunk_size < 1:
      raise ValueError(f"{self.name}/{label}: chunk_size must be >= 1, got "
                       f"{chunk_size}")
    folder = self.work / "chunks" / label
    count = math.ceil(len(items) / chunk_size)
    results, began, computed = [], time.perf_counter(), 0
    for i in range(count):
      path = folder / f"{i:06d}.json"
      meta = {"chunk": i, "chunk_size": chunk_size, "num_items": len(items)}
      stored = _read_chunk(path, self.log)
      if stored is not None and stored.get("meta") == meta:
        results += stored["results"]
        continue
      preemption.check(f"{self.name}/{label}: {i} of {count} chunks saved "
                       f"in {folder}")
      out = fn(items[i * chunk_size:(i + 1) * chunk_size])
      data = json.dumps({"meta": meta, "results": out}, sort_keys=True)
      atomic_write_bytes(path, data.encode())
      results += json.loads(data)["results"]
      computed += 1
      spent = time.perf_counter() - began
      left = spent / computed * (count - i - 1)
      self.log(f"  {self.name}/{label}: chunk {i + 1}/{count} "
               f"({_duration(spent)} so far, ~{_duration(left)} left)")
    return results


def duration(seconds: float) -> str:
  """'m:ss' or 'h:mm:ss'."""
  return _duration(seconds)


def _read_chunk(path: Path, log: Callable[[str], None]) -> dict | None:
  """A stored chunk, or None if absent or damaged (then it is recomputed:
  chunks are scratch, written atomically, so damage came from outside)."""
  if not path.exists():
    return None
  try:
    stored = read_json(path)
  except faults.CorruptArtefactError as e:
    log(f"  {e}: recomputing that chunk")
    return None
  return stored if isinstance(stored, dict) else None


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  minutes, seconds = divmod(seconds, 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else (
      f"{minutes}:{seconds:02d}")


def read_done(stage_dir: os.PathLike) -> dict | None:
  """The `DONE` marker of a stage directory, or None if unfinished."""
  path = Path(stage_dir) / DONE
  try:
    done = read_json(path)
  except (faults.CorruptArtefactError, NotADirectoryError):
    return None
  return done if isinstance(done, dict) and done.get("format") == _FORMAT \
      else None


def stage_hashes(stages: Sequence[Stage]) -> dict[str, str]:
  """Each stage's config hash (inputs' hashes folded in); validates the
  order: names unique, inputs earlier in the list."""
  hashes: dict[str, str] = {}
  for stage in stages:
    if stage.name in hashes:
      raise ValueError(f"two stages are named {stage.name!r}")
    missing = [n for n in stage.inputs if n not in hashes]
    if missing:
      raise ValueError(f"stage {stage.name!r} reads {missing}, which do not "
                       f"come before it")
    hashes[stage.name] = config_hash(
        {"stage": stage.name, "config": stage.config},
        {n: hashes[n] for n in stage.inputs})
  return hashes


def _append_log(workdir: Path, record: Mapping[str, Any]) -> None:
  path = workdir / LOG_FILE
  line = json.dumps(record, sort_keys=True) + "\n"
  with faults.writing(path):
    if path.exists() and path.stat().st_size:
      with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        # A last line cut short by a kill (or a full disk) is ended first,
        # or this record would join it and be skipped with it by `read_log`.
        if f.read(1) != b"\n":
          line = "\n" + line
    with open(path, "a") as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())


def read_log(workdir: os.PathLike) -> list[dict]:
  """The records of `stages.jsonl` (a line cut short by a kill is skipped)."""
  path = Path(workdir) / LOG_FILE
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return out


def _run_one(stage: Stage, workdir: Path, digest: str,
             inputs: Mapping[str, Path], log, fresh: bool = False) -> dict:
  final, tmp = workdir / stage.name, workdir / f".{stage.name}.tmp"
  work = workdir / f".{stage.name}.work"
  stamp = work / "CONFIG_HASH"
  if work.exists() and (fresh or not stamp.exists() or
                        stamp.read_text() != digest):
    # Made for another config, or the stage was damaged (its scratch may
    # be too): nothing in it is reused.
    _remove(work)
  work.mkdir(parents=True, exist_ok=True)
  if not stamp.exists():
    atomic_write_bytes(stamp, digest.encode())
  _remove(tmp)
  tmp.mkdir(parents=True)
  ctx = StageContext(stage.name, tmp, work, dict(inputs), log)
  try:
    try:
      info = dict(stage.fn(ctx) or {})
    except faults.CorruptArtefactError as e:
      raise _blame(e, workdir, stage.name, inputs) from None
    sizes = _fsync_tree(tmp)
    atomic_write_json(tmp / DONE, {
        "format": _FORMAT, "stage": stage.name, "config_hash": digest,
        "inputs": {n: read_done(p)["config_hash"] for n, p in inputs.items()},
        "files": sorted(sizes), "sizes": sizes})
    old = workdir / f".{stage.name}.old"
    _remove(old)
    if final.exists():  # a rerun ('rerun' mode) or a directory without DONE
      final.rename(old)
    tmp.rename(final)
    _fsync_dir(workdir)
    _remove(old)
  except BaseException:
    _remove(tmp)
    raise
  _remove(work)
  _remove(_damage_marker(workdir, stage.name))
  return info


# --- Damaged artefacts -------------------------------------------------------


def _damage_marker(workdir: Path, name: str) -> Path:
  return workdir / f".{name}.damaged"


def _blame(error: faults.CorruptArtefactError, workdir: Path, running: str,
           inputs: Mapping[str, Path]) -> faults.CorruptArtefactError:
  """`error` naming the stage whose artefact (or scratch) is damaged, which
  is marked damaged so that a run with on_change='rerun' redoes it."""
  path = Path(os.path.abspath(error.path))
  owners = {name: Path(os.path.abspath(d)) for name, d in inputs.items()}
  owners[running] = Path(os.path.abspath(workdir / f".{running}.work"))
  for name, folder in owners.items():
    if folder == path or folder in path.parents:
      try:
        atomic_write_json(_damage_marker(workdir, name), {
            "path": error.path, "line": error.line, "detail": error.detail})
      except faults.WriteError as e:
        logging.warning("could not mark stage %s damaged: %s", name, e)
      return error.for_stage(name)
  return error  # not a stage's file: an input the user gave


def damage(workdir: os.PathLike,
           name: str) -> faults.CorruptArtefactError | None:
  """What is wrong with finished stage `name`'s artefacts, or None.

  Cheap (no file is read but the marker): a file the `DONE` marker lists is
  missing or has another size than at commit, or a reader found the stage's
  artefacts damaged in an earlier run (`.<name>.damaged`).
  """
  workdir = Path(workdir)
  marker = _damage_marker(workdir, name)
  if marker.exists():
    try:
      found = read_json(marker)
      return faults.CorruptArtefactError(
          found["path"], found.get("line"),
          f"{found['detail']} (found by an earlier run)", name)
    except (faults.CorruptArtefactError, KeyError, TypeError):
      return faults.CorruptArtefactError(
          marker, None, "marked damaged by an earlier run", name)
  done = read_done(workdir / name) or {}
  sizes = done.get("sizes")
  if not isinstance(sizes, dict):  # made before sizes were recorded
    sizes = {f: None for f in done.get("files", ())}
  for rel, size in sizes.items():
    path = workdir / name / rel
    try:
      actual = path.stat().st_size
    except FileNotFoundError:
      return faults.CorruptArtefactError(
          path, None, f"missing (listed in {workdir / name / DONE})", name)
    except OSError as e:
      return faults.CorruptArtefactError(
          path, None, f"unreadable ({e.strerror or e})", name)
    if size is not None and actual != size:
      return faults.CorruptArtefactError(
          path, None, f"{actual} bytes, {size} when the stage finished "
          f"(truncated or overwritten)", name)
  return None


def _remove_scratch(workdir: Path, name: str) -> None:
  """Removes what a kill between a stage's commit and its clean-up left."""
  for suffix in ("tmp", "work", "old"):
    _remove(workdir / f".{name}.{suffix}")


def with_inputs(stages: Sequence[Stage], only: Sequence[str]) -> list[Stage]:
  """The stages named in `only` and every stage they read, in study order."""
  by_name = {s.name: s for s in stages}
  unknown = sorted(set(only) - by_name.keys())
  if unknown:
    raise ValueError(f"unknown stages {unknown}; stages are {list(by_name)}")
  needed, stack = set(), list(only)
  while stack:
    name = stack.pop()
    if name not in needed:
      needed.add(name)
      stack += by_name[name].inputs
  return [s for s in stages if s.name in needed]


def run_stages(stages: Sequence[Stage], workdir: os.PathLike, *,
               on_change: str = "error",
               log: Callable[[str], None] = logging.info) -> dict[str, Path]:
  """Runs the unfinished stages of a study, in order.

  Args:
    stages: the study; inputs must come before the stages that read them.
    workdir: the study directory (created).
    on_change: 'error' or 'rerun' (see the module docstring).
    log: where progress lines go (one per stage, plus chunk progress).

  Returns:
    name -> finished artefact directory, for every stage.

  Raises:
    StageConfigError: with on_change='error', a finished stage's stored
      hash differs from its config's; raised before any stage runs.
    faults.CorruptArtefactError: with on_change='error', a finished
      stage's artefacts are damaged (`damage`), raised before any stage
      runs; or a stage found an input damaged while reading it. It names
      the file (and line) and the stage to redo (with on_change='rerun').
    workdir_lock.WorkdirLocked: another run holds the workdir.
    preemption.Preempted: SIGTERM; the running stage stopped at a safe
      point (its `.work/` keeps what it finished).
    faults.WriteError: a write failed; committed stages are intact.
  """
  if on_change not in ON_CHANGE:
    raise ValueError(f"on_change must be one of {ON_CHANGE}, got "
                     f"{on_change!r}")
  workdir = Path(workdir)
  hashes = stage_hashes(stages)
  scope(stages)  # stage functions read only what their hashes cover
  with workdir_lock.hold(workdir):
    return _run_locked(stages, workdir, hashes, on_change, log)


def _run_locked(stages, workdir: Path, hashes: Mapping[str, str],
                on_change: str, log) -> dict[str, Path]:
  todo, changed, damaged = [], [], {}
  for stage in stages:
    done = read_done(workdir / stage.name)
    if done is not None and done.get("config_hash") != hashes[stage.name]:
      changed.append((stage.name, done.get("config_hash")))
      todo.append(stage.name)
      continue
    # A finished stage's files, or an unfinished one's scratch that a
    # reader found damaged.
    why = (damage(workdir, stage.name) if done is not None or
           _damage_marker(workdir, stage.name).exists() else None)
    if why is not None:
      damaged[stage.name] = why
    if done is None or why is not None:
      todo.append(stage.name)
  if changed and on_change == "error":
    lines = "; ".join(f"{workdir / n}: made with config hash {old}, now "
                      f"{hashes[n]}" for n, old in changed)
    raise StageConfigError(
        f"{lines}. Use a new workdir, delete those stage directories, or "
        f"run with on_change='rerun' (ttcjax.main.study: --on_change=rerun) "
        f"to recompute them")
  if damaged and on_change == "error":
    first = next(iter(damaged.values()))
    if len(damaged) > 1:
      first = faults.CorruptArtefactError(
          first.path, first.line, f"{first.detail} (also damaged: "
          f"{sorted(damaged)[1:]})", first.stage)
    raise first
  for name, why in damaged.items():
    log(f"{name}: damaged artefact, rerunning the stage: {why.path}"
        f"{'' if why.line is None else f':{why.line}'}: {why.detail}")
  total_cost = sum(s.cost for s in stages if s.name in todo)
  done_cost, began = 0.0, time.perf_counter()
  paths = {}
  for i, stage in enumerate(stages, start=1):
    prefix = f"[{i}/{len(stages)}] {stage.name}"
    if stage.name not in todo:
      _remove_scratch(workdir, stage.name)
      log(f"{prefix}: done before (hash {hashes[stage.name]}), skipped")
      paths[stage.name] = workdir / stage.name
      continue
    preemption.check(f"stages before {stage.name} are finished in "
                     f"{workdir}")
    log(f"{prefix}: running")
    start = time.perf_counter()
    info = _run_one(stage, workdir, hashes[stage.name],
                    {n: paths[n] for n in stage.inputs}, log,
                    fresh=stage.name in damaged)
    seconds = time.perf_counter() - start
    done_cost += stage.cost
    elapsed = time.perf_counter() - began
    eta = elapsed / done_cost * (total_cost - done_cost)
    log(f"{prefix}: done in {_duration(seconds)}; study {_duration(elapsed)}"
        f" so far, ETA {_duration(eta)}")
    _append_log(workdir, {"stage": stage.name, "config_hash":
                          hashes[stage.name], "seconds": round(seconds, 3),
                          "info": info, "time": time.time()})
    paths[stage.name] = workdir / stage.name
  return paths
