"""Tests for ttcjax.data.examples (pure numpy: no TensorFlow here)."""

import sys

import numpy as np
import pytest

from ttcjax.data import examples
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import BOS_ID, EOS_ID, ByteTokenizer

TOK = ByteTokenizer()


class NoBosTokenizer:
  """ByteTokenizer's ids without a BOS."""
  eos_id = EOS_ID
  bos_id = None

  def encode(self, text):
    return TOK.encode(text)


def tiny_hf_tokenizer():
  """A BPE whose merges glue text to the newline: 'ab\\n' -> ['ab\\n']."""
  tokenizers = pytest.importorskip("tokenizers")
  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "a": 3, "b": 4, "\n": 5,
           "=": 6, "ab": 7, "ab\n": 8, "b\n": 9}
  merges = [("a", "b"), ("ab", "\n"), ("b", "\n")]
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
  tok.decoder = tokenizers.decoders.Fuse()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>"])
  return tok


def text_of(tokens, mask):
  return TOK.decode([t for t, m in zip(tokens, mask) if m])


def assert_one_example(ex):
  assert set(ex) == set(examples.FEATURES)
  n = len(ex["tokens"])
  for key in examples.FEATURES:
    assert ex[key].shape == (n,) and ex[key].dtype == examples.DTYPES[key], key


# ----------------------------------------------------------------- lm_example


def test_lm_example_layout():
  ex = examples.lm_example(TOK, "Compute: 1+2\n", "1+2=3\n#### 3\n")
  assert_one_example(ex)
  tokens, w = ex["tokens"], ex["loss_weights"]
  assert tokens[0] == BOS_ID and tokens[-1] == EOS_ID
  assert TOK.decode(tokens) == "Compute: 1+2\n1+2=3\n#### 3\n"
  start = 1 + len("Compute: 1+2\n")
  np.testing.assert_array_equal(w[:start], 0.0)
  np.testing.assert_array_equal(w[start:], 1.0)  # target and its EOS
  assert text_of(tokens, w > 0) == "1+2=3\n#### 3\n"
  assert ex["token_mask"].all()
  assert not ex["reward_weights"].any() and not ex["reward_targets"].any()


def test_lm_example_position_zero_never_weighted():
  ex = examples.lm_example(NoBosTokenizer(), "", "ab")
  np.testing.assert_array_equal(ex["tokens"], TOK.encode("ab") + [EOS_ID])
  np.testing.assert_array_equal(ex["loss_weights"], [0.0, 1.0, 1.0])


def test_lm_example_empty_target_learns_eos():
  ex = examples.lm_example(TOK, "Q\n", "")
  assert ex["tokens"][-1] == EOS_ID
  np.testing.assert_array_equal(np.flatnonzero(ex["loss_weights"]),
                                [len(ex["tokens"]) - 1])


def test_lm_example_truncates_prompt_from_left_keeping_bos():
  prompt, target = "0123456789\n", "abc\n"
  full = examples.lm_example(TOK, prompt, target)
  ex = examples.lm_example(TOK, prompt, target, max_len=10)
  assert len(ex["tokens"]) == 10 and len(full["tokens"]) == 17
  assert ex["tokens"][0] == BOS_ID
  assert TOK.decode(ex["tokens"]) == "789\nabc\n"  # 7 prompt bytes dropped
  assert text_of(ex["tokens"], ex["loss_weights"] > 0) == target
  # A prompt that fits is left alone.
  same = examples.lm_example(TOK, prompt, target, max_len=17)
  np.testing.assert_array_equal(same["tokens"], full["tokens"])


def test_lm_example_target_that_cannot_fit_raises():
  # BOS + 4 target bytes + EOS = 6 tokens.
  ex = examples.lm_example(TOK, "long prompt", "abcd", max_len=6)
  assert TOK.decode(ex["tokens"]) == "abcd" and ex["tokens"][0] == BOS_ID
  with pytest.raises(examples.ExampleTooLongError, match="max_len=5"):
    examples.lm_example(TOK, "long prompt", "abcd", max_len=5)


# ---------------------------------------------------------------- prm_example


