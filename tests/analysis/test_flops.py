"""Tests for the FLOPs accountant, including a cross-check against XLA."""

import functools
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

from ttcjax import models
from ttcjax.analysis import flops

# Matmul-only counts are held to 5% of XLA (which also counts elementwise
# ops) on sizes with d_model >= 128; the tiny size needs the rough
# elementwise count (decode over a 256-slot cache is 5.6% off without it).
SIZES = {
    "tiny": models.ModelConfig(vocab_size=256, d_model=64, n_layers=2,
                               n_heads=4, n_kv_heads=2, d_ff=256),
    "small": models.ModelConfig(vocab_size=512, d_model=128, n_layers=2,
                                n_heads=8, n_kv_heads=2, d_ff=384,
                                tie_embeddings=False),
    "mid": models.ModelConfig(vocab_size=1024, d_model=256, n_layers=2,
                              n_heads=8, n_kv_heads=4, d_ff=768,
                              qkv_bias=True),
    "large": models.ModelConfig(vocab_size=1024, d_model=384, n_layers=3,
                                n_heads=6, d_ff=1024, tie_embeddings=False),
}
MATMUL_SIZES = ("small", "mid", "large")
BATCH = 2


def _abstract_params(cfg):
  return nn.unbox(models.abstract_params(cfg))


@functools.lru_cache(maxsize=None)
def _xla_prefill(size, length):
  cfg = SIZES[size]
  tokens = jax.ShapeDtypeStruct((BATCH, length), jnp.int32)
  return flops.xla_flops(lambda p, t: models.lm_logits(cfg, p, t),
                         _abstract_params(cfg), tokens)


@functools.lru_cache(maxsize=None)
def _xla_decode(size, cache_len):
  cfg = SIZES[size]
  cache = jax.eval_shape(lambda: models.init_cache(cfg, BATCH, cache_len))
  tokens = jax.ShapeDtypeStruct((BATCH, 1), jnp.int32)
  return flops.xla_flops(lambda p, t, c: models.apply(cfg, p, t, None, c),
                         _abstract_params(cfg), tokens, cache)


def _check(xla, ours, tol, label, record_property):
  ratio = xla / ours
  print(f"{label}: ours={ours:.4g} xla={xla:.4g} xla/ours={ratio:.4f}")
  record_property(label, ratio)
  assert abs(ratio - 1) < tol, (label, ratio)


@pytest.mark.parametrize("length", [128, 256])
@pytest.mark.parametrize("size", MATMUL_SIZES)
def test_prefill_matches_xla(size, length, record_property):
  ours = flops.prefill_flops(SIZES[size], length, BATCH, attention="dense")
  _check(_xla_prefill(size, length), ours, 0.05, f"prefill/{size}/{length}",
         record_property)


@pytest.mark.parametrize("cache_len", [128, 256])
@pytest.mark.parametrize("size", MATMUL_SIZES)
def test_decode_matches_xla(size, cache_len, record_property):
  ours = flops.decode_flops(SIZES[size], 7, BATCH, cache_len=cache_len)
  _check(_xla_decode(size, cache_len), ours, 0.05, f"decode/{size}/{cache_len}",
         record_property)


@pytest.mark.parametrize("size", list(SIZES))
def test_elementwise_count_matches_xla_closely(size, record_property):
  cfg = SIZES[size]
  for length in (128, 256):
    ours = flops.prefill_flops(cfg, length, BATCH, attention="dense",
                               elementwise=True)
    _check(_xla_prefill(size, length), ours, 0.02,
           f"prefill+ew/{size}/{length}", record_property)
    ours = flops.decode_flops(cfg, 1, BATCH, cache_len=length,
                              elementwise=True)
    _check(_xla_decode(size, length), ours, 0.02, f"decode+ew/{size}/{length}",
           record_property)


def test_score_and_train_step_match_xla(record_property):
  cfg = SIZES["small"].replace(reward_head=True)
  params = nn.unbox(models.abstract_params(cfg))
  tokens = jax.ShapeDtypeStruct((BATCH, 128), jnp.int32)
  xla = flops.xla_flops(lambda p, t: models.reward_scores(cfg, p, t), params,
                        tokens)
  ours = flops.score_flops(cfg, 128, BATCH, attention="dense")
  _check(xla, ours, 0.05, "score/small/128", record_property)

  def loss(p, t):
    logits = models.lm_logits(cfg, p, t)
    return optax.softmax_cross_entropy_with_integer_labels(logits, t).mean()

  xla = flops.xla_flops(jax.grad(loss), params, tokens)
  ours = flops.train_step_flops(cfg, BATCH, 128, attention="dense")
  _check(xla, ours, 0.05, "train_step/small/128", record_property)


