"""The decoder: config validation, causality, cache and padding invariance."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models import (KVCache, ModelConfig, abstract_params, apply,
                           decode_step_fn, init_cache, init_params, lm_logits,
                           reward_scores)
from ttcjax import sharding_rules
from ttcjax.models import transformer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                  n_kv_heads=2, d_ff=64, max_len=32)
RCFG = CFG.replace(reward_head=True)
ATOL = 1e-5

_step = jax.jit(decode_step_fn(CFG))


@functools.partial(jax.jit, static_argnums=0)
def _jit_logits(cfg, params, tokens, mask):
  return lm_logits(cfg, params, tokens, mask)


def _logits(cfg, params, tokens, mask=None):
  """Jitted `lm_logits`, always with a mask (one compile per shape)."""
  mask = jnp.ones(tokens.shape, bool) if mask is None else mask
  return _jit_logits(cfg, params, tokens, mask)


@jax.jit
def _rewards(params, tokens, mask):
  return reward_scores(RCFG, params, tokens, mask)


@pytest.fixture(scope="module")
def params():
  # The same (config, key) as the decoder and partitioning tests: one compile.
  return init_params(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def reward_params(params):
  """CFG's weights plus a random reward head (saves compiling another init)."""
  rng = np.random.default_rng(1)
  head = {"kernel": jnp.asarray(rng.normal(size=(CFG.d_model, 1)) * 0.3,
                                jnp.float32),
          "bias": jnp.asarray([0.5], jnp.float32)}
  out = {**params, "reward_head": head}
  chex.assert_trees_all_equal_shapes_and_dtypes(
      out, nn.unbox(abstract_params(RCFG)))
  return out


def _tokens(seed, shape):
  return jnp.asarray(
      np.random.default_rng(seed).integers(0, CFG.vocab_size, size=shape),
      jnp.int32)


# --- ModelConfig -----------------------------------------------------------

_BASE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64)


_BAD_FIELDS = [
    (dict(n_kv_heads=3), "n_kv_heads"),
    (dict(n_kv_heads=0), "n_kv_heads"),
    (dict(n_kv_heads=-2), "n_kv_heads"),
    (dict(head_dim=7), "head_dim"),
    (dict(d_model=12), "head_dim"),  # 12 / 4 heads = 3, odd.
    (dict(d_model=30), "d_model"),  # not divisible by 4 heads.
    (dict(vocab_size=0), "vocab_size"),
    (dict(d_model=-32), "d_model"),
    (dict(n_layers=0), "n_layers"),
    (dict(n_heads=0), "n_heads"),
    (dict(d_ff=0), "d_ff"),
    (dict(max_len=0), "max_len"),
    (dict(d_ff=64.0), "d_ff"),
    (dict(rope_theta=0.0), "rope_theta"),
    (dict(head_dim=0), "head_dim"),
    (dict(head_dim=-8), "head_dim"),
    (dict(dtype="float8"), "dtype"),
    (dict(param_dtype="fp32"), "param_dtype"),
    (dict(rope_type="yarn"), "rope_type"),
    (dict(rope_factor=0.0), "rope_factor"),
    (dict(rope_type="llama3", rope_low_freq_factor=4.0),
     "rope_low_freq_factor"),
    (dict(rope_original_max_len=0), "rope_original_max_len"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(reward_mlp=True), "reward_mlp"),
]


@pytest.mark.parametrize(
    "changes, field", _BAD_FIELDS,
    ids=[",".join(f"{k}={v}" for k, v in c.items()) for c, _ in _BAD_FIELDS])
def test_config_rejects_bad_field_and_names_it(changes, field):
  """Each bad value raises, naming the offending field."""
  with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
    ModelConfig(**{**_BASE, **changes})


def test_config_defaults_and_replace_revalidates():
  cfg = ModelConfig(**_BASE)
  assert cfg.n_kv_heads == 4 and cfg.head_dim == 8 and cfg.n_groups == 1
  assert CFG.n_groups == 2
  with pytest.raises(ValueError, match="n_kv_heads"):
    CFG.replace(n_kv_heads=3)


@pytest.mark.parametrize("changes", [
    dict(),
    dict(tie_embeddings=False),
    dict(reward_head=True),
    dict(qkv_bias=True),
    dict(tie_embeddings=False, reward_head=True, qkv_bias=True),
    dict(head_dim=16, n_kv_heads=1),  # head_dim != d_model / n_heads.
    dict(qk_norm=True, head_dim=16),  # Qwen3
    dict(reward_head=True, reward_mlp=True, tie_embeddings=False),
])
def test_num_params_matches_real_count(changes):
  cfg = CFG.replace(**changes)
  shapes = nn.unbox(abstract_params(cfg))
  total = sum(x.size for x in jax.tree.leaves(shapes))
  assert cfg.num_params() == total
  embeddings = shapes["embedding"].size
  if not cfg.tie_embeddings:
    embeddings += shapes["lm_head"]["kernel"].size
  assert cfg.num_params(include_embeddings=False) == total - embeddings


