"""Tests of the generic stage runner: atomic commits, skipping, hashes,
resume after a kill."""

import dataclasses
import functools
import json
import os

import pytest

from ttcjax.experiments import stages


class Killed(Exception):
  """Stands in for a kill in the middle of a stage."""


def _square_stage(calls, kill_after=None, chunk_size=2, items=range(7),
                  config=None):
  """A stage that squares items chunk by chunk, writing `squares.json`."""

  def fn(ctx):
    def chunk_fn(chunk):
      calls.append(list(chunk))
      if kill_after is not None and len(calls) > kill_after:
        raise Killed()
      return [x * x for x in chunk]

    out = ctx.map_chunks("squares", list(items), chunk_size, chunk_fn)
    stages.atomic_write_json(ctx.out / "squares.json", out)
    return {"chunks": len(calls)}

  return stages.Stage("square", fn, config or {"n": len(items)})


def _sum_stage(calls):
  def fn(ctx):
    calls.append(1)
    squares = stages.read_json(ctx.input("square") / "squares.json")
    stages.atomic_write_json(ctx.out / "sum.json", sum(squares))

  return stages.Stage("total", fn, None, inputs=("square",))


def _files(root):
  out = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_run_writes_artefacts_and_done_markers(tmp_path):
  calls, sums = [], []
  paths = stages.run_stages([_square_stage(calls), _sum_stage(sums)],
                            tmp_path, log=lambda _: None)
  assert stages.read_json(paths["square"] / "squares.json") == [
      x * x for x in range(7)]
  assert stages.read_json(paths["total"] / "sum.json") == 91
  done = stages.read_done(paths["total"])
  assert done["stage"] == "total" and done["files"] == ["sum.json"]
  hashes = stages.stage_hashes([_square_stage([]), _sum_stage([])])
  assert done["config_hash"] == hashes["total"]
  assert done["inputs"] == {"square": hashes["square"]}
  # Only finished stage directories and the log remain.
  assert sorted(os.listdir(tmp_path)) == ["square", stages.LOG_FILE,
                                          "total"]
  log = stages.read_log(tmp_path)
  assert [r["stage"] for r in log] == ["square", "total"]
  assert log[0]["info"] == {"chunks": 4}


def test_rerun_skips_finished_stages(tmp_path):
  calls, sums = [], []
  stages.run_stages([_square_stage(calls), _sum_stage(sums)], tmp_path,
                    log=lambda _: None)
  lines = []
  stages.run_stages([_square_stage(calls), _sum_stage(sums)], tmp_path,
                    log=lines.append)
  assert len(calls) == 4 and len(sums) == 1
  assert all("skipped" in line for line in lines)


def test_changed_config_errors_or_reruns_downstream(tmp_path):
  stages.run_stages([_square_stage([]), _sum_stage([])], tmp_path,
                    log=lambda _: None)
  changed = [_square_stage([], items=range(3)), _sum_stage([])]
  with pytest.raises(stages.StageConfigError, match="square"):
    stages.run_stages(changed, tmp_path, log=lambda _: None)
  calls, sums = [], []
  changed = [_square_stage(calls, items=range(3)), _sum_stage(sums)]
  stages.run_stages(changed, tmp_path, on_change="rerun", log=lambda _: None)
  # The input's hash is part of the reader's: both reran.
  assert len(calls) == 2 and len(sums) == 1
  assert stages.read_json(tmp_path / "total" / "sum.json") == 5
  assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_failed_stage_leaves_no_stage_directory(tmp_path):
  calls = []
  with pytest.raises(Killed):
    stages.run_stages([_square_stage(calls, kill_after=2)], tmp_path,
                      log=lambda _: None)
  assert not (tmp_path / "square").exists()
  assert not (tmp_path / ".square.tmp").exists()
  assert stages.read_done(tmp_path / "square") is None
  # The two finished chunks survive in the work directory.
  chunks = sorted(os.listdir(tmp_path / ".square.work" / "chunks" /
                             "squares"))
  assert chunks == ["000000.json", "000001.json"]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
  whole, resumed = tmp_path / "whole", tmp_path / "resumed"
  stages.run_stages([_square_stage([])], whole, log=lambda _: None)
  calls = []
  with pytest.raises(Killed):
    stages.run_stages([_square_stage(calls, kill_after=2)], resumed,
                      log=lambda _: None)
  calls = []
  stages.run_stages([_square_stage(calls)], resumed, log=lambda _: None)
  assert calls == [[4, 5], [6]]  # only the chunks the kill lost
  assert _files(whole / "square") == _files(resumed / "square")


def test_work_directory_of_another_config_is_discarded(tmp_path):
  with pytest.raises(Killed):
    stages.run_stages([_square_stage([], kill_after=2)], tmp_path,
                      log=lambda _: None)
  calls = []
  stages.run_stages([_square_stage(calls, config={"other": 1})], tmp_path,
                    log=lambda _: None)
  assert len(calls) == 4  # nothing reused


def test_chunks_round_trip_through_json(tmp_path):
  def fn(ctx):
    out = ctx.map_chunks("c", [1, 2, 3], 2, lambda c: [(x, 0.1 * x)
                                                       for x in c])
    stages.atomic_write_json(ctx.out / "out.json", out)
    assert out == [[1, 0.1], [2, 0.2], [3, 0.30000000000000004]]

  stages.run_stages([stages.Stage("s", fn)], tmp_path, log=lambda _: None)