def test_hand_computed_forward():
  cfg = models.ModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2,
                           n_kv_heads=1, d_ff=16)  # head_dim 4
  per_layer = 2 * 8 * (2 + 2) * 4 + 2 * 2 * 4 * 8 + 6 * 8 * 16
  per_token = 2 * per_layer + 2 * 8 * 10
  assert flops.matmul_flops_per_token(cfg) == per_token
  assert flops.matmul_flops_per_token(cfg, "none") == per_token - 160
  attn = 2 * 4 * 2 * 4  # layers * 4 * heads * head_dim
  assert flops.prefill_flops(cfg, 3) == 3 * per_token + attn * 6
  assert flops.prefill_flops(cfg, 3, attention="dense") == (
      3 * per_token + attn * 9)
  assert flops.prefill_flops(cfg, 3, 4) == 4 * flops.prefill_flops(cfg, 3)
  assert flops.decode_flops(cfg, 5) == per_token + attn * 5
  assert flops.decode_flops(cfg, 5, cache_len=12) == per_token + attn * 12
  assert flops.decode_flops(cfg, 5, cache_len=12, attention="causal") == (
      per_token + attn * 5)


def test_generation_is_prefill_plus_decode_steps():
  cfg = SIZES["small"]
  prompt, new = 17, 9
  steps = sum(flops.decode_flops(cfg, prompt + j) for j in range(1, new))
  assert flops.generation_flops(cfg, prompt, new) == (
      flops.prefill_flops(cfg, prompt) + steps)
  # Causal: the same as one forward pass over every token that is fed.
  assert flops.generation_flops(cfg, prompt, new, 3) == 3 * (
      flops.forward_flops(cfg, prompt + new - 1))
  dense = flops.generation_flops(cfg, prompt, new, cache_len=64)
  assert dense == (flops.prefill_flops(cfg, prompt, cache_len=64) +
                   (new - 1) * flops.decode_flops(cfg, 1, cache_len=64))
  assert flops.generation_flops(cfg, prompt, 1) == flops.prefill_flops(
      cfg, prompt)


def test_monotone_in_context():
  cfg = SIZES["mid"]
  decode = [flops.decode_flops(cfg, n) for n in (1, 16, 128, 1024)]
  assert decode == sorted(decode) and len(set(decode)) == 4
  cached = [flops.decode_flops(cfg, 1, cache_len=n) for n in (1, 128, 1024)]
  assert cached == sorted(cached) and len(set(cached)) == 3
  prefill = [flops.prefill_flops(cfg, n) for n in (1, 16, 128)]
  assert prefill == sorted(prefill)
  assert all(flops.forward_flops(cfg, 8, c + 1) > flops.forward_flops(cfg, 8, c)
             for c in (0, 10, 100))
  assert (flops.prefill_flops(cfg, 64, attention="dense") >
          flops.prefill_flops(cfg, 64, attention="causal"))


def test_gqa_is_cheaper_than_mha():
  mha = SIZES["large"]
  gqa = mha.replace(n_kv_heads=2)
  saved = mha.n_layers * 2 * 2 * mha.d_model * (6 - 2) * mha.head_dim
  assert (flops.matmul_flops_per_token(mha) -
          flops.matmul_flops_per_token(gqa)) == saved
  assert flops.prefill_flops(gqa, 128) < flops.prefill_flops(mha, 128)
  # Attention products depend on query heads only.
  assert flops.attention_flops(gqa, 100) == flops.attention_flops(mha, 100)


def test_heads():
  cfg = SIZES["small"].replace(reward_head=True)
  lm = flops.score_flops(cfg, 64, head="lm")
  reward = flops.score_flops(cfg, 64)
  assert lm - reward == 64 * 2 * cfg.d_model * (cfg.vocab_size - 1)
  with pytest.raises(ValueError, match="reward_head"):
    flops.score_flops(SIZES["small"], 64)


def test_paper_conventions():
  assert flops.pretrain_flops_6nd(1e9, 2e12) == 6 * 1e9 * 2e12
  assert flops.inference_flops_2nd(3e9, 1e6) == 2 * 3e9 * 1e6
  assert flops.inference_flops(3e9, 1e6, "4nd") == 4 * 3e9 * 1e6
  assert flops.train_step_flops(SIZES["tiny"], 2, 32) == 3 * (
      flops.prefill_flops(SIZES["tiny"], 32, 2))


@pytest.mark.parametrize("ratio, expected_2nd, expected_4nd", [
    (0.16, 14 + 39 / 0.16, 14 + 19.5 / 0.16),  # = 257.75, 135.875
    (0.79, 14 + 39 / 0.79, 14 + 19.5 / 0.79),
    (22.0, 14 + 39 / 22, 14 + 19.5 / 22),
])
def test_flops_matched_budget(ratio, expected_2nd, expected_4nd):
  n_small, d_pre = 1e9, 1e12
  d_inf = ratio * d_pre
  for convention, expected, c in (("2nd", expected_2nd, 2),
                                  ("4nd", expected_4nd, 4)):
    x = flops.flops_matched_budget(n_small, 14 * n_small, d_pre, d_inf,
                                   convention)
    assert x == pytest.approx(expected, rel=1e-12)
    # The defining relation holds.
    small = 6 * n_small * d_pre + c * n_small * d_inf * x
    large = 6 * 14 * n_small * d_pre + c * 14 * n_small * d_inf
    assert small == pytest.approx(large, rel=1e-12)
  assert flops.flops_matched_budget(1e9, 14e9, 1e12, 1e20) == pytest.approx(
      14, rel=1e-6)
  assert flops.flops_matched_budget(1e9, 1e9, 1e12, 1e9) == 1.0