def test_prm_example_labels_on_step_delimiters():
  problem = arithmetic.generate(arithmetic.ArithmeticConfig(min_ops=3), 1, 7)[0]
  steps = arithmetic.split_steps(problem.solution)
  labels = np.linspace(0.1, 0.9, len(steps))
  prompt = arithmetic.prompt(problem)
  ex = examples.prm_example(TOK, prompt, steps, labels)
  assert_one_example(ex)
  tokens = ex["tokens"]
  assert TOK.decode(tokens) == prompt + "".join(steps)  # joined exactly
  positions = np.flatnonzero(ex["reward_weights"])
  assert len(positions) == len(steps)
  np.testing.assert_allclose(ex["reward_targets"][positions], labels, rtol=1e-6)
  assert set(np.flatnonzero(ex["reward_targets"])) <= set(positions)
  newline = TOK.encode("\n")[0]
  # Every label sits on a step's "\n", and the text up to it ends that step.
  assert all(tokens[p] == newline for p in positions)
  for i, p in enumerate(positions):
    assert TOK.decode(tokens[:p + 1]) == prompt + "".join(steps[:i + 1])
  assert not ex["loss_weights"].any()
  assert tokens[-1] != EOS_ID


def test_prm_example_last_step_without_delimiter_is_labelled_on_final_token():
  ex = examples.prm_example(TOK, "Q\n", ["1+1=2\n", "#### 2"], [1.0, 0.25])
  positions = np.flatnonzero(ex["reward_weights"])
  n = len(ex["tokens"])
  np.testing.assert_array_equal(positions, [1 + 2 + 6 - 1, n - 1])
  np.testing.assert_array_equal(ex["reward_targets"][positions], [1.0, 0.25])


def test_prm_example_truncation_keeps_steps():
  steps = ["a\n", "bb\n"]
  ex = examples.prm_example(TOK, "0123456789\n", steps, [0, 1], max_len=8)
  assert len(ex["tokens"]) == 8 and ex["tokens"][0] == BOS_ID
  assert TOK.decode(ex["tokens"]) == "9\na\nbb\n"
  np.testing.assert_array_equal(np.flatnonzero(ex["reward_weights"]), [4, 7])
  with pytest.raises(examples.ExampleTooLongError):
    examples.prm_example(TOK, "Q", steps, [0, 1], max_len=5)


@pytest.mark.parametrize("steps,labels,match", [
    (["a\n"], [0.5, 0.5], "1 steps but 2"),
    ([], [], "no steps"),
    (["a\n", ""], [0.5, 0.5], "step 1 encodes to no tokens"),
    (["a\n"], [1.5], "in \\[0, 1\\]"),
    (["a\n"], [float("nan")], "in \\[0, 1\\]"),
])
def test_prm_example_rejects_bad_input(steps, labels, match):
  with pytest.raises(ValueError, match=match):
    examples.prm_example(TOK, "Q", steps, labels)


def test_prm_example_multi_byte_tokenizer_labels_last_token_of_each_step():
  hf = examples.HFTokenizer(tiny_hf_tokenizer(), eos_id=1, bos_id=2, pad_id=0)
  steps = ["ab\n", "a=b\n", "ab"]
  ex = examples.prm_example(hf, "b=a\n", steps, [0.0, 0.5, 1.0])
  tokens = list(ex["tokens"])
  # Segments are encoded separately: [bos] + enc(prompt) + enc(step) ...
  expected = [2] + hf.encode("b=a\n")
  ends = []
  for step in steps:
    expected += hf.encode(step)
    ends.append(len(expected) - 1)
  assert tokens == expected
  assert hf.encode("ab\n") == [8]  # a merged token ends the first step
  np.testing.assert_array_equal(np.flatnonzero(ex["reward_weights"]), ends)
  assert hf.decode(tokens) == "b=a\nab\na=b\nab"


# ---------------------------------------------------------------- orm_example


def test_orm_example_labels_final_position_only():
  ex = examples.orm_example(TOK, "Q\n", "1+1=2\n#### 2\n", 1.0)
  assert_one_example(ex)
  np.testing.assert_array_equal(np.flatnonzero(ex["reward_weights"]),
                                [len(ex["tokens"]) - 1])
  assert ex["reward_targets"][-1] == 1.0 and ex["reward_targets"].sum() == 1.0
  assert TOK.decode(ex["tokens"]) == "Q\n1+1=2\n#### 2\n"
  assert not ex["loss_weights"].any()
  wrong = examples.orm_example(TOK, "Q\n", "#### 3\n", 0)
  assert wrong["reward_weights"][-1] == 1 and wrong["reward_targets"][-1] == 0
  with pytest.raises(ValueError, match="no tokens"):
    examples.orm_example(TOK, "Q\n", "", 1.0)


# ------------------------------------------------------------------- revision


def test_revision_prompt_format():
  assert examples.revision_prompt("Compute: 1+2", []) == (
      "Compute: 1+2\nRevised solution:\n")
  attempts = [f"#### {i}\n" for i in range(6)]
  assert examples.revision_prompt("Compute: 1+2\n", attempts) == (
      "Compute: 1+2\n"
      "Attempt 1:\n#### 2\n"
      "Attempt 2:\n#### 3\n"
      "Attempt 3:\n#### 4\n"
      "Attempt 4:\n#### 5\n"
      "Revised solution:\n")
  # A missing final newline is added; max_context limits the attempts.
  assert examples.revision_prompt("Q", ["x", "y"], max_context=1) == (
      "Q\nAttempt 1:\ny\nRevised solution:\n")
  assert examples.revision_prompt("Q", ["x"], max_context=0) == (
      "Q\nRevised solution:\n")


