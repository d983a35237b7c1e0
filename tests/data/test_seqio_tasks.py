"""Tests for the TensorFlow side of ttcjax.data: vocabularies, seqio tasks, TFDS.

All in one module so TensorFlow is imported once. Tasks read small fixture
files written into tmp_path; the MATH task also reads the shared MATH-500 file
when it is there.
"""

import json
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")
tfds = pytest.importorskip("tensorflow_datasets")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import data, tasks
from ttcjax.data import examples, seqio_tasks, tfds_builders, vocabularies
from ttcjax.tasks import arithmetic
from ttcjax.tasks import math as math_task
from ttcjax.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
MATH500 = (pathlib.Path(__file__).resolve().parents[2].parent
           / "shared/data/math500/test.jsonl")
TINY = arithmetic.ArithmeticConfig(max_ops=2, max_digits=2)


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def tiny_hf_tokenizer():
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "a": 3, "b": 4, "\n": 5,
           "=": 6, "ab": 7, "ab\n": 8, "b\n": 9}
  merges = [("a", "b"), ("ab", "\n"), ("b", "\n")]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
  tok.decoder = tokenizers.decoders.Fuse()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>"])
  return tok


def assert_examples_equal(got, want):
  for key in examples.FEATURES:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert got[key].dtype == want[key].dtype, key


def first_examples(name, split, max_len, n):
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset({"tokens": max_len}, split=split, shuffle=False)
  return list(ds.take(n).as_numpy_iterator())


PRM_ROWS = [
    {"prompt": "Compute: 1+2*3\n", "steps": ["2*3=6, so 1+6\n", "1+6=7\n",
                                             "#### 7\n"],
     "step_labels": [0.9, 0.8, 1.0]},
    {"prompt": "Compute: 5-1\n", "steps": ["5-1=3\n", "#### 3"],
     "step_labels": [0.0, 0.0]},
    {"prompt": "Q\n", "steps": ["x" * 100], "step_labels": [0.5]},  # too long
]
ORM_ROWS = [{"prompt": "Compute: 5-1\n", "solution": "5-1=4\n#### 4\n",
             "label": 1},
            {"context": "Compute: 5-1\n", "solution": "#### 3\n", "label": 0.0}]
REVISION_ROWS = [
    {"question": "Compute: 5-1", "previous_attempts": [], "target": "#### 4\n"},
    {"question": "Compute: 5-1", "previous_attempts": ["#### 3\n", "#### 5\n"],
     "target": "5-1=4\n#### 4\n"},
]


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("jsonl")
  return {"prm": write_jsonl(root / "prm.jsonl", PRM_ROWS),
          "orm": write_jsonl(root / "orm.jsonl", ORM_ROWS),
          "revision": write_jsonl(root / "revision.jsonl", REVISION_ROWS),
          "math": write_jsonl(root / "math.jsonl", [
              {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.",
               "level": "Level 1", "type": "Algebra"},
              {"problem": "Answer only.", "answer": "3", "level": 2}])}


@pytest.fixture(scope="module")
def registered(fixture_files):
  kwargs = dict(
      arithmetic_config=TINY,
      arithmetic_splits={"train": (11, 6), "validation": (12, 2)},
      math_files={"train": fixture_files["math"]},
      prm_files={"train": fixture_files["prm"]},
      orm_files={"train": fixture_files["orm"]},
      revision_files={"validation": fixture_files["revision"]})
  names = seqio_tasks.register_tasks(**kwargs)
  assert seqio_tasks.register_tasks(**kwargs) == names  # idempotent
  return names


# -------------------------------------------------------------- vocabularies


def test_byte_vocabulary_matches_byte_tokenizer():
  vocab = vocabularies.ByteVocabulary()
  assert isinstance(vocab, seqio.ByteVocabulary)
  assert (vocab.pad_id, vocab.eos_id, vocab.bos_id) == (
      TOK.pad_id, TOK.eos_id, TOK.bos_id)
  assert vocab.vocab_size == TOK.vocab_size
  text = "Compute: 37+8*4\n#### 69 — π\n"
  assert vocab.encode(text) == TOK.encode(text)
  np.testing.assert_array_equal(vocab.encode_tf(tf.constant(text)).numpy(),
                                TOK.encode(text))
  ids = TOK.encode(text, bos=True) + [TOK.eos_id, 70, 0]
  assert vocab.decode(ids) == TOK.decode(ids) == text
  assert vocab.decode_tf(tf.constant([ids])).numpy()[0].decode() == text


