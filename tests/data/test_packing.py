"""Packed rows keep examples apart: layout, logits, losses and gradients.

Every example inside a packed row must be computed exactly as it is alone
(one candidate from position 0, as a verifier reads it at search time), for
the LM, the reward head and the revision model, and no gradient may flow
from one segment's loss into another segment's inputs.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax import models, testing
from ttcjax.data import examples, packing
from ttcjax.models.transformer import Block
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.training import losses

TOK = ByteTokenizer()
CFG = models.ModelConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2,
                         n_heads=4, n_kv_heads=2, d_ff=64, max_len=256,
                         reward_head=True)
ROW = 160
ATOL = 1e-5


@pytest.fixture(scope="module")
def params():
  return jax.tree.map(jnp.asarray, testing.numpy_params(CFG, 0, stddev=None))


def _problems(n, seed=3):
  return arithmetic.generate(arithmetic.ArithmeticConfig(max_ops=2), n, seed)


def _lm_examples(n=5):
  return [examples.lm_example(TOK, arithmetic.prompt(p), p.solution)
          for p in _problems(n)]


def _prm_examples(n=5):
  out = []
  for i, p in enumerate(_problems(n)):
    steps = arithmetic.split_steps(p.solution)
    labels = [(i + j) % 3 / 2 for j in range(len(steps))]
    out.append(examples.prm_example(TOK, arithmetic.prompt(p), steps, labels))
  return out


@functools.partial(jax.jit, static_argnames="heads")
def _apply(params, batch, heads):
  segments = {k: batch[k] for k in packing.SEGMENT_FEATURES if k in batch}
  return models.apply(CFG, params, batch["tokens"], batch["token_mask"],
                      heads=heads, **segments)[0][heads[0]]


def _alone(params, ex, heads, width=ROW):
  """The output of one example alone in its row (from position 0; the
  padding after it is causally invisible), `[len(ex), ...]`."""
  batch = examples.collate([ex], width)
  n = len(ex["tokens"])
  return np.asarray(_apply(params, {k: jnp.asarray(v) for k, v in
                                    batch.items()}, heads))[0, :n]


def _spans(batch, row):
  """`[(segment, start, end)]` of a packed row."""
  seg = batch["segment_ids"][row]
  return [(s, int(np.argmax(seg == s)), int(np.argmax(seg == s)) +
           int((seg == s).sum())) for s in range(1, seg.max() + 1)]


# --- Layout -----------------------------------------------------------------


def test_pack_layout_segments_positions_and_weights():
  exs = _lm_examples(7)
  batch = packing.pack(exs, ROW)
  lengths = [len(e["tokens"]) for e in exs]
  assert batch["tokens"].shape[1] == ROW and len(batch["tokens"]) < len(exs)
  assert set(batch) == set(examples.FEATURES) | set(packing.SEGMENT_FEATURES)
  order = [i for row in packing.assign_rows(lengths, ROW) for i in row]
  assert order == list(range(len(exs)))  # in order, none dropped
  seen = 0
  for r in range(len(batch["tokens"])):
    for _, start, end in _spans(batch, r):
      ex = exs[seen]
      np.testing.assert_array_equal(batch["tokens"][r, start:end],
                                    ex["tokens"])
      np.testing.assert_array_equal(batch["positions"][r, start:end],
                                    np.arange(end - start))
      np.testing.assert_array_equal(batch["loss_weights"][r, start:end],
                                    ex["loss_weights"])
      assert batch["loss_weights"][r, start] == 0
      seen += 1
    pad = ~batch["token_mask"][r]
    assert not batch["segment_ids"][r, pad].any()
    assert not batch["positions"][r, pad].any()
    np.testing.assert_array_equal(batch["token_mask"][r],
                                  batch["segment_ids"][r] > 0)
  assert seen == len(exs)


def test_pack_zeroes_a_segments_first_weight_and_rejects_long_examples():
  ex = dict(_lm_examples(1)[0])
  ex["loss_weights"] = np.ones_like(ex["loss_weights"])
  batch = packing.pack([ex, ex], ROW)
  assert batch["loss_weights"][0, 0] == 0
  assert batch["loss_weights"][0, len(ex["tokens"])] == 0
  with pytest.raises(ValueError, match="example 0 has .* row_len=8"):
    packing.pack([ex], 8)


def test_default_segments_match_the_models_own_positions():
  mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  segment_ids, positions = packing.default_segments(mask)
  np.testing.assert_array_equal(segment_ids, mask.astype(np.int32))
  np.testing.assert_array_equal(positions, [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]])
  with pytest.raises(ValueError, match="needs both"):
    packing.with_segments({"token_mask": mask, "segment_ids": segment_ids})


# --- The model: each example computed as alone --------------------------------


@pytest.mark.parametrize("head", ["lm", "reward"])
def test_packed_outputs_equal_each_example_alone(params, head):
  exs = _lm_examples(6) if head == "lm" else _prm_examples(6)
  batch = packing.pack(exs, ROW)
  packed = np.asarray(_apply(params, {k: jnp.asarray(v) for k, v in
                                      batch.items()}, (head,)))
  i, worst = 0, 0.0
  for r in range(len(batch["tokens"])):
    for _, start, end in _spans(batch, r):
      alone = _alone(params, exs[i], (head,))
      worst = max(worst, float(np.abs(packed[r, start:end] - alone).max()))
      i += 1
  assert i == len(exs) and worst <= ATOL
  # Without segment ids (plain concatenation) later examples see earlier
  # ones: the test above would fail.
  plain = {k: batch[k] for k in examples.FEATURES}
  leaky = np.asarray(_apply(params, plain, (head,)))
  _, start, end = _spans(batch, 0)[1]
  assert np.abs(leaky[0, start:end] - _alone(params, exs[1], (head,))
                ).max() > 1e-3


def test_segments_are_rejected_with_a_cache(params):
  cache = models.init_cache(CFG, 1, 8)
  with pytest.raises(ValueError, match="not with a cache"):
    models.apply(CFG, params, jnp.zeros((1, 2), jnp.int32), cache=cache,
                 segment_ids=jnp.ones((1, 2), jnp.int32))


# --- Losses and gradients ------------------------------------------------------


def _device(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("objective", ["lm", "reward"])
def test_packed_loss_equals_one_example_per_row(params, objective):
  exs = _lm_examples(5) if objective == "lm" else _prm_examples(5)
  loss = losses.loss_fn(objective)
  packed = jax.jit(lambda p, b: loss(CFG, p, b)[1])(
      params, _device(packing.pack(exs, ROW)))
  unpacked = jax.jit(lambda p, b: loss(CFG, p, b)[1])(
      params, _device(examples.collate(exs, ROW)))
  for key in ("loss", "accuracy", "weight_sum"):
    np.testing.assert_allclose(packed[key], unpacked[key], rtol=1e-5,
                               atol=1e-6)


@functools.partial(jax.jit, static_argnames="objective")
def _grads_wrt_inputs(params, batch, objective):
  """d loss / d(input embeddings) `[b, L, d_model]`: a zero `delta` is
  added to the first block's input, and the gradient taken w.r.t. it."""
  loss = losses.loss_fn(objective)

  def of_delta(delta):
    def add_delta(next_fun, args, kwargs, context):
      if (isinstance(context.module, Block) and context.module.name ==
          "layer_0" and context.method_name == "__call__"):
        args = (args[0] + delta.astype(args[0].dtype),) + args[1:]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(add_delta):
      return loss(CFG, params, batch)[0]

  b, length = batch["tokens"].shape
  return jax.grad(of_delta)(jnp.zeros((b, length, CFG.d_model)))


