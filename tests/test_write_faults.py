"""Full disks and failed writes (issue 14, part 4): an OSError at each writer
leaves the last good state, is reported naming the path in one line, and
the next run resumes.

Writers: a stage artefact, a stage's DONE commit, stages.jsonl, a chunk of
`map_chunks`, records.jsonl, a train checkpoint, the trainer's final
checkpoint and metrics.jsonl. The error is injected with ENOSPC at the
writer's own system call (`os.fsync` / `open` / the orbax save), for the
file named.
"""

import errno
import json
import os

import numpy as np
import pytest

from ttcjax import faults, testing, training
from ttcjax.experiments import stages
from ttcjax.search import records
from ttcjax.training import checkpoints as ckpt_lib

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk_for(monkeypatch):
  """`full_disk_for(predicate)`: `os.fsync` of a file whose path satisfies
  `predicate` raises ENOSPC (what a full disk gives on a delayed write)."""
  real_fsync = os.fsync

  def arm(predicate):
    def fsync(fd):
      try:
        path = os.readlink(f"/proc/self/fd/{fd}")
      except OSError:
        path = ""
      if predicate(path):
        raise ENOSPC
      return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return lambda: monkeypatch.setattr(os, "fsync", real_fsync)

  return arm


def _study(calls):
  def first(ctx):
    calls.append("first")
    stages.atomic_write_json(ctx.out / "a.json", {"a": 1})

  def second(ctx):
    calls.append("second")
    stages.atomic_write_json(ctx.out / "b.json", {"b": 2})
    return {"n": len(ctx.map_chunks("c", [1, 2, 3, 4], 2,
                                    lambda xs: [x * 10 for x in xs]))}

  return [stages.Stage("first", first),
          stages.Stage("second", second, inputs=("first",))]


def _check_resumes(tmp_path, calls, expect_calls):
  """The rerun finishes, running only what the failure left undone."""
  calls.clear()
  stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert calls == expect_calls
  assert stages.read_json(tmp_path / "second" / "b.json") == {"b": 2}
  assert [r["stage"] for r in stages.read_log(tmp_path)][-1] == "second"
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
  assert not (tmp_path / "LOCK").exists()


@pytest.mark.parametrize("fsynced", [
    "/.second.tmp/.b.json.tmp",  # a stage artefact (its temp sibling)
    "/.second.tmp/.DONE.tmp",  # the stage's commit marker
    "/chunks/c/.000001.json.tmp",  # a chunk (chunk 0 is kept)
])
def test_failed_stage_write_keeps_last_good_state(tmp_path, full_disk_for,
                                                  fsynced):
  calls = []
  stages.run_stages(_study(calls)[:1], tmp_path, log=lambda _: None)
  done_before = (tmp_path / "first" / stages.DONE).read_bytes()
  disarm = full_disk_for(lambda p: p.endswith(fsynced))
  with pytest.raises(faults.WriteError) as e:
    stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  disarm()
  message = str(e.value)
  assert "\n" not in message and "No space left on device" in message
  assert "cannot write " in message and str(tmp_path) in message
  assert e.value.errno == errno.ENOSPC
  # Last good state: `first` as it was, no `second`, no temp files left.
  assert (tmp_path / "first" / stages.DONE).read_bytes() == done_before
  assert stages.read_done(tmp_path / "second") is None
  assert not (tmp_path / ".second.tmp").exists()
  assert not list(tmp_path.rglob("*.tmp")), list(tmp_path.rglob("*.tmp"))
  _check_resumes(tmp_path, calls, ["second"])


def test_failed_stage_log_write_keeps_the_committed_stage(tmp_path,
                                                          full_disk_for):
  calls = []
  disarm = full_disk_for(lambda p: p.endswith(stages.LOG_FILE))
  with pytest.raises(faults.WriteError, match="stages.jsonl"):
    stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  disarm()
  assert stages.read_done(tmp_path / "first") is not None
  calls.clear()
  stages.run_stages(_study(calls), tmp_path, log=lambda _: None)
  assert calls == ["second"]


def _record(uid):
  return {"uid": uid, "strategy": "best_of_n", "hparams": {"n": 1},
          "budget": 2, "answer": "1", "correct": True}


