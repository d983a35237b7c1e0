"""Tree-search batches too big for the device fail before any work
(`preflight.check_memory`), through the study and `ttcjax.main.search`.

The checkpoints are config-only (Qwen2.5-Math-1.5B and -PRM-7B shapes, no
parameters): the check must read configs only, and restoring one would
fail.
"""

import dataclasses
import json
import re

import gin
import jax
import numpy as np
import pytest

from ttcjax import checkpoint, memory, partitioning
from ttcjax.experiments import preflight, studies, sweep_runner

H100 = memory.DEVICES["h100"]
POLICY = memory.QWEN25_MATH_1P5B
PROMPT, GEN = 64, 1024
CACHE = PROMPT + 4 * GEN  # tree_cache_tokens None: 4 x max_new_tokens


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp("configs")
  for name, config in (("policy", POLICY),
                       ("prm", memory.QWEN25_MATH_PRM_7B)):
    (root / name).mkdir()
    (root / name / "model_config.json").write_text(
        json.dumps(dataclasses.asdict(config)))
  return root


@pytest.fixture(autouse=True)
def _gin_cleared():
  yield
  gin.clear_config()  # the entry point's parse leaves its bindings


def _run(root, name="beam", grid=None, budgets=(64,), per_batch=16, **kw):
  specs = [sweep_runner.StrategySpec(
      strategy="best_of_n", budgets=(4,), selections=("weighted",)),
           sweep_runner.StrategySpec(
               strategy=name, budgets=budgets,
               grid={"beam_width": [4]} if grid is None else grid,
               base={"max_rounds": 40})]
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(task="arithmetic", num_problems=32),
      checkpoints=sweep_runner.Checkpoints(policy=str(root / "policy"),
                                           prm=str(root / "prm")),
      strategies=specs, max_new_tokens=GEN, prompt_len=PROMPT,
      problems_per_batch=per_batch, **kw)


def _cache_bytes(rows):
  """`init_cache(POLICY, rows, CACHE)` on one device, by hand."""
  kv = rows * POLICY.n_kv_heads * CACHE * POLICY.head_dim * 2  # bfloat16
  return 2 * POLICY.n_layers * kv + rows * CACHE + rows * 4 + 4


def _gib(n):
  return f"{n / memory.GiB:.2f} GiB"


def test_a_beam_batch_too_big_names_setting_bytes_and_the_fix(root):
  run = _run(root)  # 16 problems x 64 beams = 1024 rows on one H100
  with pytest.raises(ValueError) as info:
    preflight.check_memory(run, device=H100, num_devices=1)
  message = str(info.value)
  assert "\n" not in message
  for needle in ("beam beam_width=4 N=64", "16 problems a batch",
                 "SearchRun.problems_per_batch=16", "1024 rows",
                 f"{CACHE}-slot cache", "mesh data=1,fsdp=1,model=1",
                 "H100 80GB", f"cache {_gib(_cache_bytes(1024))}",
                 f"the device has {_gib(H100.hbm_bytes)}",
                 f"{_gib(0.85 * H100.hbm_bytes)} after the 15% headroom"):
    assert needle in message, (needle, message)
  fit = int(re.search(r"problems_per_batch to (\d+)", message).group(1))
  assert 1 <= fit < 16
  assert f"SearchRun.max_rows = {64 * fit}" in message
  # The fix works, and is the most that does: one problem more fails.
  checks = preflight.check_memory(_run(root, per_batch=fit), device=H100,
                                  num_devices=1)
  assert [c.rows for c in checks] == [64 * fit]
  assert checks[0].estimate.fits
  with pytest.raises(ValueError, match="does not fit"):
    preflight.check_memory(_run(root, per_batch=fit + 1), device=H100,
                           num_devices=1)
  # So does SearchRun.max_rows, which the sweep batches by.
  assert preflight.check_memory(_run(root, max_rows=64 * fit), device=H100,
                                num_devices=1)[0].problems == fit


