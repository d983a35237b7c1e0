"""A study killed with SIGKILL in the middle of stages resumes, on rerun, to
the results.json of an uninterrupted run (issue 5).

`test_killed_study_resumes_to_identical_results` runs the study entry point
(`python -m ttcjax.main.study`) as a subprocess and SIGKILLs it when the
filesystem shows it inside a stage: a training stage between two resume
checkpoints, a chunked sampling stage after its first chunk, and the search
sweep after some records. Each rerun picks up where the kill left it (the
test checks it did: the trainer restored its checkpoint, stored chunks were
not recomputed, the sweep skipped the records it had); the last one runs to
the end. The finished workdir is compared with an
uninterrupted run's, made once per preset by a module-scoped fixture.

Compared byte for byte: results.json, report.md and every file of every
stage directory except (`_excluded`) orbax model checkpoints
(`<stage>/model/`: their file names are random and their metadata holds
timestamps) and `DONE` markers (they list those names). Files the entry
point writes at the workdir root (stages.jsonl with wall times, the run's
config) are not study artefacts and are not compared. Each run is a fresh
process, so ordering that depends on the hash seed would show as a
difference too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Callable

import pytest

from ttcjax.experiments import console, embedded, embedded_study, stages

REPO = pathlib.Path(__file__).resolve().parents[2]
POLL_S = 0.01
# Per process of the study (micro: ~1.5 min, smoke: ~10 min on 2 cores).
TIMEOUT_S = {"micro": 900, "smoke": 3600}
# A chunked stage (stage, map_chunks label) with >= 2 chunks of a few
# seconds each, and the records the sweep must have written when killed.
CHUNKED = {"micro": ("mc_labels", "labels"), "smoke": ("large_eval", "greedy")}
SWEEP_RECORDS = {"micro": 12, "smoke": 150}


@dataclasses.dataclass(frozen=True)
class KillPoint:
  """Where to kill the study.

  Attributes:
    stage: the stage the kill lands in (it must be unfinished then).
    ready: `ready(workdir) -> bool`, polled; True: kill now.
    what: description for messages.
  """
  stage: str
  ready: Callable[[pathlib.Path], bool]
  what: str


def _mid_training(stage: str, total_steps: int) -> KillPoint:
  def ready(workdir):
    folder = workdir / f".{stage}.work" / "train" / "checkpoints"
    try:  # orbax names a step's directory by its number once it is complete
      steps = [int(n) for n in os.listdir(folder) if n.isdigit()]
    except FileNotFoundError:
      return False
    return any(0 < s < total_steps for s in steps)

  return KillPoint(stage, ready, f"{stage}: a resume checkpoint before step "
                   f"{total_steps}")


def _after_first_chunk(stage: str, label: str) -> KillPoint:
  path = pathlib.Path(f".{stage}.work", "chunks", label, "000000.json")
  return KillPoint(stage, lambda workdir: (workdir / path).exists(),
                   f"{stage}: chunk 0 of {label!r} stored")


def _records(workdir: pathlib.Path) -> int:
  """Complete lines of the sweep's growing records.jsonl."""
  try:
    data = (workdir / ".search_sweep.work" / "search" / "records.jsonl"
            ).read_bytes()
  except FileNotFoundError:
    return 0
  return data.count(b"\n")


def _mid_sweep(records: int) -> KillPoint:
  return KillPoint("search_sweep", lambda w: _records(w) >= records,
                   f"search_sweep: >= {records} records written")


def kill_points(preset: str) -> list[KillPoint]:
  """The kills of one interrupted run, in study order."""
  config = embedded.PRESETS[preset]()
  return [_mid_training("pretrain_policy",
                        config.pretrain.train.total_steps),
          _after_first_chunk(*CHUNKED[preset]),
          _mid_sweep(SWEEP_RECORDS[preset])]