def test_failed_records_write_cuts_the_batch_back(tmp_path, monkeypatch):
  path = tmp_path / records.RECORDS_FILE
  writer = records.RecordWriter(path)
  writer.write([_record("a"), _record("b")])
  before = path.read_bytes()
  real_open = open

  class HalfWritten:
    """A file whose write lands half the data, then the disk is full."""

    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

    def write(self, data):
      self.f.write(data[:len(data) // 2])
      self.f.flush()
      raise ENOSPC

    def __getattr__(self, name):
      return getattr(self.f, name)

  def fake_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return HalfWritten(f) if "a" in mode else f

  monkeypatch.setattr("builtins.open", fake_open)
  with pytest.raises(faults.WriteError) as e:
    writer.write([_record("c"), _record("d")])
  monkeypatch.undo()
  assert str(e.value).startswith(f"cannot write {path}: No space left")
  assert path.read_bytes() == before  # the half batch is gone
  assert [r["uid"] for r in records.read_records(path)] == ["a", "b"]
  records.RecordWriter(path).write([_record("c"), _record("d")])
  assert [r["uid"] for r in records.read_records(path)] == list("abcd")


# --- The trainer -------------------------------------------------------------


_TRAIN = training.TrainConfig(
    learning_rate=1e-2, warmup_steps=1, total_steps=6, eval_every=100,
    checkpoint_every=2, keep_checkpoints=2, log_every=1,
    write_tensorboard=False)


def _model():
  from ttcjax import models  # pylint: disable=g-import-not-at-top
  return models.ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2,
                            n_kv_heads=1, d_ff=64, max_len=16)


def _source():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 32, (8, 16)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  return training.ArraySource(
      dict(tokens=tokens, token_mask=mask,
           loss_weights=mask.astype(np.float32)), batch_size=4, seed=1)


@pytest.mark.parametrize("writer", ["checkpoint", "final", "metrics"])
def test_failed_train_write_resumes_from_last_checkpoint(tmp_path,
                                                         monkeypatch, writer):
  model = _model()
  init = testing.numpy_params(model, 1, stddev=None)
  params_a, _ = training.train(model, _TRAIN, _source(), None,
                               tmp_path / "a", init_params=init)
  if writer == "checkpoint":  # the save of step 4 fails
    real_save = ckpt_lib.TrainCheckpoints.save

    def save(self, step, state, progress):
      if step == 4:
        raise ENOSPC
      return real_save(self, step, state, progress)
    monkeypatch.setattr(ckpt_lib.TrainCheckpoints, "save", save)
    expect = "/checkpoints: No space"
  elif writer == "final":
    def save(*args, **kwargs):
      raise ENOSPC
    monkeypatch.setattr("ttcjax.checkpoint.save", save)
    expect = "/final"
  else:
    def append(self, record):
      if record["step"] == 5:
        raise ENOSPC
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
    monkeypatch.setattr(training.metrics.MetricsFile, "append", append)
    expect = "metrics.jsonl"
  with pytest.raises(faults.WriteError) as e:
    training.train(model, _TRAIN, _source(), None, tmp_path / "b",
                   init_params=init)
  monkeypatch.undo()
  assert expect in str(e.value) and "No space left" in str(e.value)
  latest = ckpt_lib.TrainCheckpoints(tmp_path / "b" / "checkpoints", 2)
  kept = latest.latest_step()
  latest.close()
  assert kept == {"checkpoint": 2, "final": 6, "metrics": 4}[writer]
  params_b, _ = training.train(model, _TRAIN, _source(), None,
                               tmp_path / "b")
  for x, y in zip(jax_leaves(params_a), jax_leaves(params_b)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def test_guard_reports_one_line_and_exit_status(capsys):
  with pytest.raises(SystemExit) as e:
    with faults.guard("prog"):
      with faults.writing("/w/records.jsonl"):
        raise ENOSPC
  assert e.value.code == faults.EXIT_WRITE_FAILED
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      "prog: cannot write /w/records.jsonl: No space left on device;")


def test_tensorstore_errors_with_an_os_code_are_write_errors():
  # What orbax raises when tensorstore cannot write (a ValueError).
  text = ('OUT_OF_RANGE: Error writing "x" in OCDBT database at local file '
          '"/w/ckpt/": Failed to write 85821 bytes to file 14: File too '
          "large [os_error_code='27']")
  with pytest.raises(faults.WriteError) as e:
    with faults.writing("/w/ckpt/1"):
      raise ValueError(text)
  assert e.value.errno == errno.EFBIG
  assert str(e.value) == "cannot write /w/ckpt/1: File too large"
  with pytest.raises(ValueError, match="unrelated"):
    with faults.writing("/w/ckpt/1"):
      raise ValueError("unrelated")
