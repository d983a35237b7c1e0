"""Search records (keys, durable appends, resume) and the search stage end to
end: tiny random checkpoints -> `sweep_runner.run` -> records.jsonl."""

import dataclasses
import glob
import json
import os

import gin
import jax
import numpy as np
import pytest

from ttcjax import checkpoint, models, search, testing
from ttcjax.main import search as entry
from ttcjax.experiments import sweep_runner
from ttcjax.search import records
from ttcjax.search.base import Candidate, SearchResult
from ttcjax.analysis import flops


def _result(uid="p0", strategy="best_of_n", budget=2, answers=("3", "4")):
  cands = tuple(Candidate(token_ids=(1, 2), step_ends=(2,), step_scores=(s,),
                          score=s, answer=a, finished=True)
                for a, s in zip(answers, (0.2, 0.9)))
  return SearchResult(uid=uid, strategy=strategy, budget=budget,
                      candidates=cands, chosen=1, answer=cands[1].answer,
                      policy_tokens_generated=4, prompt_tokens_prefilled=5,
                      verifier_tokens_read=14, generations_used=budget)


def _record(uid="p0", **kw):
  config = search.make_config("best_of_n")
  return records.make_record(_result(uid, **kw),
                             hparams=records.hparams_of(config, 2),
                             grade_fn=lambda a: a == "4")


def test_hparams_keep_what_the_strategy_uses_resolved_for_the_budget():
  beam = search.make_config("beam", beam_width="sqrt")
  assert records.hparams_of(beam, 16) == {
      "selection": "weighted", "aggregation": "last", "beam_width": 4,
      "max_rounds": 40, "stop_at_answer": True}
  four = search.make_config("beam", beam_width=4)
  assert records.key_of("u", "beam", records.hparams_of(four, 16), 16) == (
      records.key_of("u", "beam", records.hparams_of(beam, 16), 16))
  look = search.make_config("lookahead", lookahead=2)
  assert records.hparams_of(look, 8, "majority")["lookahead"] == 2
  assert records.hparams_of(look, 8, "majority")["selection"] == "majority"
  rev = search.make_config("revisions", revision_length=4)
  assert records.hparams_of(rev, 16) == {
      "selection": "weighted", "revision_length": 4, "chains": 4,
      "ratio": "4:4", "revision_context": 4}


def test_record_fields_and_flops():
  cfg = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4,
                           d_ff=64, max_len=64)
  prm = cfg.replace(reward_head=True)
  rec = records.make_record(
      _result(), hparams={"selection": "weighted"}, chosen=0,
      grade_fn=lambda a: a == "4", policy_config=cfg, verifier_config=prm,
      policy_context=48, flops_fn=flops.search_flops,
      extra={"reference": "4"})
  assert (rec["answer"], rec["correct"], rec["chosen"]) == ("3", False, 0)
  assert (rec["generations"], rec["policy_tokens"], rec["prompt_tokens"],
          rec["verifier_tokens"]) == (2, 4, 5, 14)
  assert [c["correct"] for c in rec["candidates"]] == [False, True]
  want = flops.search_flops(cfg, prompt_tokens=5, generated_tokens=4,
                            verifier=prm, verifier_tokens=14,
                            policy_context=48)
  assert (rec["flops_policy"], rec["flops_verifier"], rec["flops"]) == (
      want.policy, want.verifier, want.total)
  assert rec["reference"] == "4"
  assert "flops" not in _record()
  json.dumps(rec)
  with pytest.raises(ValueError, match="flops_fn"):
    records.make_record(_result(), hparams={}, grade_fn=bool,
                        policy_config=cfg)


def test_an_unfinished_candidate_carries_its_cut_reason():
  result = _result()
  cut = dataclasses.replace(result.candidates[0], finished=False,
                            cut="cache_end")
  rec = records.make_record(
      dataclasses.replace(result, candidates=(cut, result.candidates[1])),
      hparams={}, grade_fn=lambda a: a == "4")
  assert rec["candidates"][0]["cut"] == "cache_end"
  assert "cut" not in rec["candidates"][1]  # finished: no key


