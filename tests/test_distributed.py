"""Multi-host helpers: pure splitting and env parsing, and a real two-process
run on CPU (local coordinator) whose merged records equal one process's."""

import json
import os
import sys
import textwrap

import pytest

from ttcjax import distributed, testing

# One worker of the two-process test. Each process computes records for its
# share of the problems ('trivial': a string function; 'model': greedy decode
# of a tiny random model, one call per problem, all prompts the same length
# so one compiled shape), gathers them, and process 0 writes the file.
_WORKER = textwrap.dedent("""
    import json, sys
    from ttcjax import distributed, testing
    out, port, mode = sys.argv[1], sys.argv[2], sys.argv[5]
    num, pid = int(sys.argv[3]), int(sys.argv[4])
    if num > 1:
      assert distributed.maybe_initialize(f"localhost:{port}", num, pid)
    else:
      assert not distributed.maybe_initialize()
    import jax
    problems = [f"p{i:02d}: {i % 7}+{i % 5}*3=" for i in range(11)]
    mine = distributed.split_for_process(problems)
    if mode == "trivial":
      records = [{"problem": text, "tokens": [ord(c) % 7 for c in text],
                  "process": jax.process_index()} for text in mine]
    else:
      from ttcjax import decoding, generate, models, testing, tokenizer
      tok = tokenizer.ByteTokenizer()
      config = models.ModelConfig(vocab_size=tok.vocab_size, d_model=32,
                                  n_layers=2, n_heads=4, n_kv_heads=2,
                                  d_ff=64, max_len=64)
      params = testing.numpy_params(config, seed=3)
      records = []
      for text in mine:
        gen = generate.generate(config, params, [tok.encode(text)],
                                sampler=decoding.Greedy(), max_new_tokens=6,
                                eos_id=tok.eos_id, rng=jax.random.key(0))
        records.append({"problem": text, "tokens": gen.tokens[0],
                        "process": jax.process_index()})
    merged = distributed.gather_items(records)
    assert (merged is None) == (not distributed.is_primary())
    if distributed.is_primary():
      with open(out, "w") as f:
        f.writelines(json.dumps(r) + "\\n" for r in merged)
    distributed.sync("written")
""")


def _run(tmp_path, num: int, mode: str, devices=(1, 2)
         ) -> tuple[list[dict], float]:
  worker = tmp_path / "worker.py"
  worker.write_text(_WORKER)
  out = tmp_path / f"records_{num}.jsonl"
  port = str(testing.free_port())
  _, seconds = testing.run_processes(
      [[sys.executable, str(worker), str(out), port, str(num), str(i), mode]
       for i in range(num)],
      [testing.cpu_process_env(devices[i % len(devices)])
       for i in range(num)], timeout=240)
  with open(out) as f:
    return [json.loads(line) for line in f], seconds


@pytest.mark.parametrize("mode", [
    "trivial",  # records from a string function: the plumbing alone
    pytest.param("model", marks=pytest.mark.slow),  # greedy tiny-model decode
])
def test_two_processes_merge_to_the_single_process_records(tmp_path, mode):
  single, one_s = _run(tmp_path, 1, mode)
  double, two_s = _run(tmp_path, 2, mode)
  print(f"\n{mode}: wall time 1 process {one_s:.1f} s, 2 processes "
        f"{two_s:.1f} s")
  assert [r["process"] for r in double] == [0] * 6 + [1] * 5
  strip = lambda rs: [{k: v for k, v in r.items() if k != "process"}
                      for r in rs]
  assert strip(double) == strip(single)
  assert len(single) == 11


def test_shard_bounds_cover_items_contiguously_and_evenly():
  for n in range(0, 12):
    for count in range(1, 6):
      bounds = [distributed.shard_bounds(n, i, count) for i in range(count)]
      assert bounds[0][0] == 0 and bounds[-1][1] == n
      assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
      sizes = [stop - start for start, stop in bounds]
      assert max(sizes) - min(sizes) <= 1
      assert sizes == sorted(sizes, reverse=True)


def test_split_for_process_is_deterministic_and_partitions():
  items = [f"p{i}" for i in range(11)]
  parts = [distributed.split_for_process(items, i, 3) for i in range(3)]
  assert parts == [items[:4], items[4:8], items[8:]]
  assert distributed.split_for_process(items) == items  # one process here
  with pytest.raises(ValueError, match="shard 3 of 3"):
    distributed.split_for_process(items, 3, 3)


def test_single_process_is_a_no_op_and_gathers_locally(monkeypatch):
  for name in (distributed.ENV_NUM_PROCESSES, "CLUSTER_SPEC"):
    monkeypatch.delenv(name, raising=False)
  assert not distributed.maybe_initialize()
  assert not distributed.maybe_initialize(num_processes=1)
  assert distributed.is_primary()
  assert distributed.allgather({"a": (1, 2)}) == [{"a": [1, 2]}]
  assert distributed.gather_items([{"x": 1}, {"x": 2}]) == [{"x": 1},
                                                             {"x": 2}]
  distributed.sync("noop")


def test_allgather_refuses_what_json_cannot_carry():
  with pytest.raises(TypeError, match="allgather sends JSON"):
    distributed.allgather({"x": object()})


def test_resolve_from_arguments_and_environment():
  env = {distributed.ENV_COORDINATOR: "h0:1234",
         distributed.ENV_NUM_PROCESSES: "4", distributed.ENV_PROCESS_ID: "2"}
  spec = distributed.resolve(env=env)
  assert (spec.coordinator_address, spec.num_processes,
          spec.process_id) == ("h0:1234", 4, 2)
  assert distributed.resolve(env={}) is None
  spec = distributed.resolve("a:1", 2, 1, env=env)  # arguments win
  assert spec.num_processes == 2 and spec.source.startswith("maybe_init")
  with pytest.raises(ValueError, match="TTCJAX_PROCESS_ID"):
    distributed.resolve(env={distributed.ENV_NUM_PROCESSES: "2",
                             distributed.ENV_PROCESS_ID: "x"})
  with pytest.raises(ValueError, match=r"process_id=5 is not in"):
    distributed.resolve("a:1", 2, 5, env={})
  with pytest.raises(ValueError, match="needs both a coordinator"):
    distributed.resolve(None, 2, 0, env={})


def test_vertex_cluster_spec():
  spec = {"cluster": {"workerpool0": ["chief-0:2222"],
                      "workerpool1": ["w-0:2222", "w-1:2222"]},
          "task": {"type": "workerpool1", "index": 1}}
  got = distributed.vertex_spec({"CLUSTER_SPEC": json.dumps(spec)})
  assert (got.coordinator_address, got.num_processes,
          got.process_id) == ("chief-0:2222", 3, 2)
  assert distributed.vertex_spec({}) is None
  with pytest.raises(ValueError, match="CLUSTER_SPEC is not a Vertex"):
    distributed.vertex_spec({"CLUSTER_SPEC": "{}"})