def test_rows_split_over_the_mesh(root):
  run = _run(root, mesh=partitioning.MeshConfig(data=1, fsdp=-1))
  with pytest.raises(ValueError, match="problems_per_batch to"):
    preflight.check_memory(run, device=H100, num_devices=1)
  (check,) = preflight.check_memory(run, device=H100, num_devices=8)
  assert check.rows == 1024 and check.estimate.fits
  assert check.estimate.cache == _cache_bytes(1024 // 8)


def test_not_even_one_problem_says_so(root):
  v5e = memory.DEVICES["v5e"]  # 16 GiB: the PRM's 15 GB alone do not fit
  with pytest.raises(ValueError, match=r"not even one problem \(64 rows\)"):
    preflight.check_memory(_run(root), device=v5e, num_devices=1)


@pytest.mark.parametrize("name,grid", [
    ("dvts", {"beam_width": [4]}),
    ("rebase", {}),
    ("lookahead", {"lookahead": [3], "beam_width": [4]}),
])
def test_every_tree_strategy_is_checked(root, name, grid):
  with pytest.raises(ValueError, match=f"^{name}.* N=64 does not fit"):
    preflight.check_memory(_run(root, name, grid), device=H100,
                           num_devices=1)


def test_lookahead_counts_the_candidates_state_its_rollout_keeps(root):
  """Roll-outs write into the same (rolled back) cache of the same rows;
  what lookahead holds besides is the candidates' decode state."""
  grid = {"lookahead": [3], "beam_width": [4]}
  beam_run = _run(root, per_batch=2, verifier_rows=32)
  look_run = _run(root, "lookahead", grid, per_batch=2, verifier_rows=32)
  (beam,) = preflight.check_memory(beam_run, device=H100, num_devices=1)
  (look,) = preflight.check_memory(look_run, device=H100, num_devices=1)
  rows = 128
  state = rows * GEN * (4 + 4) + rows * (3 * 4 + 2 * 1) + rows * 8
  assert beam.rows == look.rows == rows
  assert beam.estimate.cache == look.estimate.cache == _cache_bytes(rows)
  assert beam.estimate.state == state and look.estimate.state == 2 * state
  # On a chip between the two, beam search fits and lookahead does not.
  usable = (beam.estimate.total + look.estimate.total) // 2
  chip = memory.Device("chip", int(usable / 0.85), np.nan)
  preflight.check_memory(beam_run, device=chip, num_devices=1)
  with pytest.raises(ValueError, match=r"lookahead beam_width=4 lookahead=3 "
                     r"N=64 does not fit.* decode state 2\.0 MiB"):
    preflight.check_memory(look_run, device=chip, num_devices=1)


def test_an_incremental_verifier_counts_its_cache_and_can_be_refused(root):
  """`SearchRun.incremental_verifier`: the PRM's cache of
  `verifier_cache_len` slots (the policy's tree cache; the reward-head
  layout adds nothing) for every row is counted, exactly; a chip that
  holds the run without it refuses it with it, in one line."""
  off_run = _run(root, per_batch=1, verifier_rows=32)
  on_run = dataclasses.replace(off_run, incremental_verifier=True)
  assert sweep_runner.verifier_cache_len(on_run, PROMPT) == CACHE
  (off,) = preflight.check_memory(off_run, device=H100, num_devices=1)
  chip = memory.Device("chip", int(2 * off.estimate.total / 0.85), np.nan)
  (off,) = preflight.check_memory(off_run, device=chip, num_devices=1)
  (on,) = preflight.check_memory(
      dataclasses.replace(on_run, max_new_tokens=GEN // 8), device=chip,
      num_devices=1)  # a shorter cache fits (and runs the same code)
  prm, rows = memory.QWEN25_MATH_PRM_7B, 64
  prm_cache = lambda n: (2 * prm.n_layers * n * prm.n_kv_heads * CACHE *
                         prm.head_dim * 2 + n * CACHE + n * 4 + 4)
  shapes = preflight._tree_shapes(  # pylint: disable=protected-access
      on_run, 1, rows, PROMPT, POLICY, prm, False)
  est = memory.estimate(shapes, memory.AbstractMesh.of(), chip)
  assert shapes.verifier_cache_len == CACHE and shapes.verifier_rows == 32
  # Every row's cache, and the copy of a group of 32 rows a call gathers.
  assert est.cache == off.estimate.cache + prm_cache(rows) + prm_cache(32)
  prm_cache = prm_cache(rows)
  assert est.total >= off.estimate.total + prm_cache
  assert off.estimate.fits and not est.fits
  with pytest.raises(ValueError) as info:
    preflight.check_memory(on_run, device=chip, num_devices=1)
  message = str(info.value)
  assert "\n" not in message
  for needle in ("beam beam_width=4 N=64 does not fit", "64 rows",
                 f"{CACHE}-slot cache", f"and the PRM's {CACHE}-slot cache "
                 "(SearchRun.incremental_verifier)",
                 f"cache {_gib(est.cache)}",
                 "or turn SearchRun.incremental_verifier off"):
    assert needle in message, (needle, message)


def test_no_tree_search_or_no_memory_limit_checks_nothing(root):
  run = _run(root)
  bon = dataclasses.replace(run, strategies=run.strategies[:1])
  assert preflight.check_memory(bon, device=H100, num_devices=1) is None
  if jax.default_backend() == "cpu":  # no memory limit reported
    assert memory.local_device() is None
    assert preflight.check_memory(run) is None


def _refuse_restore(monkeypatch):
  def restore(*args, **kwargs):
    raise AssertionError("a checkpoint was restored before the check")
  monkeypatch.setattr(checkpoint, "restore", restore)
  monkeypatch.setattr(memory, "local_device", lambda: H100)


def test_study_fails_before_any_work(root, tmp_path, monkeypatch):
  _refuse_restore(monkeypatch)
  work = tmp_path / "study"
  with pytest.raises(ValueError, match="beam beam_width=4 N=64 does not fit"):
    studies.run(studies.SearchStudy(search=_run(root)), work)
  assert not work.exists()


def test_search_entry_point_fails_before_any_work(root, tmp_path,
                                                  monkeypatch):
  search_main = pytest.importorskip("ttcjax.main.search")
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  _refuse_restore(monkeypatch)
  work = tmp_path / "search"
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(
      gin_file=["search/beam.gin"], workdir=str(work), gin_bindings=[
          f"search.Checkpoints.policy = '{root / 'policy'}'",
          f"search.Checkpoints.prm = '{root / 'prm'}'",
          f"search.SearchRun.max_new_tokens = {GEN}",
          "search.SearchRun.problems_per_batch = 16",
          "beam/search.StrategySpec.budgets = [64]"]):
    with pytest.raises(ValueError, match="beam.* N=64 does not fit") as info:
      search_main.main(["search"])
  from ttcjax.main import cli  # pylint: disable=g-import-not-at-top
  assert cli.is_user_error(info.value)  # one line, exit status 2
  assert not work.exists()