def test_hf_vocabulary(tmp_path):
  tok = tiny_hf_tokenizer()
  tok.save(str(tmp_path / "tokenizer.json"))
  vocab = vocabularies.HFVocabulary(tmp_path, eos_id=1, bos_id=2)
  assert vocab == vocabularies.HFVocabulary(tok, eos_id=1, bos_id=2)
  assert vocab != vocabularies.HFVocabulary(tok, eos_id=2)
  assert (vocab.vocab_size, vocab.eos_id, vocab.bos_id, vocab.pad_id) == (
      10, 1, 2, 0)
  assert vocab.encode("ab\nb=a") == [8, 4, 6, 3]
  np.testing.assert_array_equal(vocab.encode_tf(tf.constant("ab\nb=a")), [8, 4, 6, 3])
  assert vocab.decode([2, 8, 4, 6, 3, 1, 7, 0]) == "ab\nb=a"
  decoded = vocab.decode_tf(tf.constant([[8, 1, 7], [7, 9, 0]])).numpy()
  assert [d.decode() for d in decoded] == ["ab\n", "abb\n"]
  with pytest.raises(ValueError, match="eos_id=99"):
    vocabularies.HFVocabulary(tok, eos_id=99)
  with pytest.raises(FileNotFoundError):
    vocabularies.HFVocabulary(tmp_path / "missing", eos_id=1)


# ------------------------------------------------------------------ tasks


def test_register_tasks_names_and_lazy_package_attrs(registered):
  assert registered == ["ttcjax_arithmetic_sft", "ttcjax_math_sft",
                        "ttcjax_prm", "ttcjax_orm", "ttcjax_revision"]
  assert data.register_tasks is seqio_tasks.register_tasks
  assert data.to_numpy_batches is seqio_tasks.to_numpy_batches


def test_generated_tasks_register_by_name_and_refuse_math():
  task = tasks.get("countdown")
  names = seqio_tasks.register_tasks(generated_tasks=(task,),
                                     arithmetic_splits={"train": (11, 3)},
                                     suffix="_gen")
  assert names == ["ttcjax_arithmetic_sft_gen", "ttcjax_countdown_sft_gen"]
  got = first_examples("ttcjax_countdown_sft_gen", "train", 128, 5)
  problems = task.problems(3, 11)
  assert len(got) == 3
  for ex, p in zip(got, problems):
    assert_examples_equal(ex, examples.reference_example(TOK, task, p, 128))
  with pytest.raises(ValueError, match="task 'math', which has no generated "
                     "reference solutions"):
    seqio_tasks.register_tasks(generated_tasks=(tasks.get("math", path="x"),))


def test_arithmetic_task_matches_numpy_examples(registered):
  del registered
  problems = arithmetic.generate(TINY, 6, 11)
  got = first_examples("ttcjax_arithmetic_sft", "train", 128, 6)
  assert len(got) == 6
  for ex, p in zip(got, problems):
    assert_examples_equal(ex, examples.lm_example(
        TOK, arithmetic.prompt(p), p.solution, 128))
  validation = first_examples("ttcjax_arithmetic_sft", "validation", 128, 10)
  assert len(validation) == 2


def test_prm_task_matches_numpy_and_drops_too_long(registered):
  del registered
  got = first_examples("ttcjax_prm", "train", 64, 10)
  assert len(got) == 2  # the 100-byte step does not fit in 64
  for ex, row in zip(got, PRM_ROWS):
    assert_examples_equal(ex, examples.prm_example(
        TOK, row["prompt"], row["steps"], row["step_labels"], 64))
  np.testing.assert_allclose(got[0]["reward_targets"][got[0]["reward_weights"] > 0],
                             [0.9, 0.8, 1.0], rtol=1e-6)


def test_orm_and_revision_tasks_match_numpy(registered):
  del registered
  got = first_examples("ttcjax_orm", "train", 64, 10)
  assert len(got) == 2
  for ex, row in zip(got, ORM_ROWS):
    context = row.get("prompt", row.get("context"))
    assert_examples_equal(ex, examples.orm_example(
        TOK, context, row["solution"], row["label"], 64))
  got = first_examples("ttcjax_revision", "validation", 64, 10)
  assert len(got) == 2
  for ex, row in zip(got, REVISION_ROWS):
    assert_examples_equal(ex, examples.revision_example(
        TOK, row["question"], row["previous_attempts"], row["target"], 64))


def test_math_task_from_fixture(registered, fixture_files):
  del registered
  got = first_examples("ttcjax_math_sft", "train", 256, 10)
  assert len(got) == 1  # the answer-only row has no solution to learn
  problem = math_task.load_jsonl(fixture_files["math"])[0]
  assert_examples_equal(got[0], examples.lm_example(
      TOK, seqio_tasks.math_prompt(problem), problem.solution, 256))


@pytest.mark.skipif(not MATH500.exists(),
                    reason=f"shared MATH-500 file not found at {MATH500}")
def test_math_task_reads_math500():
  name, = [n for n in seqio_tasks.register_tasks(
      arithmetic_splits={"train": (0, 1)}, math_files={"test": MATH500},
      suffix="_m500") if n.startswith("ttcjax_math")]
  batch = next(seqio_tasks.task_batches(name, "test", 4, 768))
  want = []
  for p in math_task.load_jsonl(MATH500):
    try:  # Solutions longer than 768 bytes are dropped by the task.
      want.append(examples.lm_example(TOK, seqio_tasks.math_prompt(p),
                                      p.solution, 768))
    except examples.ExampleTooLongError:
      continue
    if len(want) == 4:
      break
  assert_examples_equal(batch, examples.collate(want, 768))