def test_writer_appends_and_keys_read_back(tmp_path):
  path = tmp_path / "sub" / "records.jsonl"
  assert records.existing_keys(path) == set()
  writer = records.RecordWriter(path)
  assert writer.write([_record("p0"), _record("p1")]) == 2
  assert writer.write([]) == 0
  records.RecordWriter(path).write([_record("p2", budget=4)])
  keys = records.existing_keys(path)
  assert keys == {records.record_key(_record(u)) for u in ("p0", "p1")} | {
      records.record_key(_record("p2", budget=4))}
  assert records.missing(["p0", "p3"], "best_of_n",
                         [{"aggregation": "last", "selection": "weighted"}],
                         2, keys) == [1]


def test_a_truncated_last_line_is_dropped_then_cut_off(tmp_path):
  path = str(tmp_path / "records.jsonl")
  records.RecordWriter(path).write([_record("p0"), _record("p1")])
  with open(path, "rb+") as f:  # a kill in the middle of the second line
    f.truncate(os.path.getsize(path) - 20)
  assert [r["uid"] for r in records.read_records(path)] == ["p0"]
  records.RecordWriter(path).write([_record("p1")])
  assert [r["uid"] for r in records.read_records(path)] == ["p0", "p1"]
  with open(path, "a") as f:
    f.write("not json\n")
  records.RecordWriter(path).write([_record("p2")])
  with pytest.raises(ValueError, match=r"records.jsonl:3"):
    records.read_records(path)


# --- Gin ---------------------------------------------------------------------

BINDINGS = [f"search.Checkpoints.{name}='/ckpt/{name}'"
            for name in ("policy", "prm", "revision", "orm")]


GIN_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "gin_configs",
                       "search")
GIN_FILES = sorted(glob.glob(os.path.join(GIN_DIR, "*.gin")))


def test_there_is_a_gin_file_per_strategy():
  assert sorted(os.path.basename(f)[:-4] for f in GIN_FILES) == sorted(
      search.strategy_names())


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_every_search_gin_file_parses(path):
  gin.clear_config()
  try:
    run = entry.parse([path], BINDINGS)
  finally:
    gin.clear_config()
  (spec,) = run.strategies
  assert spec.strategy == os.path.basename(path)[:-len(".gin")]
  assert spec.budgets == (4, 16, 64)
  assert spec.configs(8)


def test_incremental_verifier_is_a_gin_setting():
  gin.clear_config()
  try:
    run = entry.parse([os.path.join(GIN_DIR, "beam.gin")], BINDINGS + [
        "search.SearchRun.incremental_verifier = True"])
  finally:
    gin.clear_config()
  assert run.incremental_verifier


def test_required_checkpoints_must_be_bound():
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match="Checkpoints.policy"):
      entry.parse([os.path.join(GIN_DIR, "beam.gin")], [])
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match="Checkpoints.orm"):
    sweep_runner.SearchRun(
        problems=sweep_runner.ProblemSource(),
        checkpoints=sweep_runner.Checkpoints(revision="/r"),
        strategies=[sweep_runner.StrategySpec(strategy="revisions",
                                            budgets=[2])])
  with pytest.raises(ValueError, match="selection"):
    sweep_runner.StrategySpec(strategy="beam", budgets=[2],
                            grid={"selection": ["plain"]})


def test_problem_sources_and_task_callbacks(tmp_path):
  tok = sweep_runner.make_tokenizer(sweep_runner.Checkpoints())
  arith = sweep_runner.load_problems(sweep_runner.ProblemSource(num_problems=2,
                                                            seed=3))
  assert [p.uid for p in arith] == ["arith-3-0", "arith-3-1"]
  assert arith[0].prompt == arith[0].question + "\n"  # as in training
  assert arith[0].question.startswith("Compute: ")
  chat = sweep_runner.ProblemSource(num_problems=1, seed=3,
                                  prompt_template="<u>{problem}</u> \\boxed{}")
  assert sweep_runner.load_problems(chat)[0].prompt == (
      f"<u>{arith[0].question}</u> \\boxed{{}}")
  with pytest.raises(ValueError, match="prompt_template"):
    sweep_runner.ProblemSource(prompt_template="no slot")
  with pytest.raises(ValueError, match="step_delimiter"):
    sweep_runner.Checkpoints(step_delimiter="\n\n")  # byte tokenizer
  task = sweep_runner.task_fns(sweep_runner.ProblemSource(), tok)
  assert task.answer_fn(tok.encode_text.encode("1+2=3\n#### 03\n")) == "03"
  assert task.equiv_fn("03", "3") and not task.equiv_fn("4", "3")
  path = tmp_path / "math.jsonl"
  path.write_text("\n".join(json.dumps(row) for row in (
      {"problem": "1/2+1/2?", "answer": "1", "level": 2, "unique_id": "m0"},
      {"problem": "x?", "solution": "so \\boxed{\\frac{1}{2}}",
       "type": "Algebra"})) + "\n")
  source = sweep_runner.ProblemSource(task="math", path=str(path),
                                    num_problems=None)
  math_problems = sweep_runner.load_problems(source)
  assert [(p.uid, p.reference) for p in math_problems] == [
      ("m0", "1"), ("math.jsonl:2", "\\frac{1}{2}")]
  assert math_problems[1].extra["subject"] == "Algebra"
  task = sweep_runner.task_fns(source, tok)
  ids = tok.encode_text.encode("so \\boxed{0.5}")
  assert task.answer_fn(ids) == "0.5"
  assert task.equiv_fn("0.5", math_problems[1].reference)
  with pytest.raises(ValueError, match="ProblemSource.path"):
    sweep_runner.ProblemSource(task="math")