def test_hash_covers_nested_dataclasses_and_inputs():
  import dataclasses

  @dataclasses.dataclass(frozen=True)
  class Inner:
    lr: float

  a = stages.config_hash({"inner": Inner(0.1), "steps": (1, 2)})
  assert a == stages.config_hash({"steps": [1, 2], "inner": Inner(0.1)})
  assert a != stages.config_hash({"inner": Inner(0.2), "steps": (1, 2)})
  assert a != stages.config_hash({"inner": Inner(0.1), "steps": (1, 2)},
                                 {"up": "x"})
  with pytest.raises(TypeError, match="object"):
    stages.config_hash(object())


def test_a_field_hashed_if_set_keeps_old_hashes_until_set():
  import dataclasses

  def make(*fields):  # a config class named Config, as two versions of it
    return dataclasses.make_dataclass("Config", fields, frozen=True)

  old = make(("lr", float))
  new = make(("lr", float), ("fast", bool, stages.hashed_if_set(False)))
  assert stages.config_hash(new(0.1)) == stages.config_hash(old(0.1))
  assert stages.config_hash(new(0.1, fast=True)) != stages.config_hash(
      old(0.1))
  assert stages.jsonable(new(0.1, fast=True))["fast"] is True


def test_stage_order_and_names_are_validated(tmp_path):
  with pytest.raises(ValueError, match="do not come before"):
    stages.run_stages([_sum_stage([]), _square_stage([])], tmp_path)
  with pytest.raises(ValueError, match="letters"):
    stages.Stage("../x", lambda ctx: None)
  with pytest.raises(ValueError, match="on_change"):
    stages.run_stages([], tmp_path, on_change="ignore")


def test_atomic_write_leaves_no_temp_file(tmp_path):
  stages.atomic_write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [2]})
  assert os.listdir(tmp_path / "a") == ["x.json"]
  assert json.loads((tmp_path / "a" / "x.json").read_text()) == {
      "a": [2], "b": 1}


# --- Per-stage config scope (issue 11) ---------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
  a: int = 1
  b: int = 2
  c: int = 3

  @property
  def a_plus_c(self):
    return self.a + self.c

  def twice_b(self):
    return 2 * self.b


def _scoped(name, reads, inputs=(), use=None):
  view = stages.ConfigView(_Cfg())
  config = {r: getattr(view, r) for r in reads}
  fn = functools.partial(lambda v, ctx: use(v), view)
  return stages.Stage(name, fn, config, inputs), view


def test_a_stage_reads_only_what_its_hash_and_its_inputs_cover():
  first, v1 = _scoped("first", ["a"])
  second, v2 = _scoped("second", ["b"], inputs=("first",))
  stages.scope([first, second])
  assert (v1.a, v2.a, v2.b) == (1, 1, 2)  # second inherits first's field
  with pytest.raises(stages.StageScopeError,
                     match=r"stage 'first' reads _Cfg\.b, which its hashed"):
    v1.b  # pylint: disable=pointless-statement
  with pytest.raises(stages.StageScopeError, match="_Cfg.c"):
    v2.c  # pylint: disable=pointless-statement
  # Properties and methods run against the view, so what they read counts.
  with pytest.raises(stages.StageScopeError, match="_Cfg.c"):
    v1.a_plus_c  # pylint: disable=pointless-statement
  assert v2.twice_b() == 4
  with pytest.raises(stages.StageScopeError, match="_Cfg.b"):
    v1.twice_b()
  # replace() gives a view of the new config that may read what changed.
  assert v1.replace(c=7).a_plus_c == 8
  with pytest.raises(stages.StageScopeError, match="_Cfg.b"):
    v1.replace(c=7).b  # pylint: disable=pointless-statement
  with pytest.raises(dataclasses.FrozenInstanceError):
    v1.a = 5


def test_run_stages_seals_the_views_before_any_stage_runs(tmp_path):
  ok, _ = _scoped("ok", ["a"], use=lambda v: {"a": v.a})
  leak, _ = _scoped("leak", ["a"], inputs=("ok",), use=lambda v: {"b": v.b})
  stages.run_stages([ok], tmp_path / "w1")
  with pytest.raises(stages.StageScopeError, match="stage 'leak' reads"):
    stages.run_stages([ok, leak], tmp_path / "w2")


def test_study_stage_hashes_are_golden():
  """Every preset's stage hashes (default and prm_init='large') as
  committed: finished studies keep resuming. A change here reruns users'
  stages; update the file only on purpose, saying why in the commit."""
  from ttcjax.experiments import embedded, embedded_study  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(__file__), "golden",
                      "stage_hashes.json")
  with open(path) as f:
    golden = json.load(f)
  got = {}
  for name, make in sorted(embedded.PRESETS.items()):
    got[name] = stages.stage_hashes(
        embedded_study.full_study_stages(make(), name))
    got[name + "+large"] = stages.stage_hashes(
        embedded_study.full_study_stages(make().replace(prm_init="large"),
                                         name))
  assert got == golden
