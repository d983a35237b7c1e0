"""Decoder semantics on a hand-written counting model and on the real model.

The toy model predicts `(token + 1) % V` and records every token it is fed
in its cache, so tests can check exactly what the loop fed, in which slot.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from ttcjax.decoding import DecodeState, Decoder, Greedy, Sampling
from ttcjax.models import (ModelConfig, decode_step_fn, init_cache,
                           init_params, lm_logits, prefill_fn)

# --- Toy model -------------------------------------------------------------

V = 16
EOS = 15
STOPS = (7, 11)


@struct.dataclass
class ToyCache:
  """Records fed tokens per slot (-1: slot written with a masked token).

  Attributes:
    fed: `[batch, max_len] int32`, -2 where never written.
    index: `[] int32` next slot.
  """
  fed: jax.Array
  index: jax.Array

  @property
  def max_len(self) -> int:
    return self.fed.shape[1]

  def take(self, rows):
    return self.replace(fed=jnp.take(self.fed, rows, axis=0))


def toy_cache(batch, max_len):
  return ToyCache(fed=jnp.full((batch, max_len), -2, jnp.int32),
                  index=jnp.zeros((), jnp.int32))


def toy_step(params, tokens, token_mask, cache):
  """Next token is `(token + 1) % V`, with logit `params` above the rest."""
  written = jnp.where(token_mask, tokens, -1)
  fed = jax.lax.dynamic_update_slice(cache.fed, written, (0, cache.index))
  logits = params * jax.nn.one_hot((tokens + 1) % V, V)
  return logits, cache.replace(fed=fed, index=cache.index + tokens.shape[1])


TOY_PARAMS = jnp.float32(10.0)


def _toy_prompts(last_tokens, length=4):
  """Left-padded prompts `[..., last-1, last]`; row r has r % 3 + 2 tokens."""
  prompts, mask = [], []
  for r, last in enumerate(last_tokens):
    n = r % 3 + 2
    prompts.append([0] * (length - n) + [(last - n + 1 + i) % V
                                         for i in range(n)])
    mask.append([False] * (length - n) + [True] * n)
  return jnp.asarray(prompts, jnp.int32), jnp.asarray(mask)


def _toy_run(decoder, last_tokens, max_len=32):
  prompts, mask = _toy_prompts(last_tokens)
  b = len(last_tokens)
  return decoder.prefill(TOY_PARAMS, prompts, mask, toy_cache(b, max_len),
                         Greedy(), _keys(b)), prompts, mask


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def _generated(state, row):
  return list(np.asarray(state.tokens[row, :int(state.num_generated[row])]))


def _count(start, stop):
  """Tokens the toy model generates after `start-1` up to `stop` inclusive."""
  return list(range(start, stop + 1))


def _assert_fed(state, prompts, mask):
  """The model was fed each row's prompt then its tokens but the last."""
  fed = np.asarray(state.cache.fed)
  assert int(state.cache.index) <= state.cache.max_len
  for r in range(prompts.shape[0]):
    real = list(np.asarray(prompts[r])[np.asarray(mask[r])])
    expected = real + _generated(state, r)[:-1]
    assert [t for t in fed[r] if t >= 0] == expected, r
  # Nothing was written past the index.
  assert np.all(fed[:, int(state.cache.index):] == -2)


TOY = Decoder(toy_step, eos_id=EOS, stop_ids=STOPS, max_gen=16)


def test_toy_eos_stops_each_row():
  state, prompts, mask = _toy_run(TOY, [11, 2])
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32)
  assert _generated(state, 0) == [12, 13, 14, 15]
  assert _generated(state, 1) == _count(3, 15)  # passes stop ids: until=eos
  np.testing.assert_array_equal(state.finished, [True, True])
  np.testing.assert_array_equal(state.tokens[0, 4:], 0)
  np.testing.assert_array_equal(state.logprobs[0, 4:], 0.0)
  assert np.all(np.asarray(state.logprobs[0, :4]) < 0)
  _assert_fed(state, prompts, mask)
  # A finished state is left alone.
  again = TOY.decode(TOY_PARAMS, state, Greedy(), 32)
  chex.assert_trees_all_equal(again, state)


