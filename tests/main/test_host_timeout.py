"""A failing host does not hang the others (issue 14, part 3): two local
processes of `ttcjax.main.search`, process 1 SIGKILLed mid-sweep; process 0
exits non-zero within the collective timeout naming process 1, and the
workdir resumes cleanly (a one-process rerun finishes it, each record once).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from ttcjax import faults, testing
from ttcjax.search import records

sys.path.insert(0, os.path.dirname(__file__))
from test_search_multihost import REPO, _RECORDS, gin_file  # pylint: disable=unused-import,g-import-not-at-top,wrong-import-position

TIMEOUT_S = 20


def _lines(path) -> int:
  try:
    with open(path, "rb") as f:
      return f.read().count(b"\n")
  except FileNotFoundError:
    return 0


@pytest.mark.slow
def test_survivor_exits_naming_the_dead_process(tmp_path, gin_file):  # pylint: disable=redefined-outer-name
  workdir = tmp_path / "run"
  port = testing.free_port()
  env = dict(testing.cpu_process_env(1),
             TTCJAX_COLLECTIVE_TIMEOUT_S=str(TIMEOUT_S))
  procs, logs = [], []
  for i in range(2):
    logs.append(open(tmp_path / f"p{i}.log", "wb"))  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "ttcjax.main.search", f"--gin_file={gin_file}",
         f"--workdir={workdir if i == 0 else tmp_path / 'other'}",
         f"--coordinator_address=localhost:{port}", "--num_processes=2",
         f"--process_id={i}"], cwd=REPO, env=env, stdout=logs[-1],
        stderr=subprocess.STDOUT))
  path = workdir / records.RECORDS_FILE
  try:
    deadline = time.monotonic() + 600
    while _lines(path) == 0:  # the first round's records are written
      assert procs[0].poll() is None and procs[1].poll() is None, (
          (tmp_path / "p0.log").read_text()[-3000:])
      assert time.monotonic() < deadline, "no records in 600 s"
      time.sleep(0.05)
    written = _lines(path)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    rc = procs[0].wait(timeout=TIMEOUT_S + 240)
    seconds = time.monotonic() - killed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
    for f in logs:
      f.close()
  log = (tmp_path / "p0.log").read_text(errors="replace")
  assert rc == faults.EXIT_HOST_TIMEOUT, f"exit {rc}:\n{log[-3000:]}"
  line = [l for l in log.splitlines() if "did not arrive within" in l]
  assert line and "process(es) 1 did not arrive" in line[-1], log[-3000:]
  print(f"survivor exited {rc} {seconds:.1f} s after the kill "
        f"(timeout {TIMEOUT_S} s): {line[-1]}")
  # The workdir resumes: records written before are kept, each once.
  kept = _lines(path)
  assert kept >= written and path.read_bytes().endswith(b"\n")
  rerun = subprocess.run(
      [sys.executable, "-m", "ttcjax.main.search", f"--gin_file={gin_file}",
       f"--workdir={workdir}"], cwd=REPO, env=testing.cpu_process_env(1),
      capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  recs = records.read_records(path)
  keys = [records.record_key(r) for r in recs]
  assert len(keys) == len(set(keys)) == _RECORDS
  # The survivor released its workdir lock on the way out.
  assert "took over the workdir lock" not in rerun.stderr
  print(f"rerun: {kept} records kept, {_RECORDS - kept} written")