# --- End to end ------------------------------------------------------------

TINY = models.ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=256)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt")
  checkpoint.save(root / "policy", testing.numpy_params(TINY, 0), TINY)
  prm = TINY.replace(reward_head=True)
  checkpoint.save(root / "prm", testing.numpy_params(prm, 1), prm)
  return sweep_runner.Checkpoints(policy=str(root / "policy"),
                                prm=str(root / "prm"))


def _run_config(checkpoints):
  return sweep_runner.SearchRun(
      problems=sweep_runner.ProblemSource(task="arithmetic", num_problems=3,
                                        seed=0),
      checkpoints=checkpoints,
      strategies=[
          sweep_runner.StrategySpec(strategy="best_of_n", budgets=[2, 4],
                                  selections=["weighted", "majority"]),
          sweep_runner.StrategySpec(strategy="beam", budgets=[2, 4],
                                  grid={"beam_width": [2, 4]},
                                  base={"max_rounds": 3}),
      ],
      max_new_tokens=12, problems_per_batch=2)


def _canonical(recs):
  for r in recs:
    for c in r["candidates"]:
      c["score"] = round(c["score"], 4)
  return sorted(json.dumps(r, sort_keys=True) for r in recs)


def test_max_rows_shrinks_batches_not_records(checkpoints, tmp_path):
  config = _run_config(checkpoints)
  base_config = search.make_config("best_of_n")
  assert sweep_runner.batch_problems(2, base_config, 4, None) == 2
  assert sweep_runner.batch_problems(2, base_config, 4, 4) == 1
  assert sweep_runner.batch_problems(2, base_config, 4, 3) == 1  # at least 1
  revisions = search.make_config("revisions", revision_length=2)
  assert sweep_runner.batch_problems(8, revisions, 8, 8) == 2  # 4 chains each
  with pytest.raises(ValueError, match="SearchRun.max_rows"):
    dataclasses.replace(config, max_rows=0)
  small = dataclasses.replace(config, max_rows=2)  # N=4: one problem a batch
  sweep_runner.run(config, str(tmp_path / "a"))
  sweep_runner.run(small, str(tmp_path / "b"))
  read = lambda d: records.read_records(
      os.path.join(tmp_path, d, records.RECORDS_FILE))
  assert _canonical(read("a")) == _canonical(read("b"))