def test_revision_example_learns_target_after_prompt():
  attempts = ["1+2=4\n#### 4\n", "1+2=5\n#### 5\n"]
  ex = examples.revision_example(TOK, "Compute: 1+2", attempts, "#### 3\n")
  prompt = examples.revision_prompt("Compute: 1+2", attempts)
  assert TOK.decode(ex["tokens"]) == prompt + "#### 3\n"
  assert text_of(ex["tokens"], ex["loss_weights"] > 0) == "#### 3\n"
  assert ex["tokens"][-1] == EOS_ID
  np.testing.assert_array_equal(
      ex["tokens"][:len(prompt) + 1],
      examples.revision_prompt_ids(TOK, "Compute: 1+2", attempts))


def test_revision_example_drops_oldest_attempts_to_fit():
  attempts = ["A" * 20 + "\n", "B" * 20 + "\n", "C" * 20 + "\n"]
  full = examples.revision_example(TOK, "Q", attempts, "T\n")
  one_dropped = len(full["tokens"]) - len("Attempt 1:\n") - 21
  ex = examples.revision_example(TOK, "Q", attempts, "T\n", max_len=one_dropped)
  text = TOK.decode(ex["tokens"])
  assert text == "Q\nAttempt 1:\n" + "B" * 20 + "\nAttempt 2:\n" + "C" * 20 + (
      "\nRevised solution:\nT\n")
  tight = examples.revision_example(TOK, "Q", attempts, "T\n", max_len=24)
  assert TOK.decode(tight["tokens"]) == "Q\nRevised solution:\nT\n"
  # Inference builds the same prompt under the same budget.
  ids = examples.revision_prompt_ids(TOK, "Q", attempts, one_dropped - 3)
  np.testing.assert_array_equal(ids, ex["tokens"][:len(ids)])
  with pytest.raises(examples.ExampleTooLongError):
    examples.revision_example(TOK, "Q", attempts, "T" * 30, max_len=20)


# -------------------------------------------------------------------- collate


def test_collate_pads_right_with_zeros():
  exs = [examples.lm_example(TOK, "Q\n", "ab"),
         examples.prm_example(TOK, "Q\n", ["a\n", "b"], [0.5, 1.0]),
         examples.orm_example(TOK, "Q\n", "abc", 1.0)]
  batch = examples.collate(exs, 12)
  assert set(batch) == set(examples.FEATURES)
  for key in examples.FEATURES:
    assert batch[key].shape == (3, 12) and batch[key].dtype == examples.DTYPES[key]
  for row, ex in enumerate(exs):
    n = len(ex["tokens"])
    for key in examples.FEATURES:
      np.testing.assert_array_equal(batch[key][row, :n], ex[key])
      assert not batch[key][row, n:].any()
  # max_len=None: the longest example.
  assert examples.collate(exs)["tokens"].shape == (3, 6)


def test_collate_missing_features_and_errors():
  batch = examples.collate([{"tokens": np.array([5, 6, 7])}], 4)
  np.testing.assert_array_equal(batch["token_mask"], [[1, 1, 1, 0]])
  assert not batch["loss_weights"].any() and not batch["reward_weights"].any()
  assert examples.collate([], 5)["tokens"].shape == (0, 5)
  with pytest.raises(ValueError, match="example 0 has 3 tokens > max_len=2"):
    examples.collate([{"tokens": np.array([5, 6, 7])}], 2)
  with pytest.raises(ValueError, match="max_len is required"):
    examples.collate([])
  with pytest.raises(ValueError, match="2 loss_weights but 3 tokens"):
    examples.collate([{"tokens": np.array([5, 6, 7]),
                       "loss_weights": np.ones(2)}], 4)


# -------------------------------------------------------------- edit distance


def reference_levenshtein(a, b):
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def test_edit_distance_known_values():
  assert examples.edit_distance("kitten", "sitting") == 3
  assert examples.edit_distance("", "abc") == 3
  assert examples.edit_distance("abc", "") == 3
  assert examples.edit_distance("", "") == 0
  assert examples.edit_distance("flaw", "lawn") == 2
  assert examples.edit_distance("π≈3.14", "π≈3.15") == 1  # characters, not bytes
  np.testing.assert_array_equal(examples.edit_distances("abc", []), [])