def test_to_numpy_batches_equals_collate(registered):
  del registered
  ds = seqio.get_mixture_or_task("ttcjax_prm").get_dataset(
      {"tokens": 64}, split="train", shuffle=False)
  batches = list(seqio_tasks.to_numpy_batches(ds, batch_size=3, max_len=64))
  assert len(batches) == 1
  want = examples.collate(
      [examples.prm_example(TOK, r["prompt"], r["steps"], r["step_labels"], 64)
       for r in PRM_ROWS[:2]], 64)
  assert_examples_equal(batches[0], want)
  arith = list(seqio_tasks.task_batches("ttcjax_arithmetic_sft", "train", 4, 128,
                                        drop_remainder=True))
  assert len(arith) == 1 and arith[0]["tokens"].shape == (4, 128)


def test_feature_converter_pads_to_contract(registered):
  del registered
  ds = seqio.get_dataset("ttcjax_orm", {"tokens": 32}, dataset_split="train",
                         shuffle=False,
                         feature_converter=seqio_tasks.ContractFeatureConverter())
  ex = next(ds.as_numpy_iterator())
  assert set(ex) == set(examples.FEATURES)
  want = examples.collate([examples.orm_example(
      TOK, ORM_ROWS[0]["prompt"], ORM_ROWS[0]["solution"], 1.0, 32)], 32)
  assert_examples_equal({k: v[None] for k, v in ex.items()}, want)
  with pytest.raises(ValueError, match="does not pack"):
    seqio_tasks.ContractFeatureConverter(pack=True)


def test_hf_vocabulary_task_labels_step_ends(tmp_path):
  tok = tiny_hf_tokenizer()
  vocab = vocabularies.HFVocabulary(tok, eos_id=1, bos_id=2)
  rows = [{"prompt": "b=a\n", "steps": ["ab\n", "a=b\n"], "step_labels": [1, 0]}]
  name, _ = seqio_tasks.register_tasks(
      vocabulary=vocab, arithmetic_splits={"train": (0, 1)},
      prm_files={"train": write_jsonl(tmp_path / "p.jsonl", rows)}, suffix="_hf")
  assert name == "ttcjax_arithmetic_sft_hf"
  got, = first_examples("ttcjax_prm_hf", "train", 32, 5)
  hf = examples.HFTokenizer(tok, eos_id=1, bos_id=2)
  assert_examples_equal(got, examples.prm_example(
      hf, "b=a\n", ["ab\n", "a=b\n"], [1, 0], 32))
  ends = np.flatnonzero(got["reward_weights"])
  assert [tok.decode([int(got["tokens"][e])]) for e in ends] == ["ab\n", "b\n"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
  path = write_jsonl(tmp_path / "bad.jsonl", [PRM_ROWS[0], {"prompt": "Q",
                                                           "steps": ["a"]}])
  seqio_tasks.register_tasks(arithmetic_splits={"train": (0, 1)},
                             prm_files={"train": path}, suffix="_bad")
  with pytest.raises(Exception, match=r"bad.jsonl:2: field 'step_labels'"):
    first_examples("ttcjax_prm_bad", "train", 64, 5)


# ------------------------------------------------------------------- TFDS


def test_tfds_arithmetic_builder(tmp_path):
  config = tfds_builders.ArithmeticBuilderConfig(
      name="tiny", problems=TINY, seed=5, train_size=4, validation_size=2,
      test_size=3)
  builder = tfds_builders.TtcjaxArithmetic(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare()
  sizes = {s: builder.info.splits[s].num_examples
           for s in ("train", "validation", "test")}
  assert sizes == {"train": 4, "validation": 2, "test": 3}
  rows = sorted(tfds.as_numpy(builder.as_dataset(split="test")),
                key=lambda r: r["uid"])
  want = arithmetic.generate(TINY, 3, 1000 + 3 * 5 + 2)
  assert [r["uid"].decode() for r in rows] == [p.uid for p in want]
  for r, p in zip(rows, want):
    assert r["solution"].decode() == p.solution
    assert r["answer"].decode() == p.answer and r["n_ops"] == p.n_ops
  names = [c.name for c in tfds_builders.TtcjaxArithmetic.BUILDER_CONFIGS]
  assert names == ["easy", "medium", "hard"]


def test_tfds_math_builder_from_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  rows = [{"problem": f"P{i}", "solution": f"S \\boxed{{{i}}}", "level": i % 5 + 1,
           "subject": "Algebra", "unique_id": f"test/{i}.json"} for i in range(3)]
  write_jsonl(manual / "test.jsonl", rows)
  builder = tfds_builders.TtcjaxMath(data_dir=str(tmp_path / "data"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert list(builder.info.splits) == ["test"]
  got = sorted(tfds.as_numpy(builder.as_dataset(split="test")),
               key=lambda r: r["uid"])
  assert [r["answer"].decode() for r in got] == ["0", "1", "2"]
  assert [int(r["level"]) for r in got] == [1, 2, 3]
  other = tmp_path / "other"
  other.mkdir()
  (other / "README").write_text("no jsonl here")
  empty = tfds_builders.TtcjaxMath(data_dir=str(tmp_path / "data2"))
  with pytest.raises(FileNotFoundError, match="neither train.jsonl nor test"):
    empty.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(other)))