def test_search_flops():
  policy = SIZES["small"]
  verifier = SIZES["mid"].replace(reward_head=True)
  count = flops.search_flops(policy, prompt_tokens=30, generated_tokens=70,
                             verifier=verifier, verifier_tokens=400,
                             policy_context=256, verifier_context=0)
  assert count.policy == 100 * (flops.matmul_flops_per_token(policy) +
                                flops.attention_flops(policy, 256))
  assert count.verifier == 400 * flops.matmul_flops_per_token(verifier,
                                                              "reward")
  assert count.total == count.policy + count.verifier
  assert (count + count).total == 2 * count.total
  default = flops.search_flops(policy, prompt_tokens=1, generated_tokens=0)
  assert default == flops.FlopsCount(float(
      flops.decode_flops(policy, 1, cache_len=policy.max_len)), 0.0)
  # Matmul-only, tied embeddings: 2 N D up to the norm scales.
  tied = SIZES["mid"]
  count = flops.search_flops(tied, prompt_tokens=10, generated_tokens=0,
                             policy_context=0)
  norms = (2 * tied.n_layers + 1) * tied.d_model
  qkv_bias = tied.n_layers * (8 + 2 * 4) * 32
  assert count.policy == 2 * (tied.num_params() - norms - qkv_bias) * 10


@pytest.mark.parametrize("call, name", [
    (lambda: flops.prefill_flops(SIZES["tiny"], -1), "n_tokens"),
    (lambda: flops.prefill_flops(SIZES["tiny"], 8, batch=-2), "batch"),
    (lambda: flops.decode_flops(SIZES["tiny"], 0), "context_len"),
    (lambda: flops.decode_flops(SIZES["tiny"], 9, cache_len=8), "cache_len"),
    (lambda: flops.generation_flops(SIZES["tiny"], 4, -3), "new_tokens"),
    (lambda: flops.prefill_flops(SIZES["tiny"], 8, attention="flash"),
     "attention"),
    (lambda: flops.prefill_flops(SIZES["tiny"], 8, head="value"), "head"),
    (lambda: flops.pretrain_flops_6nd(-1, 5), "n_params"),
    (lambda: flops.inference_flops(1, -5), "tokens"),
    (lambda: flops.inference_flops(1, 5, "3nd"), "convention"),
    (lambda: flops.flops_matched_budget(1, 14, 1, 1, "6nd"), "convention"),
    (lambda: flops.flops_matched_budget(2, 1, 1, 1), "n_large"),
    (lambda: flops.flops_matched_budget(1, 2, 1, 0), "d_inference"),
    (lambda: flops.flops_matched_budget(1, 2, -1, 1), "d_pretrain"),
    (lambda: flops.search_flops(SIZES["tiny"], prompt_tokens=1,
                                generated_tokens=-1), "generated_tokens"),
    (lambda: flops.search_flops(SIZES["tiny"], prompt_tokens=1,
                                generated_tokens=1, verifier_tokens=5),
     "verifier"),
])
def test_bad_input_names_the_argument(call, name):
  with pytest.raises(ValueError, match=name):
    call()


def test_type_errors():
  with pytest.raises(TypeError, match="n_tokens"):
    flops.prefill_flops(SIZES["tiny"], 8.5)
  with pytest.raises(TypeError, match="ModelConfig"):
    flops.prefill_flops({"d_model": 8}, 8)


def test_xla_flops_on_a_matmul_and_on_list_results(monkeypatch):
  a = jax.ShapeDtypeStruct((8, 16), jnp.float32)
  b = jax.ShapeDtypeStruct((16, 4), jnp.float32)
  assert flops.xla_flops(jnp.matmul, a, b) == 2 * 8 * 16 * 4

  class Fake:  # older jax: cost_analysis() returns a list of dicts

    def __init__(self, *_):
      pass

    def lower(self, *_):
      return self

    def compile(self):
      return self

    def cost_analysis(self):
      return [{"flops": 5}]

  monkeypatch.setattr(flops.jax, "jit", Fake)
  assert flops.xla_flops(None) == 5.0


def test_study_imports_without_tensorflow():
  code = ("import sys, ttcjax.analysis; "
          "bad = [m for m in ('tensorflow', 'seqio', 'gin') "
          "if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
