"""Artefacts damaged after their stage committed (issue 14, part 5): found
on load, named with file and line, and the stage to redo is named with the
exact way to redo it (`only=[STAGE], on_change='rerun'`)."""

import json
import os

import pytest

from ttcjax import faults
from ttcjax.experiments import embedded_study, stages
from ttcjax.search import records


def _record(uid):
  return {"uid": uid, "strategy": "best_of_n", "hparams": {"n": 1},
          "budget": 2, "answer": "1", "correct": True}


def _study(calls):
  def make(ctx):
    calls.append("make")
    stages.atomic_write_json(ctx.out / "rows.json", [{"x": i} for i in
                                                     range(20)])
    (ctx.out / "model").mkdir()
    (ctx.out / "model" / "params.bin").write_bytes(b"\0" * 64)
    records.RecordWriter(ctx.out / "records.jsonl").write(
        [_record(str(i)) for i in range(5)])

  def use(ctx):
    calls.append("use")
    rows = stages.read_json(ctx.input("make") / "rows.json")
    recs = records.read_records(ctx.input("make") / "records.jsonl")
    stages.atomic_write_json(ctx.out / "n.json", [len(rows), len(recs)])

  return [stages.Stage("make", make), stages.Stage("use", use, inputs=(
      "make",))]


def _flip(path, offset, byte=b"#"):
  data = bytearray(path.read_bytes())
  data[offset:offset + 1] = byte
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, where", [
    (lambda d: (d / "rows.json").write_bytes(
        (d / "rows.json").read_bytes()[:50]), "rows.json: 50 bytes, "),
    (lambda d: os.remove(d / "model" / "params.bin"),
     "params.bin: missing (listed in"),
])
def test_truncated_or_missing_files_are_found_before_anything_runs(
    tmp_path, damage, where):
  calls = []
  stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  damage(tmp_path / "make")
  calls.clear()
  with pytest.raises(faults.CorruptArtefactError) as e:
    stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert calls == []  # nothing ran
  message = str(e.value)
  assert where in message and e.value.stage == "make", message
  assert "only=['make'], on_change='rerun'" in message
  assert "\n" not in message
  # The redo: only the damaged stage runs; `use` keeps its artefacts.
  stages.run_stages(stages.with_inputs(_study(calls), ["make"]), tmp_path,
                    on_change="rerun", log=lambda _: None)
  assert calls == ["make"]
  stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert calls == ["make"]
  assert stages.read_json(tmp_path / "use" / "n.json") == [20, 5]


def test_bad_line_in_the_middle_of_records_names_file_line_and_stage(
    tmp_path):
  calls = []
  stages.run_stages(_study(calls)[:1], tmp_path, log=lambda _: None)
  path = tmp_path / "make" / "records.jsonl"
  lines = path.read_bytes().split(b"\n")
  _flip(path, len(lines[0]) + len(lines[1]) + 2)  # first byte of line 3
  with pytest.raises(faults.CorruptArtefactError) as e:
    stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert e.value.path == str(path) and e.value.line == 3
  assert e.value.stage == "make"
  assert f"{path}:3: not JSON" in str(e.value)
  assert stages.read_done(tmp_path / "use") is None
  # The damage is remembered: the next plain run refuses before running.
  calls.clear()
  with pytest.raises(faults.CorruptArtefactError, match="earlier run"):
    stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert calls == []
  stages.run_stages(_study(calls), tmp_path, on_change="rerun",
                    log=lambda _: None)
  assert calls == ["make", "use"]
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_damaged_scratch_of_the_running_stage_is_redone_fresh(tmp_path):
  def sweep(ctx):
    work = ctx.work / "records.jsonl"
    if not work.exists():
      records.RecordWriter(work).write([_record("a"), _record("b")])
    got = records.read_records(work)
    stages.atomic_write_json(ctx.out / "n.json", len(got))

  stage = stages.Stage("sweep", sweep)
  (tmp_path / ".sweep.work").mkdir(parents=True)
  stamp = stages.stage_hashes([stage])["sweep"]
  (tmp_path / ".sweep.work" / "CONFIG_HASH").write_text(stamp)
  (tmp_path / ".sweep.work" / "records.jsonl").write_text(
      json.dumps(_record("a")) + "\n{oops\n" + json.dumps(_record("b")) +
      "\n")
  with pytest.raises(faults.CorruptArtefactError, match=r"jsonl:2: ") as e:
    stages.run_stages([stage], tmp_path, log=lambda _: None)
  assert e.value.stage == "sweep"
  stages.run_stages([stage], tmp_path, on_change="rerun", log=lambda _: None)
  assert stages.read_json(tmp_path / "sweep" / "n.json") == 2


def test_damaged_chunk_is_recomputed(tmp_path):
  calls = []

  def fn(ctx):
    return {"r": ctx.map_chunks("c", [1, 2, 3], 1, lambda xs: calls.append(
        xs) or [x + 1 for x in xs])}

  stage = stages.Stage("s", fn)
  with pytest.raises(RuntimeError):  # killed after all chunks stored
    stages.run_stages([stages.Stage("s", lambda ctx: fn(ctx) and (
        _ for _ in ()).throw(RuntimeError("killed")))], tmp_path,
                      log=lambda _: None)
  chunk = tmp_path / ".s.work" / "chunks" / "c" / "000001.json"
  chunk.write_bytes(chunk.read_bytes()[:5])
  calls.clear()
  lines = []
  stages.run_stages([stage], tmp_path, log=lines.append)
  assert calls == [[2]]
  assert any("000001.json:1: truncated JSON" in l for l in lines), lines


def test_read_jsonl_names_file_and_line(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_bytes(b'{"a": 1}\n[1]\n')
  with pytest.raises(faults.CorruptArtefactError, match=r"r.jsonl:2: not a"):
    embedded_study.read_jsonl(path)
  path.write_bytes(b'{"a": 1}\n{"a": \xff}\n')
  with pytest.raises(faults.CorruptArtefactError, match=r"r.jsonl:2: "):
    embedded_study.read_jsonl(path)
  with pytest.raises(faults.CorruptArtefactError, match="missing"):
    embedded_study.read_jsonl(tmp_path / "none.jsonl")


def test_guard_offers_the_exact_redo_command(capsys):
  argv = ["/repo/ttcjax/main/study.py", "--preset=micro", "--workdir=/w",
          "--only", "analysis", "--on_change=error"]
  with pytest.raises(SystemExit) as e:
    with faults.guard("ttcjax.main.study", argv):
      raise faults.CorruptArtefactError("/w/mc_labels/labels.json", 7,
                                        "not JSON", "mc_labels")
  assert e.value.code == faults.EXIT_CORRUPT
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [
      "ttcjax.main.study: /w/mc_labels/labels.json:7: not JSON; stage "
      "'mc_labels' made it. Redo that stage: python -m ttcjax.main.study "
      "--preset=micro --workdir=/w --only=mc_labels --on_change=rerun"]