def test_toy_finished_rows_freeze_while_others_continue():
  state, prompts, mask = _toy_run(TOY, [11, 2, 5])
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 6)  # token cap
  np.testing.assert_array_equal(state.num_generated, [4, 7, 7])
  np.testing.assert_array_equal(state.finished, [True, False, False])
  assert _generated(state, 1) == _count(3, 9)
  assert _generated(state, 2) == _count(6, 12)
  np.testing.assert_array_equal(state.tokens[0, 4:], 0)
  _assert_fed(state, prompts, mask)
  # Masked slots: row 0 sat out the last 3 of the 6 decode steps.
  assert list(np.asarray(state.cache.fed[0, 4:10])) == [12, 13, 14, -1, -1, -1]


def test_toy_until_step_returns_when_all_rows_end_their_step():
  state, prompts, mask = _toy_run(TOY, [4, 9])
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32, "step")
  # Row 0: 5 6 7 | 8 9 10 11 | 12 13 14 15.  Row 1: 10 11 | 12 13 14 15.
  assert _generated(state, 0) == [5, 6, 7]
  assert _generated(state, 1) == [10, 11]
  np.testing.assert_array_equal(state.step_done, [True, True])
  np.testing.assert_array_equal(state.finished, [False, False])
  # Two decode iterations (row 0 needed 6, 7); not max_steps of them.
  assert int(state.cache.index) == 4 + 2
  _assert_fed(state, prompts, mask)

  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32, "step")
  np.testing.assert_array_equal(state.step_start, [3, 2])
  assert _generated(state, 0)[3:] == [8, 9, 10, 11]
  assert _generated(state, 1)[2:] == [12, 13, 14, 15]
  np.testing.assert_array_equal(state.step_done, [True, False])
  np.testing.assert_array_equal(state.finished, [False, True])
  _assert_fed(state, prompts, mask)

  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32, "step")
  assert int(state.step_start[0]) == 7
  assert _generated(state, 0)[7:] == [12, 13, 14, 15]
  assert _generated(state, 1) == [10, 11, 12, 13, 14, 15]
  np.testing.assert_array_equal(state.finished, [True, True])
  _assert_fed(state, prompts, mask)


def test_toy_first_step_includes_the_prefill_token():
  """`tokens[step_start:num_generated]` is the whole current step."""
  state, _, _ = _toy_run(TOY, [4, 9])
  np.testing.assert_array_equal(state.step_start, [0, 0])
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32, "step")
  np.testing.assert_array_equal(state.step_start, [0, 0])


def test_toy_step_resumes_after_token_cap():
  """A row cut mid-step by max_steps keeps its step_start when resumed."""
  state, _, _ = _toy_run(TOY, [0, 9])  # row 0: 1 .. 7, row 1: 10 11
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 2, "step")
  assert _generated(state, 0) == [1, 2, 3]
  np.testing.assert_array_equal(state.step_done, [False, True])
  start = np.asarray(state.step_start)
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32, "step")
  assert int(state.step_start[0]) == int(start[0])
  assert _generated(state, 0)[int(state.step_start[0]):] == _count(1, 7)


def test_toy_max_gen_finishes_row():
  decoder = Decoder(toy_step, eos_id=EOS, max_gen=5)
  state, prompts, mask = _toy_run(decoder, [11, 0])
  state = decoder.decode(TOY_PARAMS, state, Greedy(), 32)
  assert _generated(state, 0) == [12, 13, 14, 15]
  assert _generated(state, 1) == [1, 2, 3, 4, 5]
  np.testing.assert_array_equal(state.finished, [True, True])
  assert state.tokens.shape == (2, 5)
  _assert_fed(state, prompts, mask)


def test_toy_cache_end_stops_without_writing_out_of_range():
  state, prompts, mask = _toy_run(TOY, [0, 1], max_len=7)  # 4 prompt + 3
  state = TOY.decode(TOY_PARAMS, state, Greedy(), 32)
  assert int(state.cache.index) == 7
  np.testing.assert_array_equal(state.num_generated, [4, 4])
  np.testing.assert_array_equal(state.finished, [False, False])
  _assert_fed(state, prompts, mask)  # each slot written once, in order
  again = TOY.decode(TOY_PARAMS, state, Greedy(), 32)
  chex.assert_trees_all_equal(again, state)


def test_toy_sampler_arrays_do_not_recompile_decode():
  state, _, _ = _toy_run(TOY, [0, 1])
  sizes = []
  for temperature in ([1.0, 0.0], [0.0, 2.0]):
    out = TOY.decode(TOY_PARAMS, state,
                     Sampling(temperature=jnp.asarray(temperature)), 3)
    # pylint: disable-next=protected-access
    sizes.append(Decoder.decode._cache_size())
  assert sizes[0] == sizes[1]
  assert _generated(out, 0)[:4] == [1, 2, 3, 4]  # confident toy logits