def test_search_run_writes_records_then_resumes(checkpoints, tmp_path):
  config, workdir = _run_config(checkpoints), str(tmp_path / "work")
  # 3 problems x (best-of-N: 2 budgets x 2 selections; beam: width 2 at
  # N=2, widths 2 and 4 at N=4).
  want = 3 * (2 * 2 + 3)
  assert sweep_runner.run(config, workdir) == {"written": want, "skipped": 0}
  path = os.path.join(workdir, records.RECORDS_FILE)
  first = records.read_records(path)
  assert len(first) == want == len({records.record_key(r) for r in first})
  for r in first:
    assert r["generations"] == r["budget"]
    assert r["policy_tokens"] > 0 and r["verifier_tokens"] > 0
    assert r["flops"] == r["flops_policy"] + r["flops_verifier"] > 0
    assert r["task"] == "arithmetic" and r["reference"]
    assert r["correct"] is False or r["answer"] is not None
  by_key = {(r["uid"], r["strategy"], r["budget"],
             json.dumps(r["hparams"], sort_keys=True)): r for r in first}
  for (uid, strategy, budget, hp), r in by_key.items():  # one search, two
    if strategy == "best_of_n" and '"majority"' in hp:  # selections
      twin = by_key[(uid, strategy, budget, hp.replace("majority",
                                                       "weighted"))]
      assert r["candidates"] == twin["candidates"]

  # Rerun: nothing new.
  assert sweep_runner.run(config, workdir) == {"written": 0, "skipped": want}
  assert len(records.read_records(path)) == want

  # Killed while writing the first batch of beam N=4 M=4 (problems 0, 1):
  # problem 1's line is cut, problem 2's never came. The rerun redoes both
  # in one batch, not as first run, and gets the same records.
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")[:-1]
  assert [json.loads(l)["uid"] for l in lines[-3:]] == [
      "arith-0-0", "arith-0-1", "arith-0-2"]
  with open(path, "wb") as f:
    f.write(b"\n".join(lines[:-2]) + b"\n" + lines[-2][:40])
  assert len(records.read_records(path)) == want - 2
  assert sweep_runner.run(config, workdir) == {"written": 2,
                                             "skipped": want - 2}
  assert _canonical(records.read_records(path)) == _canonical(first)


def test_oracle_run_validates_its_task_and_strategies(checkpoints):
  no_prm = sweep_runner.Checkpoints(policy=checkpoints.policy)
  beam = [sweep_runner.StrategySpec(strategy="beam", budgets=[2])]
  ok = sweep_runner.SearchRun(problems=sweep_runner.ProblemSource(),
                              checkpoints=no_prm, strategies=beam,
                              verifier="oracle")
  assert ok.verifier == "oracle"
  with pytest.raises(ValueError, match="Checkpoints.prm"):
    dataclasses.replace(ok, verifier="prm")
  with pytest.raises(ValueError, match="SearchRun.verifier must be one of"):
    dataclasses.replace(ok, verifier="gold")
  with pytest.raises(ValueError, match="exact step checker"):
    dataclasses.replace(ok, problems=sweep_runner.ProblemSource(
        task="math", path="/m.jsonl"))
  with pytest.raises(ValueError, match="no 'revisions'"):
    dataclasses.replace(ok, checkpoints=sweep_runner.Checkpoints(
        policy="/p", revision="/r", orm="/o"), strategies=beam + [
            sweep_runner.StrategySpec(strategy="revisions", budgets=[2])])


def test_oracle_run_records_tokens_without_verifier_flops(checkpoints,
                                                          tmp_path):
  """The same sweep with the oracle verifier: best-of-N draws the PRM run's
  samples, the oracle's tokens are counted and its FLOPs are 0."""
  prm_config = _run_config(checkpoints)
  config = dataclasses.replace(
      prm_config, verifier="oracle",
      checkpoints=sweep_runner.Checkpoints(policy=checkpoints.policy))
  sweep_runner.run(prm_config, str(tmp_path / "prm"))
  sweep_runner.run(config, str(tmp_path / "oracle"))
  read = lambda d: {records.record_key(r): r for r in records.read_records(
      os.path.join(tmp_path, d, records.RECORDS_FILE))}
  prm, exact = read("prm"), read("oracle")
  assert set(prm) == set(exact)
  for key, r in exact.items():
    assert r["verifier"] == "oracle" and "verifier" not in prm[key]
    assert r["verifier_tokens"] > 0 and r["flops_verifier"] == 0
    assert r["flops"] == r["flops_policy"] == prm[key]["flops_policy"]
    assert {c["score"] for c in r["candidates"]} <= {0.0, 1.0}
    if r["strategy"] == "best_of_n":
      assert ([c["answer"] for c in r["candidates"]] ==
              [c["answer"] for c in prm[key]["candidates"]])
    # A candidate the oracle passes reaches the right answer.
    assert all(c["correct"] for c in r["candidates"] if c["score"] == 1.0)