def _input_grads(params, batch, objective, segment):
  """d(loss of `segment` in row 0) / d(input embeddings), `[L, d_model]`."""
  batch = dict(batch)
  own = (batch["segment_ids"] == segment).astype(np.float32)
  for key in ("loss_weights", "reward_weights"):
    batch[key] = batch[key] * own
  return np.asarray(_grads_wrt_inputs(params, _device(batch), objective))[0]


@pytest.mark.parametrize("objective", ["lm", "reward"])
def test_no_gradient_flows_across_segments(params, objective):
  exs = _lm_examples(3) if objective == "lm" else _prm_examples(3)
  batch = packing.pack(exs, ROW)
  spans = _spans(batch, 0)
  assert len(spans) >= 2
  for segment, start, end in spans:
    grads = np.abs(_input_grads(params, batch, objective, segment)).sum(-1)
    assert grads[start:end].max() > 0  # the segment's own inputs matter
    others = np.ones(ROW, bool)
    others[start:end] = False
    assert grads[others].max() == 0.0, segment
  # Plain concatenation leaks: the second example's loss reaches the first.
  leak = _leaky_grads(params, batch, objective, spans[1])
  assert leak[spans[0][1]:spans[0][2]].max() > 0


def _leaky_grads(params, batch, objective, span):
  """Input gradients of `span`'s loss when the row has one segment."""
  _, start, end = span
  one = dict(batch)
  for key in ("loss_weights", "reward_weights"):
    weights = np.zeros_like(batch[key])
    weights[0, start:end] = batch[key][0, start:end]
    one[key] = weights
  one["segment_ids"], one["positions"] = packing.default_segments(
      batch["token_mask"])
  return np.abs(_input_grads(params, one, objective, 1)).sum(-1)


# --- The revision model ------------------------------------------------------


def test_revision_example_learns_nothing_from_a_sibling(params):
  """Revision data comes problem by problem: a trajectory's row neighbour is
  often a sibling holding the right answer. Packed, it must not see it."""
  p = _problems(1, seed=11)[0]
  question = arithmetic.prompt(p).rstrip("\n")
  wrong = p.solution.replace(p.answer, str(int(p.answer) + 1))
  sibling = examples.revision_example(TOK, question, [wrong], p.solution)
  keep = examples.revision_example(TOK, question, [p.solution], p.solution)
  target = examples.revision_example(TOK, question, [wrong], p.solution)
  batch = packing.pack([sibling, keep, target], 3 * ROW)
  assert len(batch["tokens"]) == 1
  segment, start, end = _spans(batch, 0)[2]
  packed = np.asarray(_apply(params, _device(batch), ("lm",)))
  alone = _alone(params, target, ("lm",), 3 * ROW)
  assert np.abs(packed[0, start:end] - alone).max() <= ATOL
  grads = np.abs(_input_grads(params, batch, "lm", segment)).sum(-1)
  assert grads[:start].max() == 0.0 and grads[start:end].max() > 0