def test_invalid_until_and_max_gen():
  state, _, _ = _toy_run(TOY, [0, 1])
  with pytest.raises(ValueError, match="until"):
    TOY.decode(TOY_PARAMS, state, Greedy(), 4, "sentence")
  with pytest.raises(ValueError, match="max_gen"):
    Decoder(toy_step, eos_id=EOS, max_gen=0)


# --- Real model --------------------------------------------------------------

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                  n_kv_heads=2, d_ff=64, max_len=32)
MAX_GEN = 8
PROMPT_LEN = 6
CACHE_LEN = PROMPT_LEN + MAX_GEN
_lm = jax.jit(functools.partial(lm_logits, CFG))


@pytest.fixture(scope="module")
def params():
  # The same (config, key) as the model tests: one compile per process.
  return init_params(CFG, jax.random.key(0))


def _ragged_prompts(seed, lengths=(3, 5, 6), left=(True, False, True)):
  """`[3, PROMPT_LEN]` prompts, left- or right-padded with garbage ids."""
  rng = np.random.default_rng(seed)
  real = [rng.integers(1, CFG.vocab_size, size=n) for n in lengths]
  prompts = rng.integers(0, CFG.vocab_size, size=(len(lengths), PROMPT_LEN))
  mask = np.zeros_like(prompts, bool)
  for r, (toks, is_left) in enumerate(zip(real, left)):
    where = slice(PROMPT_LEN - len(toks), None) if is_left else slice(len(toks))
    prompts[r, where] = toks
    mask[r, where] = True
  return jnp.asarray(prompts, jnp.int32), jnp.asarray(mask), real


def _naive_greedy(params, real, steps):
  """Full forward + argmax per token, rows left-aligned, no mask, no cache."""
  buf = np.zeros((len(real), CACHE_LEN), np.int32)
  lens = [len(t) for t in real]
  for r, toks in enumerate(real):
    buf[r, :len(toks)] = toks
  out = [[] for _ in real]
  for _ in range(steps):
    logits = np.asarray(_lm(params, jnp.asarray(buf)))
    for r in range(len(real)):
      nxt = int(np.argmax(logits[r, lens[r] - 1]))
      out[r].append(nxt)
      buf[r, lens[r]] = nxt
      lens[r] += 1
  return out


@pytest.fixture(scope="module")
def reference(params):
  prompts, mask, real = _ragged_prompts(0)
  return prompts, mask, real, _naive_greedy(params, real, MAX_GEN)


@pytest.fixture(scope="module")
def decoder(reference):
  """EOS is row 0's 4th greedy token, so EOS handling is exercised."""
  eos = reference[3][0][3]
  return Decoder(decode_step_fn(CFG), eos_id=int(eos), max_gen=MAX_GEN)


def _run(decoder, params, prompts, mask, sampler, keys, steps=MAX_GEN,
         num_samples=1):
  cache = init_cache(CFG, prompts.shape[0], CACHE_LEN)
  state = decoder.prefill(params, prompts, mask, cache, sampler, keys,
                          num_samples)
  return decoder.decode(params, state, sampler, steps)


def test_greedy_matches_naive_loop_on_ragged_prompts(params, reference,
                                                     decoder):
  prompts, mask, _, naive = reference
  state = _run(decoder, params, prompts, mask, Greedy(), _keys(3))
  assert any(decoder.eos_id in row for row in naive)
  for r, row in enumerate(naive):
    expected = row[:row.index(decoder.eos_id) + 1] if (
        decoder.eos_id in row) else row
    assert _generated(state, r) == expected, r
  assert bool(state.finished.all())  # by EOS (row 0) or by max_gen
  assert int(state.num_generated[0]) <= 4
  np.testing.assert_array_equal(state.tokens[0, 4:], 0)


def _sequence_logprobs(params, real, state):
  """log_softmax of a full forward at each generated token, `[b, MAX_GEN]`."""
  buf = np.zeros((len(real), CACHE_LEN), np.int32)
  out = np.zeros((len(real), MAX_GEN), np.float32)
  for r, toks in enumerate(real):
    buf[r, :len(toks)] = toks
    gen = _generated(state, r)
    buf[r, len(toks):len(toks) + len(gen)] = gen
  logp = np.asarray(jax.nn.log_softmax(_lm(params, jnp.asarray(buf)), -1))
  for r, toks in enumerate(real):
    for i, tok in enumerate(_generated(state, r)):
      out[r, i] = logp[r, len(toks) - 1 + i, tok]
  return out