def test_edit_distances_match_reference():
  rng = np.random.default_rng(0)
  for _ in range(30):
    a = "".join(rng.choice(list("ab1\n"), size=rng.integers(0, 12)))
    bs = ["".join(rng.choice(list("ab1\n"), size=rng.integers(0, 12)))
          for _ in range(5)]
    np.testing.assert_array_equal(examples.edit_distances(a, bs),
                                  [reference_levenshtein(a, b) for b in bs])


def test_edit_distance_is_bounded_by_max_chars():
  a, b = "x" * 5000, "y" * 5000
  assert examples.edit_distance(a, b) == examples.MAX_EDIT_CHARS
  assert examples.edit_distance(a, b, max_chars=10) == 10
  assert examples.edit_distance("ab" + "x" * 10, "ab", max_chars=2) == 0


# ----------------------------------------------------- revision trajectories


def make_samples(n_correct, wrong, uid="p"):
  samples = [(f"correct {uid} {i}\n#### 7\n", True) for i in range(n_correct)]
  return samples + [(w, False) for w in wrong]


def test_trajectories_k_uniform_and_capped():
  wrong = [f"wrong {i:02d}\n#### {i}\n" for i in range(10)]
  data = {"many": make_samples(2000, wrong, "many"),
          "two": make_samples(500, wrong[:2], "two"),
          "none": make_samples(50, [], "none")}
  out = examples.build_revision_trajectories(data, np.random.default_rng(0))
  assert len(out) == 2550
  by_uid = {}
  for uid, context, target in out:
    by_uid.setdefault(uid, []).append(len(context))
    assert target.startswith(f"correct {uid} ")
  counts = np.bincount(by_uid["many"], minlength=5)
  assert len(counts) == 5 and (np.abs(counts / 2000 - 0.2) < 0.04).all()
  counts_two = np.bincount(by_uid["two"])
  assert len(counts_two) == 3  # k capped at the 2 wrong samples
  assert counts_two[2] > counts_two[0]  # P(k >= 2) = 3/5 lands on k = 2
  assert set(by_uid["none"]) == {0}


def test_trajectories_last_attempt_is_closest_and_context_distinct():
  correct = "12*3=36, so 40-36\n40-36=4\n#### 4\n"
  wrong = ["12*3=35, so 40-35\n40-35=5\n#### 5\n",   # distance 3
           "12*3=36, so 40-36\n40-36=3\n#### 3\n",   # distance 2: closest
           "#### 9\n", "12+3=15\n#### 15\n", "nonsense\n", "12*3=36\n#### 0\n"]
  samples = [(correct, True)] * 200 + [(w, False) for w in wrong]
  out = examples.build_revision_trajectories({"u": samples},
                                             np.random.default_rng(1))
  distances = [reference_levenshtein(correct, w) for w in wrong]
  closest = wrong[int(np.argmin(distances))]
  assert closest == wrong[1]
  for _, context, target in out:
    assert target == correct
    assert len(context) <= 4
    if context:
      assert context[-1] == closest
      assert len(set(context)) == len(context)
      assert set(context) <= set(wrong)
  # The earlier attempts vary.
  assert len({tuple(c[:-1]) for _, c, _ in out if len(c) >= 2}) > 5


def test_trajectories_keep_last_max_context():
  wrong = [f"w{i}\n" for i in range(8)]
  samples = [("w0 ok\n", True)] * 50 + [(w, False) for w in wrong]
  out = examples.build_revision_trajectories(
      {"u": samples}, np.random.default_rng(2), max_context=2, max_k=6)
  assert max(len(c) for _, c, _ in out) == 2
  assert all(c[-1] == "w0\n" for _, c, _ in out if c)


def test_trajectories_deterministic_and_order_free():
  data = {f"p{j}": make_samples(3, [f"x{j}{i}\n" for i in range(j + 1)], j)
          for j in range(5)}
  reordered = dict(reversed(list(data.items())))
  a = examples.build_revision_trajectories(data, np.random.default_rng(3))
  b = examples.build_revision_trajectories(reordered, np.random.default_rng(3))
  c = examples.build_revision_trajectories(data, np.random.default_rng(4))
  assert a == b
  assert [t[0] for t in a] == sorted(t[0] for t in a)
  assert a != c


def test_trajectories_validate_arguments():
  with pytest.raises(ValueError, match="max_k"):
    examples.build_revision_trajectories({}, np.random.default_rng(0), max_k=-1)


# ------------------------------------------------------------------ no TF


def test_examples_and_package_import_without_tensorflow():
  import ttcjax.data  # noqa: F401  pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  code = ("import sys, ttcjax.data; from ttcjax.data import examples; "
          "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)