def test_init_params_matches_abstract_shapes(params):
  abstract = nn.unbox(abstract_params(CFG))
  chex.assert_trees_all_equal_shapes_and_dtypes(params, abstract)
  bf16 = jax.eval_shape(init_params, CFG.replace(param_dtype="bfloat16"),
                        jax.random.key(0))
  assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}


# --- Forward pass ----------------------------------------------------------


def test_lm_logits_shape_and_dtype(params):
  logits = _logits(CFG, params, _tokens(0, (2, 10)))
  chex.assert_shape(logits, (2, 10, CFG.vocab_size))
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert float(jnp.std(logits)) > 0.1  # not degenerate


def test_apply_hidden_head(params):
  outputs, cache = jax.eval_shape(
      lambda p, t: apply(CFG, p, t, heads=("hidden",)), params,
      _tokens(0, (2, 3)))
  assert cache is None and set(outputs) == {"hidden"}
  chex.assert_shape(outputs["hidden"], (2, 3, CFG.d_model))


def test_activations_carry_their_logical_names(params, monkeypatch):
  """Every activation constraint names an `activation_*` rule: a name that
  is not a string (once, the `MLP` class shadowing its axis) is never
  sharded."""
  seen = []

  def record(x, logical_axes):
    seen.append(tuple(logical_axes))
    return x
  monkeypatch.setattr(transformer, "constrain", record)
  jax.eval_shape(lambda p, t: apply(CFG, p, t), params, _tokens(0, (2, 3)))
  assert ("activation_batch", "activation_length", "activation_mlp") in seen
  rules = {name for name, _ in sharding_rules.logical_axis_rules()}
  assert {a for axes in seen for a in axes if a is not None} <= rules


def test_causal(params):
  tokens = _tokens(1, (2, 10))
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % CFG.vocab_size)
  before, after = _logits(CFG, params, tokens), _logits(CFG, params, changed)
  chex.assert_trees_all_close(before[:, :6], after[:, :6], atol=ATOL)
  assert np.all(np.abs(before[:, 6:] - after[:, 6:]).max(axis=-1) > 1e-3)


def test_incremental_decoding_matches_full_forward(params):
  tokens = _tokens(2, (2, 10))
  full = _logits(CFG, params, tokens)
  cache = init_cache(CFG, 2, 16)
  ones = jnp.ones((2, 7), bool)
  prefix, cache = _step(params, tokens[:, :7], ones, cache)
  steps = [prefix]
  for i in range(7, 10):
    logits, cache = _step(params, tokens[:, i:i + 1], ones[:, :1], cache)
    steps.append(logits)
  chex.assert_trees_all_close(jnp.concatenate(steps, 1), full, atol=ATOL)
  assert int(cache.index) == 10
  np.testing.assert_array_equal(cache.next_pos, [10, 10])
  np.testing.assert_array_equal(cache.valid, np.arange(16)[None] < [[10]] * 2)


def test_padding_invariance_without_cache(params):
  row, other = _tokens(3, (1, 6)), _tokens(4, (1, 9))
  garbage = _tokens(5, (1, 3))
  batch = jnp.concatenate([
      jnp.concatenate([garbage, row], 1),  # left-padded
      jnp.concatenate([row, garbage], 1),  # right-padded
      other,
  ])
  mask = jnp.asarray([[False] * 3 + [True] * 6, [True] * 6 + [False] * 3,
                      [True] * 9])
  padded = _logits(CFG, params, batch, mask)
  alone = _logits(CFG, params, row)[0]
  chex.assert_trees_all_close(padded[0, 3:], alone, atol=ATOL)
  chex.assert_trees_all_close(padded[1, :6], alone, atol=ATOL)
  chex.assert_trees_all_close(padded[2], _logits(CFG, params, other)[0],
                              atol=ATOL)


def test_padding_invariance_with_cache(params):
  """Left- and right-padded prompts, then a skipped step, match no padding."""
  seqs = _tokens(6, (2, 10))
  full = _logits(CFG, params, seqs)
  prompt_lens = (4, 6)
  garbage = _tokens(7, (2, 7))
  # Row 0: 3 pads then 4 tokens; row 1: 6 tokens then 1 pad.
  prompts = jnp.stack([jnp.concatenate([garbage[0, :3], seqs[0, :4]]),
                       jnp.concatenate([seqs[1, :6], garbage[1, :1]])])
  mask = jnp.asarray([[False] * 3 + [True] * 4, [True] * 6 + [False]])
  logits, cache = _step(params, prompts, mask, init_cache(CFG, 2, 16))
  chex.assert_trees_all_close(logits[0, 3:], full[0, :4], atol=ATOL)
  chex.assert_trees_all_close(logits[1, :6], full[1, :6], atol=ATOL)
  # Row 1 sits out step 1 (fed garbage, masked), as a finished row would.
  fed = list(prompt_lens)
  for step in range(6):
    active = [fed[r] < 10 and not (r == 1 and step == 1) for r in range(2)]
    tokens = jnp.asarray([[seqs[r, min(fed[r], 9)]] if active[r] else
                          [garbage[r, step]] for r in range(2)], jnp.int32)
    logits, cache = _step(params, tokens, jnp.asarray(active)[:, None], cache)
    for r in range(2):
      if active[r]:
        chex.assert_trees_all_close(logits[r, 0], full[r, fed[r]], atol=ATOL)
        fed[r] += 1
  assert fed == [10, 10]
  np.testing.assert_array_equal(cache.next_pos, [10, 10])