def test_logprobs_are_model_log_softmax(params, reference, decoder):
  prompts, mask, real, _ = reference
  state = _run(decoder, params, prompts, mask, Sampling(temperature=1.0),
               _keys(3, seed=1))
  expected = _sequence_logprobs(params, real, state)
  chex.assert_trees_all_close(state.logprobs, expected, atol=2e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_prefill_with_the_head_at_the_last_token_equals_every_position(
    tied):
  # `models.prefill_fn` computes the LM head at each row's last real token
  # only; the state (cache, first token, its log-prob) is the same.
  cfg = dataclasses.replace(CFG, tie_embeddings=tied)
  params = init_params(cfg, jax.random.key(3))
  prompts, mask, _ = _ragged_prompts(4)
  keys = _keys(6, seed=4)
  sampler = Sampling(temperature=1.0)
  states = [Decoder(decode_step_fn(cfg), eos_id=0, max_gen=MAX_GEN,
                    prefill_fn=fn).prefill(
                        params, prompts, mask, init_cache(cfg, 3, CACHE_LEN),
                        sampler, keys, 2)
            for fn in (None, prefill_fn(cfg))]
  chex.assert_trees_all_close(states[0].replace(rngs=None),
                              states[1].replace(rngs=None), atol=1e-5)
  np.testing.assert_array_equal(states[0].tokens, states[1].tokens)


def test_shared_prefix_fan_out_equals_repeated_prompts(params, decoder):
  # Two prompts, two samples each: rows must come out [p0, p0, p1, p1].
  prompts, mask, _ = _ragged_prompts(1, lengths=(4, 6), left=(True, False))
  keys = _keys(4, seed=2)
  sampler = Sampling(temperature=1.0)
  fan = decoder.prefill(params, prompts, mask, init_cache(CFG, 2, CACHE_LEN),
                        sampler, keys, 2)
  rep_prompts, rep_mask = (jnp.repeat(x, 2, axis=0) for x in (prompts, mask))
  rep = decoder.prefill(params, rep_prompts, rep_mask,
                        init_cache(CFG, 4, CACHE_LEN), sampler, keys)
  chex.assert_trees_all_close(fan.replace(rngs=None), rep.replace(rngs=None),
                              atol=1e-5)
  np.testing.assert_array_equal(fan.tokens, rep.tokens)
  fan = decoder.decode(params, fan, sampler, MAX_GEN)
  rep = decoder.decode(params, rep, sampler, MAX_GEN)
  np.testing.assert_array_equal(fan.tokens, rep.tokens)
  np.testing.assert_array_equal(fan.num_generated, rep.num_generated)
  # Different keys per sample really give different samples.
  assert _generated(fan, 0) != _generated(fan, 1)


def test_sampling_deterministic_and_row_independent(params, reference,
                                                    decoder):
  prompts, mask, real, _ = reference
  keys = _keys(3, seed=3)
  sampler = Sampling(temperature=1.0)
  first = _run(decoder, params, prompts, mask, sampler, keys)
  again = _run(decoder, params, prompts, mask, sampler, keys)
  chex.assert_trees_all_equal(first.tokens, again.tokens)
  # Row 1 (right-padded, 5 tokens) moves to row 2, left-padded, among
  # different neighbours, with the same key.
  other, other_mask, _ = _ragged_prompts(7, lengths=(2, 6, 5),
                                         left=(False, True, True))
  other = other.at[2, 1:].set(jnp.asarray(real[1]))
  other_mask = other_mask.at[2].set(jnp.arange(PROMPT_LEN) >= 1)
  other_keys = jnp.concatenate([_keys(2, seed=9), keys[1:2]])
  moved = _run(decoder, params, other, other_mask, sampler, other_keys)
  assert _generated(moved, 2) == _generated(first, 1)
  chex.assert_trees_all_close(moved.logprobs[2], first.logprobs[1], atol=1e-5)


def test_take_then_continue_equals_continue_then_take(params, reference,
                                                      decoder):
  prompts, mask, _, _ = reference
  cache = init_cache(CFG, 3, CACHE_LEN)
  state = decoder.prefill(params, prompts, mask, cache, Greedy(), _keys(3))
  rows = jnp.asarray([2, 0, 0])
  a = decoder.decode(params, state.take(rows), Greedy(), MAX_GEN)
  b = decoder.decode(params, state, Greedy(), MAX_GEN).take(rows)
  for field in ("tokens", "num_generated", "finished", "pending"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), field)
  chex.assert_trees_all_close(a.logprobs, b.logprobs, atol=1e-5)
  assert isinstance(a, DecodeState)