@pytest.fixture(scope="module")
def stepping_checkpoints(tmp_path_factory, checkpoints):
  """A random policy that ends steps (a newline, p ~ 0.1-0.5) and solutions
  (EOS) often, so tree searches run several rounds in 12 tokens: every
  embedding shares a large first component, which no layer writes to, and
  the newline's and EOS's are larger there, which raises their logits
  (tied embeddings)."""
  tok = sweep_runner.make_tokenizer(checkpoints)
  (newline,) = tok.stop_ids
  params = jax.tree.map(np.array, testing.numpy_params(TINY, 0))
  params["embedding"][:, 0] = 8.0
  params["embedding"][newline, 0] += 3.0
  params["embedding"][tok.eos_id, 0] += 2.5
  for i in range(TINY.n_layers):
    params[f"layer_{i}"]["attn"]["o_proj"]["kernel"][..., 0] = 0
    params[f"layer_{i}"]["mlp"]["down_proj"]["kernel"][:, 0] = 0
  root = tmp_path_factory.mktemp("stepping")
  checkpoint.save(root / "policy", params, TINY)
  return dataclasses.replace(checkpoints, policy=str(root / "policy"))


def test_incremental_verifier_sweep_reads_less_for_the_same_records(
    stepping_checkpoints, tmp_path):
  """`SearchRun.incremental_verifier`: the same records (keys, candidates,
  answers, correctness; scores to 1e-5), fewer verifier tokens for the tree
  searches, and verifier FLOPs charged from the tokens each record read."""
  tree = dict(budgets=[4], base={"max_rounds": 4})
  checkpoints = stepping_checkpoints
  off_config = dataclasses.replace(_run_config(checkpoints), strategies=[
      sweep_runner.StrategySpec(strategy="best_of_n", budgets=[4]),
      sweep_runner.StrategySpec(strategy="beam", grid={"beam_width": [2]},
                                **tree),
      sweep_runner.StrategySpec(strategy="lookahead",
                                grid={"lookahead": [1], "beam_width": [2]},
                                **tree)], problems_per_batch=3)
  on_config = dataclasses.replace(off_config, incremental_verifier=True)
  with pytest.raises(ValueError, match="incremental_verifier must be a bool"):
    dataclasses.replace(off_config, incremental_verifier=1)
  with pytest.raises(ValueError, match="needs verifier='prm'"):
    dataclasses.replace(on_config, verifier="oracle")
  sweep_runner.run(off_config, str(tmp_path / "off"))
  sweep_runner.run(on_config, str(tmp_path / "on"))
  read = lambda d: {records.record_key(r): r for r in records.read_records(
      os.path.join(tmp_path, d, records.RECORDS_FILE))}
  off, on = read("off"), read("on")
  assert set(off) == set(on) and len(off) == 3 * 3
  prm = TINY.replace(reward_head=True)
  tok = sweep_runner.make_tokenizer(checkpoints)
  width = sweep_runner.prompt_width(off_config, [
      tok.encode_text.encode(p.prompt)
      for p in sweep_runner.load_problems(off_config.problems)])
  full_len = sweep_runner.prm_verifier_len(off_config, width)
  cache_len = sweep_runner.verifier_cache_len(on_config, width)
  assert cache_len == width + 4 * 12 > full_len
  spent = {}
  for key, a in off.items():
    b = on[key]
    for field in ("answer", "correct", "chosen", "generations",
                  "policy_tokens", "prompt_tokens", "flops_policy"):
      assert a[field] == b[field], (key, field)
    assert [{**c, "score": None} for c in a["candidates"]] == [
        {**c, "score": None} for c in b["candidates"]]
    np.testing.assert_allclose([c["score"] for c in a["candidates"]],
                               [c["score"] for c in b["candidates"]],
                               atol=1e-5)
    strategy = key[1]
    if strategy == "best_of_n":  # reads each candidate once either way
      assert a["verifier_tokens"] == b["verifier_tokens"]
    else:
      assert b["verifier_tokens"] < a["verifier_tokens"]
    # Verifier FLOPs from the tokens read: a full read attends at most
    # `full_len` keys, a cached one every slot of the cache.
    for r, context in ((a, full_len), (b, full_len if strategy ==
                                       "best_of_n" else cache_len)):
      want = flops.search_flops(TINY, prompt_tokens=r["prompt_tokens"],
                                generated_tokens=r["policy_tokens"],
                                verifier=prm,
                                verifier_tokens=r["verifier_tokens"],
                                policy_context=0, verifier_context=context)
      assert r["flops_verifier"] == want.verifier
    for name, r in (("off", a), ("on", b)):
      tokens, flop = spent.get((strategy, name), (0, 0.0))
      spent[strategy, name] = (tokens + r["verifier_tokens"],
                               flop + r["flops_verifier"])
  print("verifier tokens, FLOPs (off / on):", {
      s: (spent[s, "off"], spent[s, "on"])
      for s in ("best_of_n", "beam", "lookahead")})