def test_bfloat16_compute_close_to_float32(params):
  tokens = _tokens(8, (2, 10))
  bf16 = CFG.replace(dtype="bfloat16")
  low, high = _logits(bf16, params, tokens), _logits(CFG, params, tokens)
  assert low.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(high)))
  assert float(jnp.max(jnp.abs(low - high))) < 0.05 * scale
  assert float(jnp.max(jnp.abs(low - high))) > 0  # bf16 really was used
  # The cache path runs in bf16 too (cache stored in bf16).
  cache = init_cache(bf16, 2, 16)
  assert cache.k[0].dtype == jnp.bfloat16
  step = jax.jit(decode_step_fn(bf16))
  cached, _ = step(params, tokens, jnp.ones((2, 10), bool), cache)
  assert float(jnp.max(jnp.abs(cached - high))) < 0.05 * scale


# --- Reward head -----------------------------------------------------------


def test_reward_scores_shape_and_batch_invariance(reward_params):
  row, other = _tokens(9, (1, 6)), _tokens(10, (1, 9))
  garbage = _tokens(11, (1, 3))
  alone = _rewards(reward_params, row, jnp.ones(row.shape, bool))
  chex.assert_shape(alone, (1, 6))
  assert alone.dtype == jnp.float32
  assert float(jnp.std(alone)) > 0
  batch = jnp.concatenate([jnp.concatenate([garbage, row], 1), other,
                           jnp.concatenate([row, garbage], 1)])
  mask = jnp.asarray([[False] * 3 + [True] * 6, [True] * 9,
                      [True] * 6 + [False] * 3])
  scores = _rewards(reward_params, batch, mask)
  chex.assert_shape(scores, (3, 9))
  chex.assert_trees_all_close(scores[0, 3:], alone[0], atol=ATOL)
  chex.assert_trees_all_close(scores[2, :6], alone[0], atol=ATOL)
  # Another batch composition (rows reordered, so other neighbours).
  reordered = _rewards(reward_params, batch[::-1], mask[::-1])
  chex.assert_trees_all_close(reordered[::-1], scores, atol=ATOL)


def test_reward_head_required(params):
  tokens = _tokens(0, (1, 3))
  with pytest.raises(ValueError, match="reward_head"):
    jax.eval_shape(lambda p: apply(CFG, p, tokens, heads=("reward",)), params)
  with pytest.raises(ValueError, match="reward_head"):
    jax.eval_shape(lambda p: reward_scores(CFG, p, tokens), params)


# --- KVCache ---------------------------------------------------------------


def _numbered_cache(batch=3, layers=2):
  arange = lambda *s: jnp.arange(np.prod(s), dtype=jnp.float32).reshape(s)
  return KVCache(
      k=tuple(arange(batch, 2, 4, 2) + 100 * i for i in range(layers)),
      v=tuple(-arange(batch, 2, 4, 2) - 100 * i for i in range(layers)),
      valid=jnp.asarray(np.random.default_rng(0).random((batch, 4)) > 0.5),
      index=jnp.asarray(2, jnp.int32),
      next_pos=jnp.arange(batch, dtype=jnp.int32) + 5)


def test_kv_cache_take_and_repeat():
  cache = _numbered_cache()
  assert cache.batch_size == 3 and cache.max_len == 4
  rows = jnp.asarray([2, 0, 0, 1])
  taken = cache.take(rows)
  expected = jax.tree.map(lambda x: x[np.asarray(rows)],
                          cache.replace(index=None))
  chex.assert_trees_all_equal(taken.replace(index=None), expected)
  assert int(taken.index) == 2 and taken.batch_size == 4
  chex.assert_trees_all_equal(cache.repeat(2),
                              cache.take(jnp.asarray([0, 0, 1, 1, 2, 2])))


def test_kv_cache_rollback_masks_stale_slots(params):
  tokens = _tokens(12, (2, 6))
  one = jnp.ones((2, 1), bool)
  _, cache = _step(params, tokens[:, :4], jnp.ones((2, 4), bool),
                   init_cache(CFG, 2, 16))
  saved = (cache.index, cache.valid, cache.next_pos)
  for i in (4, 5):  # a branch that is then abandoned
    _, cache = _step(params, tokens[:, i:i + 1], one, cache)
  rolled = cache.rollback(*saved)
  chex.assert_trees_all_equal(rolled.k, cache.k)  # keys stay in place
  assert int(rolled.index) == 4
  other = (tokens[:, 4:5] + 7) % CFG.vocab_size
  logits, _ = _step(params, other, one, rolled)
  # Positions after 4 are causally irrelevant; length 10 reuses a compile.
  expected = _logits(CFG, params, jnp.concatenate(
      [tokens[:, :4], other, _tokens(13, (2, 5))], 1))
  chex.assert_trees_all_close(logits[:, 0], expected[:, 4], atol=ATOL)