def _assert_same_step_state(got, want):
  """Same tokens, step bookkeeping and cache bookkeeping; logprobs to 1e-6."""
  for field in ("tokens", "num_generated", "step_start", "step_done",
                "finished", "pending"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field),
                                  field)
  for field in ("index", "valid", "next_pos"):
    np.testing.assert_array_equal(getattr(got.cache, field),
                                  getattr(want.cache, field), field)
  chex.assert_trees_all_close(got.logprobs, want.logprobs, atol=1e-6)


def test_a_step_resumed_in_a_grown_cache_equals_a_full_cache(params,
                                                             reference):
  prompts, mask, _, _ = reference
  # One token in 8 ends a step; no EOS, so every row keeps going.
  decoder = Decoder(decode_step_fn(CFG), eos_id=-1,
                    stop_ids=tuple(range(0, CFG.vocab_size, 8)),
                    max_gen=MAX_GEN)
  sampler, keys, short = Sampling(temperature=1.0), _keys(3, seed=4), 2

  def first_step(slots):
    state = decoder.prefill(params, prompts, mask, init_cache(CFG, 3, slots),
                            sampler, keys)
    return decoder.decode(params, state, sampler, MAX_GEN, "step")

  full, cut = first_step(CACHE_LEN), first_step(PROMPT_LEN + short)
  assert int(cut.cache.index) == PROMPT_LEN + short
  assert not bool((cut.step_done | cut.finished).all())  # cut mid-step
  assert int(full.cache.index) > PROMPT_LEN + short
  grown = cut.replace(cache=cut.cache.grow(CACHE_LEN))
  assert grown.cache.k[0].shape == full.cache.k[0].shape
  grown = decoder.decode(params, grown, sampler, MAX_GEN, "step", False)
  for _ in range(2):  # the resumed step, then a fresh one
    _assert_same_step_state(grown, full)
    grown, full = (decoder.decode(params, s, sampler, MAX_GEN, "step")
                   for s in (grown, full))


def test_kv_cache_grow_and_rollback_of_a_shorter_valid():
  cache = init_cache(CFG, 2, 4)
  cache = cache.replace(valid=cache.valid.at[:, :2].set(True),
                        index=jnp.int32(2))
  grown = cache.grow(6)
  assert grown.max_len == 6 and grown.k[1].shape[2] == 6
  np.testing.assert_array_equal(grown.valid[:, :4], cache.valid)
  assert not bool(grown.valid[:, 4:].any())
  back = grown.rollback(cache.index, cache.valid, cache.next_pos)
  np.testing.assert_array_equal(back.valid, grown.valid)
  assert cache.grow(4) is cache
  with pytest.raises(ValueError, match="grow"):
    cache.grow(3)


def test_stragglers_decoded_apart_and_put_back_equal_one_batch(params,
                                                              reference):
  prompts, mask, _, _ = reference
  decoder = Decoder(decode_step_fn(CFG), eos_id=-1,
                    stop_ids=tuple(range(0, CFG.vocab_size, 4)),
                    max_gen=MAX_GEN)
  sampler, keys = Sampling(temperature=1.0), _keys(6, seed=5)
  state = decoder.prefill(params, prompts, mask, init_cache(CFG, 3, CACHE_LEN),
                          sampler, keys, 2)
  want = decoder.decode(params, state, sampler, MAX_GEN, "step")
  part = decoder.decode(params, state, sampler, MAX_GEN, "step", True, 2)
  going = np.flatnonzero(~np.asarray(part.step_done | part.finished))
  assert 1 <= len(going) <= 2
  assert int(part.cache.index) < int(want.cache.index)
  sub = part.take(jnp.asarray(going))
  sub = decoder.decode(params, sub, sampler, MAX_GEN, "step", False)
  got = part.put(jnp.asarray(going), sub)
  _assert_same_step_state(got, want)
  np.testing.assert_array_equal(jax.random.key_data(got.rngs),
                                jax.random.key_data(want.rngs))
