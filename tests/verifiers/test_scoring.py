"""Tests for step scoring: packing, aggregation, invariance to batch/padding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax import models, testing, verifiers

CFG = models.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_len=64, reward_head=True)
SCORE_FN = verifiers.reward_head_score_fn(
    lambda p, t, m: models.reward_scores(CFG, p, t, m))

# Three candidates (prompt + solution) and where their steps end.
SEQS = [[5, 6, 7, 2, 8, 9, 2, 10], [4, 4, 2], [3, 9, 9, 9, 11, 2, 12, 2, 7, 2]]
ENDS = [[3, 6, 7], [2], [5, 7, 9]]


ROWS, WIDTH = 4, 24  # one compiled shape; unused rows are all padding


def _batch(rows, width, left=False):
  n = ROWS
  tokens = np.zeros((n, width), np.int32)
  mask = np.zeros((n, width), bool)
  ends = np.zeros((n, width), bool)
  for i, r in enumerate(rows):
    off = width - len(SEQS[r]) if left else 0
    tokens[i, off:off + len(SEQS[r])] = SEQS[r]
    mask[i, off:off + len(SEQS[r])] = True
    ends[i, [off + e for e in ENDS[r]]] = True
  return tokens, mask, ends


def _scores(params, rows, width=WIDTH, left=False):
  packed, mask = verifiers.step_scores(SCORE_FN, params,
                                       *_batch(rows, width, left))
  packed, mask = np.asarray(packed), np.asarray(mask)
  return [packed[i, mask[i]] for i in range(len(rows))]


def test_step_scores_do_not_depend_on_batch_or_padding():
  params = testing.numpy_params(CFG, seed=1)
  reference = [_scores(params, [r])[0] for r in range(3)]  # each alone
  for r in range(3):
    assert len(reference[r]) == len(ENDS[r])
    assert np.all((reference[r] > 0) & (reference[r] < 1))
  layouts = [([0], True), ([0, 1, 2], False), ([2, 0, 1], True),
             ([1, 1, 2, 0], False), ([0, 2, 1, 0], True)]
  for rows, left in layouts:
    for r, got in zip(rows, _scores(params, rows, left=left)):
      np.testing.assert_allclose(got, reference[r], atol=1e-5,
                                 err_msg=f"rows={rows} left={left}")


def _position_score_fn(params, tokens, token_mask):
  del params, token_mask
  return tokens.astype(jnp.float32) / 10.0


def test_step_scores_packs_each_row_left():
  tokens = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]], np.int32)
  mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], bool)
  ends = np.array([[0, 1, 0, 1, 1], [1, 0, 1, 0, 1]], bool)  # pads ignored
  packed, step_mask = verifiers.step_scores(_position_score_fn, None, tokens,
                                            mask, ends)
  assert packed.shape == (2, 5)
  np.testing.assert_allclose(packed[0, :3], [0.2, 0.4, 0.5])
  np.testing.assert_allclose(packed[1, :1], [0.8])
  np.testing.assert_array_equal(step_mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
  packed, step_mask = verifiers.step_scores(_position_score_fn, None, tokens,
                                            mask, ends, max_steps=2)
  np.testing.assert_allclose(packed, [[0.2, 0.4], [0.8, 0.0]])
  np.testing.assert_array_equal(step_mask, [[1, 1], [1, 0]])


@pytest.mark.parametrize("how,expected", [
    ("last", [0.5, 0.9, 0.0]), ("min", [0.2, 0.9, 0.0]),
    ("prod", [0.2 * 0.8 * 0.5, 0.9, 0.0]), ("mean", [0.5, 0.9, 0.0])])
def test_aggregate(how, expected):
  scores = np.array([[0.2, 0.8, 0.5], [0.9, 0.3, 0.3], [0.7, 0.7, 0.7]],
                    np.float32)
  mask = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], bool)
  np.testing.assert_allclose(verifiers.aggregate(scores, mask, how), expected,
                             rtol=1e-6)
  on_device = jax.jit(lambda s, m: verifiers.aggregate(s, m, how))(scores,
                                                                   mask)
  chex.assert_trees_all_close(np.asarray(on_device), np.asarray(expected,
                                                                np.float32))


def test_aggregate_rejects_unknown():
  with pytest.raises(ValueError, match="aggregation"):
    verifiers.aggregate(np.zeros((1, 1)), np.ones((1, 1), bool), "max")


@pytest.mark.parametrize("how", ["last", "min", "prod", "mean"])
def test_aggregate_without_steps(how):
  np.testing.assert_array_equal(
      verifiers.aggregate(np.zeros((2, 0)), np.zeros((2, 0), bool), how),
      [0.0, 0.0])


def test_score_fn_builders():
  tokens = jnp.array([[1, 2]], jnp.int32)
  mask = jnp.ones((1, 2), bool)
  head = verifiers.reward_head_score_fn(lambda p, t, m: p * (t - 1.0))
  np.testing.assert_allclose(head(2.0, tokens, mask),
                             jax.nn.sigmoid(jnp.array([[0.0, 2.0]])))

  def logits_fn(params, t, m):
    del params, m
    out = jnp.zeros(t.shape + (5,))
    return out.at[..., 3].set(t * 1.0).at[..., 4].set(1.0)

  tag = verifiers.step_tag_score_fn(logits_fn, good_id=3, bad_id=4)
  # softmax over the two tags: P(good) = e^t / (e^t + e^1).
  np.testing.assert_allclose(tag(None, tokens, mask),
                             [[0.5, 1 / (1 + np.e**-1)]], rtol=1e-6)
  with pytest.raises(ValueError):
    verifiers.step_tag_score_fn(logits_fn, good_id=3, bad_id=3)
