"""One writer per workdir (issue 14, part 1): the lock file, its holder,
take-over of stale locks. The two-process CLI test is in
tests/experiments/test_reliability_cli.py."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ttcjax import faults, workdir_lock


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _write_lock(workdir, **holder):
  workdir.mkdir(parents=True, exist_ok=True)
  base = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": "2026-01-01T00:00:00Z", "token": "t0",
          "command": ["python", "-m", "ttcjax.main.study"]}
  path = workdir / workdir_lock.LOCK_FILE
  path.write_text(json.dumps(dict(base, **holder)))
  return path


def test_lock_names_holder_and_is_removed_on_release(tmp_path):
  with workdir_lock.hold(tmp_path / "w"):
    holder = json.loads((tmp_path / "w" / "LOCK").read_text())
    assert holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname()
    assert holder["started"].endswith("Z")
    assert workdir_lock.holds(tmp_path / "w")
    with workdir_lock.hold(tmp_path / "w"):  # reentrant in one process
      pass
    assert (tmp_path / "w" / "LOCK").exists()
  assert not (tmp_path / "w" / "LOCK").exists()
  assert not workdir_lock.holds(tmp_path / "w")


def test_live_holder_on_this_host_refuses_naming_it(tmp_path):
  # A live process of this host that is not us: our parent.
  _write_lock(tmp_path, pid=os.getppid(), start_ticks=None)
  with pytest.raises(workdir_lock.WorkdirLocked) as e:
    workdir_lock.acquire(tmp_path)
  message = str(e.value)
  assert f"pid {os.getppid()} on host {socket.gethostname()}" in message
  assert "2026-01-01T00:00:00Z" in message and "\n" not in message
  assert json.loads((tmp_path / "LOCK").read_text())["token"] == "t0"


def test_guard_exits_2_naming_the_holder(tmp_path, capsys):
  _write_lock(tmp_path, pid=os.getppid(), start_ticks=None)
  with pytest.raises(SystemExit) as e:
    with faults.guard("prog"):
      workdir_lock.acquire(tmp_path)
  assert e.value.code == faults.EXIT_LOCKED == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"prog: {tmp_path} is in use by "
                                             f"pid {os.getppid()}")


def test_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
  _write_lock(tmp_path, pid=_dead_pid())
  with workdir_lock.hold(tmp_path):
    holder = json.loads((tmp_path / "LOCK").read_text())
    assert holder["pid"] == os.getpid() and holder["token"] != "t0"
  assert "took over the workdir lock" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == []


def test_reused_pid_is_not_the_holder(tmp_path):
  # Our own pid, but a start time that is not ours: the pid was reused.
  ticks = workdir_lock._process_start_ticks(os.getpid())  # pylint: disable=protected-access
  if ticks is None:
    pytest.skip("no /proc start times here")
  _write_lock(tmp_path, pid=os.getppid(), start_ticks=ticks + 12345)
  with workdir_lock.hold(tmp_path):
    pass


def test_other_host_holds_until_its_heartbeat_stops(tmp_path):
  path = _write_lock(tmp_path, host="elsewhere", pid=1)
  with pytest.raises(workdir_lock.WorkdirLocked, match="on host elsewhere"):
    workdir_lock.acquire(tmp_path, heartbeat_s=1, stale_after_s=60)
  old = time.time() - 120
  os.utime(path, (old, old))
  with workdir_lock.hold(tmp_path, heartbeat_s=1, stale_after_s=60):
    assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_unreadable_lock_file_is_stale_only_after_the_heartbeat(tmp_path):
  path = tmp_path / "LOCK"
  path.write_bytes(b'{"host": "vm", "pi')  # cut short
  with pytest.raises(workdir_lock.WorkdirLocked):
    workdir_lock.acquire(tmp_path, heartbeat_s=1, stale_after_s=60)
  old = time.time() - 120
  os.utime(path, (old, old))
  assert workdir_lock.stale_reason({}, old, stale_after_s=60)
  with workdir_lock.hold(tmp_path, heartbeat_s=1, stale_after_s=60):
    pass


def test_heartbeat_touches_the_lock(tmp_path):
  with workdir_lock.hold(tmp_path, heartbeat_s=0.05, stale_after_s=1):
    path = tmp_path / "LOCK"
    old = time.time() - 100
    os.utime(path, (old, old))
    deadline = time.time() + 5
    while path.stat().st_mtime < time.time() - 50:
      assert time.time() < deadline, "no heartbeat"
      time.sleep(0.02)


def test_a_lock_taken_over_is_not_removed_by_its_old_holder(tmp_path):
  workdir_lock.acquire(tmp_path, heartbeat_s=0.05, stale_after_s=1)
  try:
    _write_lock(tmp_path, pid=os.getppid(), token="other")  # someone else's
  finally:
    workdir_lock.release(tmp_path)
  assert json.loads((tmp_path / "LOCK").read_text())["token"] == "other"


def test_two_processes_race_for_one_stale_lock(tmp_path):
  """Take-over is exclusive: of several contenders for one stale lock,
  exactly one gets it."""
  _write_lock(tmp_path, pid=_dead_pid())
  code = ("import sys, time; from ttcjax import workdir_lock as w\n"
          "try:\n"
          "  w.acquire(sys.argv[1]); print('got', flush=True); time.sleep(3)\n"
          "except w.WorkdirLocked: print('refused', flush=True)\n")
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
           for _ in range(4)]
  outs = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert sorted(outs) == ["got", "refused", "refused", "refused"], outs


def test_redo_command_replaces_only_and_on_change():
  from ttcjax import faults  # pylint: disable=g-import-not-at-top
  argv = ["/x/ttcjax/main/study.py", "--gin_file=experiments/micro.gin",
          "--gin_bindings=SEED = 'a b'", "--only=analysis",
          "--on_change", "error", "--workdir=/w"]
  assert faults.redo_command(argv, "train_prm") == (
      "python -m ttcjax.main.study --gin_file=experiments/micro.gin "
      "'--gin_bindings=SEED = '\"'\"'a b'\"'\"'' --workdir=/w "
      "--only=train_prm --on_change=rerun")


def test_collective_timeout_from_the_environment():
  from ttcjax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.collective_timeout_s({}) == 600
  assert distributed.collective_timeout_s(
      {distributed.ENV_COLLECTIVE_TIMEOUT: "20"}) == 20
  for bad in ("0", "soon", "-3"):
    with pytest.raises(ValueError, match="TTCJAX_COLLECTIVE_TIMEOUT_S"):
      distributed.collective_timeout_s(
          {distributed.ENV_COLLECTIVE_TIMEOUT: bad})


def test_host_timeout_message_names_the_missing_process():
  from ttcjax import faults  # pylint: disable=g-import-not-at-top
  e = faults.HostTimeoutError("allgather (collective #3, process 0)", [1],
                              20)
  assert str(e).startswith("allgather (collective #3, process 0): "
                           "process(es) 1 did not arrive within 20 s")
