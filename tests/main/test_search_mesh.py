"""The search stage on a device mesh, and with the PRM scoring row chunks,
writes the records of a plain one-device run (8 CPU devices, conftest)."""

import json
import os

import gin
import jax
import numpy as np
import pytest

from ttcjax import checkpoint, memory, models, partitioning, testing, verifiers
from ttcjax.experiments import sweep_runner
from ttcjax.partitioning import MeshConfig
from ttcjax.search import records, sweep

TINY = models.ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=256)
PRM = TINY.replace(reward_head=True)


# --- Chunked scoring ---------------------------------------------------------


def test_chunked_scores_equal_one_pass():
  shapes = []

  def score_fn(params, tokens, token_mask):
    shapes.append(tokens.shape)
    return jax.nn.sigmoid(models.reward_scores(PRM, params, tokens,
                                               token_mask))

  params = testing.numpy_params(PRM, seed=1)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, PRM.vocab_size, (10, 12)).astype(np.int32)
  mask = np.arange(12)[None] < rng.integers(1, 13, (10, 1))
  want = np.where(mask, jax.jit(score_fn)(params, tokens, mask), 0)
  # One row per call; 4 chunks of 3 (2 padding rows); more rows than n.
  for rows in (1, 3, 16):
    shapes.clear()
    got = jax.jit(verifiers.chunked_score_fn(score_fn, rows))(params, tokens,
                                                              mask)
    assert shapes == [(min(rows, 10), 12)]  # one shape, traced once
    np.testing.assert_allclose(np.where(mask, got, 0), want, atol=1e-6)


def test_chunked_score_fn_needs_positive_rows():
  with pytest.raises(ValueError, match="rows must be a positive int"):
    verifiers.chunked_score_fn(lambda p, t, m: t, 0)


# --- The search stage --------------------------------------------------------


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpts")
  checkpoint.save(root / "policy", testing.numpy_params(TINY, 0), TINY)
  checkpoint.save(root / "prm", testing.numpy_params(PRM, 1), PRM)
  return sweep_runner.Checkpoints(policy=str(root / "policy"),
                                prm=str(root / "prm"))


def _run_config(ckpts, **kw):
  # 4 problems in batches of 2: 8 rows per batch (2 x N=4), 8 devices.
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(num_problems=4),
      checkpoints=ckpts,
      strategies=(sweep_runner.StrategySpec(
          strategy="beam", budgets=(4,), grid={"beam_width": [2]},
          base={"max_rounds": 3}),),
      max_new_tokens=12, problems_per_batch=2, **kw)


def _search(run_config, workdir, monkeypatch):
  """The records, and per search call the candidates' token ids and what
  the policy params and the current mesh looked like."""
  calls = []

  def spy(config, batch, budget, policy, verifier, task, key):
    results = run_search(config, batch, budget, policy, verifier, task, key)
    calls.append(dict(
        tokens=[[c.token_ids for c in r.candidates] for r in results],
        sharded=partitioning.sharded_fraction(policy.params),
        prm_sharded=partitioning.sharded_fraction(verifier.params),
        mesh=dict(jax.sharding.get_abstract_mesh().shape),
        placed=(policy.shard is not None, verifier.shard is not None)))
    return results

  run_search = sweep.run_search
  monkeypatch.setattr(sweep, "run_search", spy)
  sweep_runner.run(run_config, str(workdir))
  with open(os.path.join(workdir, records.RECORDS_FILE)) as f:
    return [json.loads(line) for line in f], calls


def _scores(record):
  return [c["score"] for c in record["candidates"]]


def _without_scores(record):
  return dict(record, candidates=[{k: v for k, v in c.items() if k != "score"}
                                  for c in record["candidates"]])


@pytest.fixture(scope="module")
def plain(ckpts, tmp_path_factory):
  with pytest.MonkeyPatch.context() as monkeypatch:
    return _search(_run_config(ckpts), tmp_path_factory.mktemp("plain"),
                   monkeypatch)


@pytest.mark.parametrize("mesh,verifier_rows", [
    (MeshConfig(data=2, fsdp=4), 4),  # math500_tpu.gin's layout, in small
    (None, 3),
    pytest.param(MeshConfig(data=2, fsdp=2, model=2), None,
                 marks=pytest.mark.slow),  # memory.search_rules
], ids=["data2_fsdp4_chunks_of_4", "chunks_of_3", "d2_f2_m2"])
def test_sharded_and_chunked_runs_write_the_plain_records(
    ckpts, plain, tmp_path, monkeypatch, mesh, verifier_rows):
  want, want_calls = plain
  got, got_calls = _search(
      _run_config(ckpts, mesh=mesh, verifier_rows=verifier_rows), tmp_path,
      monkeypatch)
  assert len(got) == len(want) == 4
  assert [c["tokens"] for c in got_calls] == [c["tokens"]
                                              for c in want_calls]
  for a, b in zip(got, want):
    np.testing.assert_allclose(_scores(a), _scores(b), atol=1e-5)
    assert _without_scores(a) == _without_scores(b)
  if mesh is None:
    assert all(c["sharded"] == 0 and not c["mesh"] and c["placed"] == (
        False, False) for c in got_calls)
    return
  shape = dict(zip(partitioning.MESH_AXES, mesh.shape(8)))
  for call in got_calls:
    assert call["mesh"] == shape  # the searches ran under activate
    assert call["placed"] == (True, True)  # rows placed over the mesh
    assert call["sharded"] > 0.9 and call["prm_sharded"] > 0.9


def test_placement_rules_follow_the_memory_table():
  assert sweep_runner.Placement.of(None) == sweep_runner.Placement()
  assert sweep_runner.Placement.of(MeshConfig(fsdp=-1, data=1)).rules == (
      partitioning.logical_axis_rules())
  assert sweep_runner.Placement.of(MeshConfig(data=2, model=4)).rules == (
      memory.search_rules())


@pytest.mark.parametrize("field,value,match", [
    ("verifier_rows", 0, "verifier_rows must be a positive int"),
    ("mesh", {"fsdp": 4}, "mesh must be a MeshConfig"),
])
def test_search_run_validates_mesh_and_verifier_rows(ckpts, field, value,
                                                     match):
  with pytest.raises(ValueError, match=match):
    _run_config(ckpts, **{field: value})


def test_math500_binds_a_mesh_and_verifier_rows():
  gin.clear_config()  # importing the entry point registers configurables
  search_main = pytest.importorskip("ttcjax.main.search")
  try:
    run = search_main.parse(
        ["experiments/math500_tpu.gin"],
        ["POLICY_CKPT = '/p'", "PRM_CKPT = '/q'", "TOKENIZER_DIR = '/t'"])
  finally:
    gin.clear_config()  # unlocks it, for tests that register more
  assert run.mesh == MeshConfig(data=1, fsdp=-1)
  assert run.verifier_rows == 32
  assert run.mesh.shape(8) == (1, 8, 1)