def _env() -> dict[str, str]:
  """The test process's environment, less the test-only device count."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def _start(preset: str, workdir: pathlib.Path,
           log: pathlib.Path) -> subprocess.Popen:
  with open(log, "wb") as out:
    return subprocess.Popen(
        [sys.executable, "-m", "ttcjax.main.study", f"--preset={preset}",
         f"--workdir={workdir}"], cwd=REPO, env=_env(), stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True)


def _tail(log: pathlib.Path, lines: int = 40) -> str:
  return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _finish(proc: subprocess.Popen, preset: str, workdir: pathlib.Path,
            log: pathlib.Path) -> None:
  """Waits for a study process; fails unless it ends well in time."""
  try:
    rc = proc.wait(timeout=TIMEOUT_S[preset])
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"{preset} study in {workdir} ran over {TIMEOUT_S[preset]} "
                f"s:\n{_tail(log)}")
  assert rc == 0, f"{preset} study in {workdir} failed ({rc}):\n{_tail(log)}"


def _run_until(preset: str, workdir: pathlib.Path, log: pathlib.Path,
               point: KillPoint) -> None:
  """Starts the study and SIGKILLs it once `point.ready(workdir)`."""
  proc = _start(preset, workdir, log)
  deadline = time.monotonic() + TIMEOUT_S[preset]
  try:
    while not point.ready(workdir):
      if proc.poll() is not None:
        pytest.fail(f"the study ended ({proc.returncode}) before the kill "
                    f"point ({point.what}):\n{_tail(log)}")
      if time.monotonic() > deadline:
        pytest.fail(f"no kill point ({point.what}) within "
                    f"{TIMEOUT_S[preset]} s:\n{_tail(log)}")
      time.sleep(POLL_S)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, (
      f"the study exited ({proc.returncode}) by itself at {point.what}")
  assert stages.read_done(workdir / point.stage) is None, (
      f"{point.stage} had finished when killed at {point.what}: the kill "
      f"did not land mid-stage")


def _excluded(rel: pathlib.PurePath) -> bool:
  """Stage files that legitimately differ between runs (module docstring)."""
  return rel.name == stages.DONE or "model" in rel.parts[1:-1]


def _artefacts(workdir: pathlib.Path, names) -> dict[str, bytes]:
  """Relative path -> bytes of report.md, results.json and the files of the
  stages `names`, but `_excluded`."""
  out = {n: (workdir / n).read_bytes() for n in ("report.md", "results.json")}
  for name in names:
    for path in sorted((workdir / name).rglob("*")):
      rel = path.relative_to(workdir)
      if path.is_file() and not _excluded(rel):
        out[str(rel)] = path.read_bytes()
  return out


class _Uninterrupted:
  """A whole run of a preset, started at once, in the background."""

  def __init__(self, preset: str, root: pathlib.Path):
    self.preset, self.workdir, self.log = preset, root / "study", root / "log"
    self.proc = _start(preset, self.workdir, self.log)
    self.finished = False

  def result(self) -> pathlib.Path:
    """Waits for the run; returns its workdir."""
    if not self.finished:
      _finish(self.proc, self.preset, self.workdir, self.log)
      self.finished = True
    return self.workdir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """`uninterrupted(preset)`: a whole run of `preset`, started on the first
  request and shared by every test of the module. It runs while the test
  kills and reruns its own study (micro on a loaded 2-core machine: 2:45,
  against 4:40 one after the other)."""
  runs = {}

  def get(preset: str) -> _Uninterrupted:
    if preset not in runs:
      runs[preset] = _Uninterrupted(
          preset, tmp_path_factory.mktemp(f"uninterrupted_{preset}"))
    return runs[preset]

  yield get
  for run in runs.values():  # a failed test may not have waited for it
    if run.proc.poll() is None:
      os.killpg(run.proc.pid, signal.SIGKILL)
      run.proc.wait()


@pytest.mark.parametrize("preset", [
    "micro",  # ~3 min on 2 busy cores
    pytest.param("smoke", marks=pytest.mark.slow),
])
def test_killed_study_resumes_to_identical_results(preset, tmp_path,
                                                   uninterrupted):
  reference = uninterrupted(preset)
  workdir = tmp_path / "study"
  points = kill_points(preset)
  logs = [tmp_path / f"attempt{i}.log" for i in range(len(points) + 1)]
  library_log = workdir / console.LOG_FILE  # absl/orbax lines, appended
  ends = []
  for point, log in zip(points, logs):
    _run_until(preset, workdir, log, point)
    ends.append(library_log.stat().st_size if library_log.exists() else 0)
  swept = _records(workdir)
  _finish(_start(preset, workdir, logs[-1]), preset, workdir, logs[-1])

  # Each rerun resumed the killed stage instead of starting it over.
  train = f"resuming from {workdir}/.pretrain_policy.work/train/checkpoints/"
  second = library_log.read_bytes()[ends[0]:ends[1]].decode(errors="replace")
  assert train in second, second[-4000:]
  chunks = "{}/{}: chunk ".format(*CHUNKED[preset])
  assert chunks in logs[2].read_text(), _tail(logs[2])
  assert chunks + "1/" not in logs[2].read_text(), _tail(logs[2])
  sweep = [r for r in stages.read_log(workdir)
           if r["stage"] == "search_sweep"]
  assert len(sweep) == 1 and sweep[0]["info"]["skipped"] == swept, sweep

  # Nothing of the kills is left behind.
  assert not [n for n in os.listdir(workdir) if n.startswith(".")]
  names = [s.name for s in embedded_study.full_study_stages(embedded.PRESETS[preset]())]
  assert [r["stage"] for r in stages.read_log(workdir)] == names

  reference = reference.result()
  results = (workdir / "results.json").read_bytes()
  assert results == (reference / "results.json").read_bytes()
  got, want = _artefacts(workdir, names), _artefacts(reference, names)
  assert sorted(got) == sorted(want)
  differ = [name for name in want if got[name] != want[name]]
  assert not differ, f"artefacts differ from the uninterrupted run: {differ}"


# --- The runner's side of a kill (fast) --------------------------------------


def test_log_line_cut_by_a_kill_does_not_swallow_the_next(tmp_path):
  stage = stages.Stage("s", lambda ctx: {"n": 1})
  stages.run_stages([stage], tmp_path / "a", log=lambda _: None)
  log = tmp_path / "a" / stages.LOG_FILE
  log.write_bytes(log.read_bytes() + b'{"stage": "t", "sec')  # killed here
  stages.run_stages([stages.Stage("t", lambda ctx: None)], tmp_path / "a",
                    log=lambda _: None)
  assert [r["stage"] for r in stages.read_log(tmp_path / "a")] == ["s", "t"]


def test_scratch_left_by_a_kill_after_commit_is_removed(tmp_path):
  stage = stages.Stage("s", lambda ctx: None)
  stages.run_stages([stage], tmp_path, log=lambda _: None)
  for suffix in ("work", "tmp", "old"):  # a kill between rename and clean-up
    (tmp_path / f".s.{suffix}").mkdir()
  lines = []
  stages.run_stages([stage], tmp_path, log=lines.append)
  assert "skipped" in lines[0]
  assert sorted(os.listdir(tmp_path)) == ["s", stages.LOG_FILE]
  assert json.loads((tmp_path / "s" / stages.DONE).read_text())["stage"] == "s"
