"""Monte-Carlo step labels: batched fan-out equals one roll-out at a time.

Shapes are fixed (K=4 roll-outs, 3 prefixes per batch, 16 new tokens) so
each policy compiles its prefill and decode loop once.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from ttcjax import decoding, models, search, testing
from ttcjax.data import examples as ex
from ttcjax.search import base as search_base
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.verifiers import labeling

K, PER_BATCH, KEY = 4, 3, jax.random.key(3)
CONFIG = labeling.LabelConfig(rollouts=K, prefixes_per_batch=PER_BATCH,
                              max_new_tokens=16, prefix_len=12)
TOY_LM = testing.lm_params({1: 0.5, 7: 0.5}, hash_probs=(0.0, 0.3, 0.5, 1.0))
D, N = testing.digit, testing.NL


class CountingDecoder(decoding.Decoder):
  """Records every prefill call: (prompt rows, num_samples, prompt ids)."""
  calls = []

  def prefill(self, params, prompts, prompt_mask, cache, sampler, rngs,
              num_samples=1):
    CountingDecoder.calls.append(
        (prompts.shape[0], num_samples, np.asarray(prompts),
         np.asarray(prompt_mask)))
    return super().prefill(params, prompts, prompt_mask, cache, sampler,
                           rngs, num_samples)


def _toy_policy(params=TOY_LM, counting=False):
  policy = testing.policy_fns(params, max_gen=16, max_len=64)
  if counting:
    dec = policy.decoder
    policy = dataclasses.replace(policy, decoder=CountingDecoder(
        dec.step_fn, dec.eos_id, dec.stop_ids, dec.max_gen))
  return policy


def _problems(count=3):
  return [labeling.LabelProblem(f"toy-{i}", [testing.QUERY] * (1 + i % 3),
                                str((1 + 7 * i) % 10)) for i in range(count)]


def _toy_grader(problems):
  return labeling.make_grader(problems, testing.answer_fn,
                              lambda a, b: a == b)


@functools.cache
def _toy_samples():
  problems = _problems()
  solutions, _ = labeling.sample_solutions(problems, _toy_policy(), 4,
                                           jax.random.key(0),
                                           problems_per_batch=2)
  return problems, solutions


def _naive_labels(problems, solutions, grader, policy, config, key):
  """One roll-out at a time: prefill a prefix alone, decode it to EOS."""
  dec = dataclasses.replace(policy.decoder, max_gen=config.max_new_tokens)
  width, labels = config.prefix_len, {}
  for p in problems:
    for i, ids in enumerate(solutions[problems.index(p)]):
      steps = labeling.split_steps(ids, dec.eos_id, dec.stop_ids)
      correct = grader(p.uid, list(ids)) if steps else None
      if correct is None:
        continue
      row = []
      for s in range(len(steps) - 1):
        done = [t for step in steps[:s + 1] for t in step]
        prefix = list(p.prompt_ids) + done
        ids_, mask = labeling._left_pad([prefix], width, policy.pad_id)
        hits = 0
        for j in range(K):
          rng = labeling.rollout_key(key, p.uid, i, s, j)[None]
          state = dec.prefill(policy.params, ids_, mask,
                              policy.init_cache(1, width + dec.max_gen),
                              config.sampler, rng, 1)
          state = dec.decode(policy.params, state, config.sampler,
                             dec.max_gen - 1, "eos")
          n = int(state.num_generated[0])
          hits += bool(grader(p.uid, done + np.asarray(
              state.tokens[0, :n]).tolist()))
        row.append(hits / K)
      labels[(p.uid, i)] = tuple(row) + (float(correct),)
  return labels


def test_toy_labels_equal_one_rollout_at_a_time():
  problems, solutions = _toy_samples()
  grader = _toy_grader(problems)
  records, stats = labeling.label_solutions(problems, solutions, grader,
                                            _toy_policy(), CONFIG, KEY)
  want = _naive_labels(problems, solutions, grader, _toy_policy(), CONFIG, KEY)
  got = {(r.uid, r.solution_index): r.step_labels for r in records}
  assert got == want
  labels = np.concatenate([r.step_labels[:-1] for r in records])
  assert 0 < labels.mean() < 1  # the check is not vacuous
  assert stats["n_solutions"] == 12 and stats["n_dropped_unparsable"] == 0


def test_each_prefix_is_prefilled_once_and_fanned_out_to_k_rows():
  problems, solutions = _toy_samples()
  CountingDecoder.calls.clear()
  records, stats = labeling.label_solutions(
      problems, solutions, _toy_grader(problems), _toy_policy(counting=True),
      CONFIG, KEY)
  calls = CountingDecoder.calls
  n_prefixes = sum(len(r.steps) - 1 for r in records)
  assert stats["n_prefixes"] == n_prefixes > PER_BATCH
  assert stats["n_rollouts"] == K * n_prefixes
  assert len(calls) == -(-n_prefixes // PER_BATCH)
  assert all(rows == PER_BATCH and k == K for rows, k, _, _ in calls)
  # The real rows, in order, are exactly the step prefixes, each once.
  fed = [tuple(ids[m]) for _, _, prompts, masks in calls
         for ids, m in zip(prompts, masks)][:n_prefixes]
  want = [r.prompt_ids + sum(r.steps[:s + 1], ())
          for r in records for s in range(len(r.steps) - 1)]
  assert fed == want
  assert stats["prompt_tokens"] == sum(len(p) for p in want)
  assert stats["rollout_tokens"] >= stats["n_rollouts"] * 2  # >= "#d\n"


def test_labels_are_fractions_and_the_last_is_the_outcome():
  problems, solutions = _toy_samples()
  records, _ = labeling.label_solutions(problems, solutions,
                                        _toy_grader(problems), _toy_policy(),
                                        CONFIG, KEY)
  for r in records:
    ids = solutions[[p.uid for p in problems].index(r.uid)][r.solution_index]
    assert sum(r.steps, ()) + (testing.EOS,) == tuple(ids)
    assert len(r.step_labels) == len(r.steps)
    assert all(0 <= x <= 1 and (x * K).is_integer() for x in r.step_labels)
    assert r.step_labels[-1] == float(r.correct)
    assert r.correct == (testing.answer_fn(ids) == problems[
        [p.uid for p in problems].index(r.uid)].reference)


def test_a_certain_policy_gives_certain_labels():
  # Always "7\n7\n#4\n": every roll-out reaches 4.
  params = testing.lm_params({7: 1.0}, hash_probs=(0.0, 0.0, 1.0))
  sure = [labeling.LabelProblem("a", [testing.QUERY], "4"),
          labeling.LabelProblem("b", [testing.QUERY], "5")]
  solution = (D(7), N, D(7), N, testing.HASH, D(4), N, testing.EOS)
  records, _ = labeling.label_solutions(
      sure, [[solution], [solution]], _toy_grader(sure), _toy_policy(params),
      CONFIG, KEY)
  assert [r.step_labels for r in records] == [(1.0, 1.0, 1.0),
                                              (0.0, 0.0, 0.0)]


def test_unparsable_and_empty_solutions_are_dropped_and_counted():
  problems = _problems(2)
  good = (D(1), N, testing.HASH, D(1), N, testing.EOS)
  solutions = [[(testing.EOS,), good, (D(1), N, D(7), N, testing.EOS)],
               [(), good]]
  records, stats = labeling.label_solutions(
      problems, solutions, _toy_grader(problems), _toy_policy(), CONFIG, KEY)
  assert stats["n_solutions"] == 5 and stats["n_dropped_unparsable"] == 3
  assert [(r.uid, r.solution_index) for r in records] == [("toy-0", 1),
                                                          ("toy-1", 1)]
  assert stats["n_prefixes"] == 2 and stats["n_rollouts"] == 2 * K


def test_labels_do_not_depend_on_batching_or_other_problems():
  problems, solutions = _toy_samples()
  grader, policy = _toy_grader(problems), _toy_policy()
  run = lambda probs, sols, per_batch: {
      (r.uid, r.solution_index): r.step_labels
      for r in labeling.label_solutions(
          probs, sols, grader, policy,
          labeling.LabelConfig(rollouts=K, prefixes_per_batch=per_batch,
                               max_new_tokens=16, prefix_len=12), KEY)[0]}
  full = run(problems, solutions, PER_BATCH)
  assert run(problems, solutions, PER_BATCH) == full  # deterministic
  assert run(problems, solutions, 5) == full
  alone = run(problems[1:2], solutions[1:2], PER_BATCH)
  assert alone == {k: v for k, v in full.items() if k[0] == "toy-1"}
  other = {(r.uid, r.solution_index): r.step_labels
           for r in labeling.label_solutions(problems, solutions, grader,
                                             policy, CONFIG,
                                             jax.random.key(4))[0]}
  assert other != full


def test_stable_hash_matches_search():
  assert labeling.stable_hash("toy-0") == search_base.stable_hash("toy-0")


def test_config_and_prefix_width_are_checked():
  with pytest.raises(ValueError, match="rollouts"):
    labeling.LabelConfig(rollouts=0)
  problems, solutions = _toy_samples()
  with pytest.raises(ValueError, match="prefix_len=2"):
    labeling.label_solutions(
        problems, solutions, _toy_grader(problems), _toy_policy(),
        labeling.LabelConfig(rollouts=K, prefix_len=2), KEY)


# --- A real (tiny, random) transformer ----------------------------------------

REAL = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4,
                          n_kv_heads=2, d_ff=64, max_len=64)
REAL_STOPS = (2, 3, 4)  # short steps from a near-uniform random model


def _real_policy():
  decoder = decoding.Decoder(models.decode_step_fn(REAL), eos_id=testing.EOS,
                             stop_ids=REAL_STOPS, max_gen=16)
  return search.PolicyFns(
      decoder=decoder, params=testing.numpy_params(REAL, seed=1),
      init_cache=lambda b, n: models.init_cache(REAL, b, n), max_len=64,
      pad_id=testing.PAD, prompt_len=4)


def _real_grader(uid, ids):
  """Unparsable with a 15; else correct when the ids before EOS sum even."""
  del uid
  ids = list(ids) + [testing.EOS]
  ids = ids[:ids.index(testing.EOS)]
  return None if 15 in ids else sum(ids) % 2 == 0


def test_real_model_labels_equal_one_rollout_at_a_time():
  problems = [labeling.LabelProblem(f"real-{i}", [5 + i, 9, 11]) for i in
              range(2)]
  policy = _real_policy()
  solutions, _ = labeling.sample_solutions(problems, policy, 4,
                                           jax.random.key(1))
  config = labeling.LabelConfig(rollouts=K, prefixes_per_batch=PER_BATCH,
                                max_new_tokens=12, prefix_len=20)
  records, stats = labeling.label_solutions(problems, solutions, _real_grader,
                                            policy, config, KEY)
  assert stats["n_prefixes"] > PER_BATCH and stats["n_dropped_unparsable"]
  labels = np.concatenate([r.step_labels[:-1] for r in records])
  assert 0 < labels.mean() < 1
  want = _naive_labels(problems, solutions, _real_grader, policy, config, KEY)
  assert {(r.uid, r.solution_index): r.step_labels for r in records} == want


# --- PRM examples -------------------------------------------------------------


def test_prm_examples_match_the_text_level_layout():
  tok = ByteTokenizer()
  problem = arithmetic.generate(arithmetic.ArithmeticConfig(min_ops=3), 1,
                                seed=0)[0]
  prompt = arithmetic.prompt(problem)
  steps = arithmetic.split_steps(problem.solution)
  labels = np.linspace(0.2, 1.0, len(steps)).round(3).tolist()
  record = labeling.LabeledSolution(
      uid=problem.uid, solution_index=0,
      prompt_ids=tuple(ex.prompt_ids(tok, prompt)),
      steps=tuple(tuple(tok.encode(s)) for s in steps),
      step_labels=tuple(labels), correct=True)
  for max_len in (None, len(problem.solution) + 5):
    want = ex.prm_example(tok, prompt, steps, labels, max_len)
    got = labeling.prm_example_from_ids(record.prompt_ids, record.steps,
                                        record.step_labels, max_len,
                                        bos_id=tok.bos_id)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
      assert got[key].dtype == want[key].dtype
  batch = labeling.prm_batch([record, record], 96, bos_id=tok.bos_id)
  assert set(batch) == set(ex.FEATURES) and batch["tokens"].shape == (2, 96)
  at = batch["reward_weights"][0] > 0
  assert at.sum() == len(steps)
  assert np.all(batch["tokens"][0, at] == tok.encode("\n")[0])
  np.testing.assert_allclose(batch["reward_targets"][0, at], labels)
  assert not batch["loss_weights"].any()
  with pytest.raises(ex.ExampleTooLongError):
    labeling.prm_example_from_ids(record.prompt_ids, record.steps,
                                  record.step_labels, 10)
  assert labeling.prm_examples([record], 10)[1] == 1


def test_make_grader_on_arithmetic_text():
  tok = ByteTokenizer()
  problem = arithmetic.generate(arithmetic.ArithmeticConfig(), 1, seed=1)[0]
  grader = labeling.make_grader(
      [labeling.LabelProblem(problem.uid, [tok.bos_id], problem.answer)],
      lambda ids: arithmetic.extract_answer(tok.decode(ids)),
      lambda a, b: int(a) == int(b))
  ids = tok.encode(problem.solution) + [tok.eos_id]
  assert grader(problem.uid, ids) is True
  assert grader(problem.uid, tok.encode("#### 99999999\n")) is False
  assert grader(problem.uid, tok.encode("1+1=2\n")) is None
  steps = labeling.split_steps(ids, tok.eos_id,
                               tok.token_ids_ending_with("\n"))
  assert [tok.decode(s) for s in steps] == arithmetic.split_steps(
      problem.solution)
