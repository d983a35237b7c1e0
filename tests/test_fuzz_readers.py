"""Fuzz of every reader of external text (issue 14): random truncations,
byte flips and byte insertions of real files give the reader's documented
error, naming the file, or a complete well-formed result; never a hang, an
exception of another type, or a partial result.

  reader                       documented error          file
  tasks.math.load_jsonl        ValueError (path:line)    MATH-500 test.jsonl
                                                         (../shared), else a
                                                         MATH-style sample
  search.records.read_records  faults.CorruptArtefactError (path:line)
                                                         records of a sweep
  main.gin_utils.parse         gin_utils.GinConfigError  gin_configs/ files
  hf_import.load_tokenizer     hf_import.HFImportError   a BPE tokenizer.json
  hf_import config.json        hf_import.HFImportError   a Qwen2 config.json
  (`load_hf`'s reading)

"Partial result": a reader that returns on a truncated file returns exactly
the records of the whole lines it kept (a prefix of the original's), since
a cut-short last line is an error (MATH) or dropped as a killed write
(records, documented). Each case runs under a 10 s alarm.

`FUZZ_CASES` (environment) sets the cases per reader and mutation kind
(default 40; the seed is fixed).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
import signal

import pytest

from ttcjax import faults
from ttcjax.main import configure
from ttcjax.search import records
from ttcjax.tasks import math as math_task

REPO = pathlib.Path(__file__).resolve().parents[1]
MATH500 = REPO.parent / "shared" / "data" / "math500" / "test.jsonl"
CASES = int(os.environ.get("FUZZ_CASES", "40"))
KINDS = ("truncate", "flip", "insert")


class Hang(Exception):
  pass


@contextlib.contextmanager
def _alarm(seconds: int):
  def on_alarm(signum, frame):
    raise Hang(f"no answer within {seconds} s")

  previous = signal.signal(signal.SIGALRM, on_alarm)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _mutations(data: bytes, seed: int):
  """(kind, mutated bytes, cut offset or None), CASES per kind."""
  rng = random.Random(seed)
  for kind in KINDS:
    for _ in range(CASES):
      if kind == "truncate":
        cut = rng.randrange(len(data))
        yield kind, data[:cut], cut
      elif kind == "flip":
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8))):
          out[rng.randrange(len(out))] = rng.randrange(256)
        yield kind, bytes(out), None
      else:
        at = rng.randrange(len(data) + 1)
        junk = bytes(rng.choice((b'"', b"{", b"}", b"\n", b"\\", b"\xff",
                                 b"\x00", b"[", b",", b"9e999")))
        yield kind, data[:at] + junk + data[at:], None


def _fuzz(tmp_path, name: str, data: bytes, read, errors, check_ok,
          seed: int = 0, names_file: bool = True) -> dict[str, int]:
  """Runs `read(path)` on every mutation; returns counts per outcome.
  `names_file`: errors must name the file (gin's errors about macros name
  the macro instead)."""
  path = tmp_path / name
  outcome = {"error": 0, "ok": 0}
  failures = []
  for i, (kind, mutated, cut) in enumerate(_mutations(data, seed)):
    path.write_bytes(mutated)
    try:
      with _alarm(10):
        result = read(path)
    except errors as e:
      outcome["error"] += 1
      if names_file and str(path) not in str(e) and path.name not in str(e):
        failures.append(f"case {i} ({kind}): {type(e).__name__} does not "
                        f"name the file: {str(e)[:200]}")
      continue
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"case {i} ({kind}, cut={cut}): {type(e).__name__}: "
                      f"{str(e)[:300]}")
      continue
    outcome["ok"] += 1
    why = check_ok(result, kind, cut, mutated)
    if why:
      failures.append(f"case {i} ({kind}, cut={cut}): {why}")
  assert not failures, f"{len(failures)} bad outcomes:\n" + "\n".join(
      failures[:15])
  assert outcome["error"] > 0
  return outcome


# --- MATH jsonl ---------------------------------------------------------------


def _math_data() -> bytes:
  if MATH500.exists():
    lines = MATH500.read_bytes().split(b"\n")
    return b"\n".join(lines[:40]) + b"\n"
  rows = [{"problem": f"What is ${i}+{i}$?", "solution":
           f"We add: $\\boxed{{{2 * i}}}$.", "answer": str(2 * i),
           "subject": "Algebra", "level": 1 + i % 5,
           "unique_id": f"test/algebra/{i}.json"} for i in range(40)]
  return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_math_jsonl(tmp_path):
  data = _math_data()
  original = math_task.load_jsonl(_write(tmp_path / "orig.jsonl", data))

  def check(result, kind, cut, mutated):
    for p in result:
      if not (isinstance(p.problem, str) and p.problem.strip() and
              isinstance(p.answer, str) and isinstance(p.level, int)):
        return f"malformed problem {p!r:.200}"
    if kind == "truncate" and result != original[:len(result)]:
      return "not a prefix of the original's problems"
    lines = mutated.count(b"\n")
    if kind == "truncate" and len(result) < lines:
      return f"{len(result)} problems from {lines} lines"
    return None

  counts = _fuzz(tmp_path, "test.jsonl", data, math_task.load_jsonl,
                 ValueError, check)
  print("MATH jsonl", counts)


def _write(path, data):
  path.write_bytes(data)
  return path


# --- records.jsonl ------------------------------------------------------------


def _records_data() -> bytes:
  out = []
  for i in range(30):
    out.append({"uid": f"arith-0-{i}", "strategy": "beam",
                "hparams": {"selection": "weighted", "beam_width": 4},
                "budget": 16, "answer": str(i), "correct": i % 2 == 0,
                "candidates": [{"answer": str(i), "score": 0.5,
                                "finished": True, "correct": True,
                                "tokens": 12}],
                "flops": 1.5e9})
  return "".join(json.dumps(r, sort_keys=True) + "\n" for r in out).encode()


def test_records_jsonl(tmp_path):
  data = _records_data()
  original = records.read_records(_write(tmp_path / "orig.jsonl", data))

  def check(result, kind, cut, mutated):
    for r in result:
      try:
        records.record_key(r)
      except Exception as e:  # pylint: disable=broad-except
        return f"a record without a key: {e}"
    if kind == "truncate" and result != original[:len(result)]:
      return "not a prefix of the original's records"
    lines = mutated.count(b"\n")
    if kind == "truncate" and len(result) < lines:
      return f"{len(result)} records from {lines} lines"
    return None

  counts = _fuzz(tmp_path, "records.jsonl", data, records.read_records,
                 faults.CorruptArtefactError, check)
  print("records.jsonl", counts)


# --- gin ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["experiments/micro.gin",
                                  "search/beam.gin", "runs/train_prm.gin"])
def test_gin_files(tmp_path, name):
  gin_utils = pytest.importorskip("ttcjax.main.gin_utils")
  from ttcjax.experiments import studies  # pylint: disable=g-import-not-at-top
  from ttcjax.training import roles  # pylint: disable=g-import-not-at-top
  configure.register()
  gin_utils.register(gin_utils.core_configurables() | roles.GIN_CONFIGURABLES)
  data = (REPO / "gin_configs" / name).read_bytes()
  includes = ["models/tiny.gin"] if name.startswith("runs/") else []

  def read(path):
    gin_utils.parse(includes + [str(path)], [])
    return True

  counts = _fuzz(tmp_path, pathlib.Path(name).name, data, read,
                 gin_utils.GinConfigError, lambda *a: None,
                 seed=sum(name.encode()), names_file=False)
  print(name, counts)


def test_gin_bindings():
  gin_utils = pytest.importorskip("ttcjax.main.gin_utils")
  from ttcjax.experiments import studies  # pylint: disable=g-import-not-at-top
  configure.register()
  gin_utils.register(gin_utils.core_configurables())
  bindings = ["study.ArithStudy.preset = 'micro'",
              "study.experiment.spec = @study.ArithStudy()",
              "study.ArithStudy.sweep = {'budgets': (2, 4)}"]
  failures = []
  for b, binding in enumerate(bindings):
    for i, (kind, mutated, _) in enumerate(_mutations(binding.encode(), b)):
      text = mutated.decode("utf-8", errors="replace")
      try:
        with _alarm(10):
          gin_utils.parse(["experiments/micro.gin"], [text])
      except gin_utils.GinConfigError as e:
        if "--gin_bindings=" not in str(e) and "gin" not in str(e):
          failures.append(f"{text!r}: does not name the binding: {e}")
      except Exception as e:  # pylint: disable=broad-except
        failures.append(f"{text!r} ({kind} {i}): {type(e).__name__}: "
                        f"{str(e)[:200]}")
  assert not failures, "\n".join(failures[:15])


# --- Hugging Face files -------------------------------------------------------


def _tokenizer_json(directory: pathlib.Path) -> bytes:
  tokenizers = pytest.importorskip("tokenizers")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"])
  text = _math_data().decode().splitlines()
  tok.train_from_iterator(text, trainer)
  directory.mkdir(parents=True, exist_ok=True)
  tok.save(str(directory / "tokenizer.json"))
  return (directory / "tokenizer.json").read_bytes()


def test_tokenizer_json(tmp_path):
  hf_import = pytest.importorskip("ttcjax.models.hf_import")
  data = _tokenizer_json(tmp_path / "orig")

  def read(path):
    return hf_import.load_tokenizer(path.parent)

  def check(tok, kind, cut, mutated):
    try:
      tok.encode("What is 1+1?").ids
    except Exception as e:  # pylint: disable=broad-except
      return f"loaded, but does not encode: {e}"
    return None

  (tmp_path / "tok").mkdir()
  counts = _fuzz(tmp_path / "tok", "tokenizer.json", data, read,
                 hf_import.HFImportError, check)
  print("tokenizer.json", counts)


QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
    "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 4096,
    "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 12, "num_hidden_layers": 28,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "sliding_window": 4096, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.37.0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}


def test_hf_config_json(tmp_path):
  hf_import = pytest.importorskip("ttcjax.models.hf_import")
  data = json.dumps(QWEN2_CONFIG, indent=2).encode()

  def check(config, kind, cut, mutated):
    if config.d_model <= 0 or config.n_layers <= 0:
      return f"nonsense config {config}"
    return None

  def read(path):  # what `load_hf` does with config.json
    return hf_import.config_from_hf(hf_import._read_json(str(path)),  # pylint: disable=protected-access
                                    str(path))

  counts = _fuzz(tmp_path, "config.json", data, read,
                 hf_import.HFImportError, check)
  print("config.json", counts)
