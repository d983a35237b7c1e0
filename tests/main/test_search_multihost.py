"""The search entry point on two processes (`jax.distributed` on CPU, a local
coordinator, one device each) writes the records one process writes, and
resumes from process 0's file alone."""

import json
import os
import sys

import pytest

from ttcjax import checkpoint, distributed, models, testing
from ttcjax.search import records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TINY = models.ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=256)

# 5 problems in batches of 2: 3 batches per search, so process 1 sits out
# the second round. Best-of-N with two selections (one search, two
# records), and beam search; each compiles in seconds.
_RUN_GIN = """
search.Checkpoints.policy = '{policy}'
search.Checkpoints.prm = '{prm}'
search.ProblemSource.task = 'arithmetic'
search.ProblemSource.num_problems = 5
search.ProblemSource.seed = 0
search.SearchRun.problems = @search.ProblemSource()
search.SearchRun.checkpoints = @search.Checkpoints()
search.SearchRun.strategies = [@bon/search.StrategySpec(),
                               @beam/search.StrategySpec()]
search.SearchRun.max_new_tokens = 12
search.SearchRun.problems_per_batch = 2
bon/search.StrategySpec.strategy = 'best_of_n'
bon/search.StrategySpec.budgets = [2]
bon/search.StrategySpec.selections = ['weighted', 'majority']
beam/search.StrategySpec.strategy = 'beam'
beam/search.StrategySpec.budgets = [4]
beam/search.StrategySpec.grid = {{'beam_width': [2]}}
beam/search.StrategySpec.base = {{'max_rounds': 3}}
"""
_RECORDS = 5 * (2 + 1)


@pytest.fixture(scope="module")
def gin_file(tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  checkpoint.save(root / "policy", testing.numpy_params(TINY, 0), TINY)
  prm = TINY.replace(reward_head=True)
  checkpoint.save(root / "prm", testing.numpy_params(prm, 1), prm)
  path = root / "run.gin"
  path.write_text(_RUN_GIN.format(policy=root / "policy", prm=root / "prm"))
  return str(path)


def _search(gin_file: str, workdirs: list[str]) -> tuple[list[str], float]:
  """Runs `ttcjax.main.search`, process i writing to (or not) workdirs[i];
  returns every process's log and the wall time."""
  num = len(workdirs)
  layout = ([f"--coordinator_address=localhost:{testing.free_port()}",
             f"--num_processes={num}"] if num > 1 else [])
  logs, seconds = testing.run_processes(
      [[sys.executable, "-m", "ttcjax.main.search", f"--gin_file={gin_file}",
        f"--workdir={workdir}", "--alsologtostderr", *layout,
        *([f"--process_id={i}"] if num > 1 else [])]
       for i, workdir in enumerate(workdirs)],
      [testing.cpu_process_env(1)] * num, timeout=300, cwd=REPO)
  return logs, seconds


def _lines(workdir) -> list[dict]:
  with open(os.path.join(workdir, records.RECORDS_FILE)) as f:
    return [json.loads(line) for line in f]


def _canonical(recs: list[dict]) -> list[dict]:
  """Scores to 4 decimals: a problem rerun in another batch may differ in
  the last bits (padding rows change the compiled shapes' reductions)."""
  for r in recs:
    for c in r["candidates"]:
      c["score"] = round(c["score"], 4)
  return recs


def test_two_processes_write_the_records_of_one_then_resume(gin_file,
                                                            tmp_path):
  one = str(tmp_path / "one")
  _, one_s = _search(gin_file, [one])
  single = _lines(one)
  assert len(single) == _RECORDS == len(
      {records.record_key(r) for r in single})

  two, elsewhere = str(tmp_path / "two"), str(tmp_path / "elsewhere")
  logs, two_s = _search(gin_file, [two, elsewhere])
  print(f"\nsearch wall time: 1 process {one_s:.1f} s, 2 processes "
        f"{two_s:.1f} s")
  # Same batches as one process, dealt round-robin and gathered in batch
  # order: the same records, in the same order.
  assert _lines(two) == single
  assert os.path.exists(os.path.join(two, "config.gin"))
  assert not os.path.exists(elsewhere)  # process 1 writes nothing
  assert "host 1/2: 2/2 problems of best_of_n N=2" in logs[1]
  assert "host 0/2: 3/3 problems of beam N=4" in logs[0]

  # Killed in the middle: 7 whole records and half a line. Process 1 sees
  # no file at all (its workdir is elsewhere): it learns what to skip from
  # process 0, and the rerun completes the file as one process would
  # (problem 3 reruns in a batch with problem 4, not 2).
  resumed = str(tmp_path / "resumed")
  os.makedirs(resumed)
  with open(os.path.join(one, records.RECORDS_FILE), "rb") as f:
    lines = f.read().split(b"\n")
  with open(os.path.join(resumed, records.RECORDS_FILE), "wb") as f:
    f.write(b"\n".join(lines[:7]) + b"\n" + lines[7][:30])
  _search(gin_file, [resumed, elsewhere])
  assert _canonical(_lines(resumed)) == _canonical(single)
  assert not os.path.exists(elsewhere)


class _Flag:

  def __init__(self, value):
    self.value = value


def test_process_flags_need_num_processes_and_default_to_one(monkeypatch):
  for name in (distributed.ENV_NUM_PROCESSES, "CLUSTER_SPEC"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.initialize_from_flags([_Flag(None)] * 3)
  assert not distributed.initialize_from_flags(
      [_Flag(None), _Flag(1), _Flag(None)])
  with pytest.raises(ValueError, match="--process_id need --num_processes"):
    distributed.initialize_from_flags([_Flag(None), _Flag(None), _Flag(1)])
  assert distributed.broadcast_from_primary({"k": [1]}) == {"k": [1]}
