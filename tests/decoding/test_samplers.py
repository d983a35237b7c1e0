"""Samplers: greedy ties, temperature, top-k / top-p sets, exact frequencies.

Most cases share two compiled shapes ([4, 8] draws, [64, 50] single calls) by
passing every field as a per-row array; a few use scalar fields on purpose.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.decoding import Greedy, Sampling
from ttcjax.decoding.samplers import argmax, inverse_cdf

NUM_DRAWS = 20_000


def _keys(n, seed=0):
  """`[n]` threefry keys made on the host (no compile per `n`)."""
  data = np.random.default_rng(seed).integers(0, 2**32, size=(n, 2),
                                              dtype=np.uint32)
  return jax.random.wrap_key_data(data)


@jax.jit
def _sample(sampler, logits, keys):
  return sampler(logits, keys)


@functools.partial(jax.jit, static_argnums=2)
def _draws(sampler, logits, num_draws=NUM_DRAWS):
  """`[num_draws, batch]` tokens, an independent key per draw and row."""
  keys = jax.random.split(jax.random.key(0), num_draws * logits.shape[0])
  return jax.vmap(lambda k: sampler(logits, k))(keys.reshape(num_draws, -1))


def _per_row(batch, temperature=1.0, top_k=0, top_p=1.0):
  """A Sampling whose every field is a `[batch]` array (filters switched on)."""
  full = lambda x, dtype: jnp.broadcast_to(jnp.asarray(x, dtype), (batch,))
  return Sampling(temperature=full(temperature, jnp.float32),
                  top_k=full(top_k, jnp.int32), top_p=full(top_p, jnp.float32))


def _reference_probs(logits, temperature, top_k, top_p):
  """Independent float64 statement of what each row should sample from."""
  logits = np.asarray(logits, np.float64)
  batch, vocab = logits.shape
  out = np.zeros_like(logits)
  # None switches a filter off, like top_k=0 and top_p=1.
  top_k = 0 if top_k is None else top_k
  top_p = 1.0 if top_p is None else top_p
  temperature, top_k, top_p = (np.broadcast_to(np.asarray(x, np.float64),
                                               (batch,))
                               for x in (temperature, top_k, top_p))
  for r in range(batch):
    if temperature[r] == 0:
      out[r, np.argmax(logits[r])] = 1.0
      continue
    p = np.exp(logits[r] / temperature[r] - np.max(logits[r]) / temperature[r])
    order = np.argsort(-p, kind="stable")
    k = vocab if top_k[r] <= 0 else min(int(top_k[r]), vocab)
    keep = np.zeros(vocab, bool)
    keep[order[:k]] = True
    p = np.where(keep, p, 0.0) / np.sum(p[keep])
    before = np.cumsum(p[order]) - p[order]
    keep_p = np.zeros(vocab, bool)
    keep_p[order[before < top_p[r]]] = True
    p = np.where(keep & keep_p, p, 0.0)
    out[r] = p / p.sum()
  return out


def _assert_matches(draws, probs):
  """Draws stay in the support of `probs`, with matching frequencies."""
  draws, probs = np.asarray(draws), np.asarray(probs, np.float64)
  n, batch = draws.shape
  freq = np.stack([np.bincount(draws[:, r], minlength=probs.shape[1]) / n
                   for r in range(batch)])
  outside = (freq > 0) & (probs == 0)
  assert not outside.any(), f"ids outside the support: {np.argwhere(outside)}"
  assert np.max(np.abs(freq - probs)) < 0.01, np.round(freq - probs, 3)
  for f, p in zip(freq, probs):
    keep = p > 0
    chi2 = n * np.sum((f[keep] - p[keep])**2 / p[keep])
    dof = max(int(keep.sum()) - 1, 1)
    # Far in the tail of chi2(dof) (mean dof, sd sqrt(2 dof)); keys are fixed.
    assert chi2 < dof + 6 * np.sqrt(2 * dof) + 10, (chi2, dof)


def _random_logits(shape, seed=0, scale=2.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale,
                     jnp.float32)


# Probabilities in a scrambled order, so nothing depends on id order. Sorted:
# 0.4 (id 3), 0.25 (1), 0.15 (6), 0.1 (4), 0.05 (7), 0.03 (0), ...
_NUCLEUS = np.log(np.tile([0.03, 0.25, 0.005, 0.4, 0.1, 0.015, 0.15, 0.05],
                          (4, 1)))
_RANDOM = np.asarray(_random_logits((4, 8), seed=1))
_WITH_INF = _RANDOM.copy()
_WITH_INF[3, ::2] = -np.inf

# name: (logits [4, 8], temperature, top_k, top_p); arrays are per row.
_CASES = {
    "softmax": (_WITH_INF, [1.0, 2.0, 0.5, 1.0], 0, 1.0),
    "zero_temperature_rows": (_RANDOM * 0.2, [0.0, 1.0, 0.0, 3.0], 0, 1.0),
    "top_k": (_RANDOM * 0.3, 1.0, [1, 3, 5, 0], 1.0),
    # Nuclei: {3}, {3, 1}, {3, 1, 6} (0.65 < 0.7), everything.
    "top_p": (_NUCLEUS, 1.0, 0, [0.3, 0.6, 0.7, 1.0]),
    # Top-k first, then the nucleus of the renormalised survivors.
    "top_k_then_top_p": (_NUCLEUS, 1.0, [2, 2, 2, 0], [0.3, 0.7, 1.0, 0.6]),
    "temperature_then_top_p": (_NUCLEUS, [2.0, 0.5, 2.0, 0.5], 0,
                               [0.7, 0.7, 1.0, 0.9]),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_per_row_sampling_matches_reference(name):
  logits, temperature, top_k, top_p = _CASES[name]
  logits = jnp.asarray(logits, jnp.float32)
  draws = _draws(_per_row(4, temperature, top_k, top_p), logits)
  _assert_matches(draws, _reference_probs(logits, temperature, top_k, top_p))


@pytest.mark.parametrize("sampler", [
    Sampling(),
    Sampling(temperature=0.7, top_k=3, top_p=0.9),
], ids=["scalar_no_filters", "scalar_filters"])
def test_scalar_fields_match_reference(sampler):
  logits = jnp.asarray(_RANDOM * 0.5)
  draws = _draws(sampler, logits)
  _assert_matches(draws, _reference_probs(logits, sampler.temperature,
                                          sampler.top_k, sampler.top_p))


def test_reference_sanity():
  """The reference itself: the nuclei stated in `_CASES` comments."""
  probs = _reference_probs(_NUCLEUS, 1.0, 0, [0.3, 0.6, 0.7, 1.0])
  assert [set(np.flatnonzero(p)) for p in probs] == [
      {3}, {3, 1}, {3, 1, 6}, set(range(8))]


# --- Greedy ------------------------------------------------------------------


def test_argmax_and_greedy_match_jnp_including_ties():
  rng = np.random.default_rng(0)
  # Few distinct values: most rows have tied maxima.
  logits = np.asarray(rng.integers(0, 3, size=(200, 37)), np.float32)
  logits[0] = 0.0
  logits[1] = -np.inf
  logits[1, 5] = -1.0
  got_argmax, got_greedy = jax.jit(lambda x: (argmax(x), Greedy()(x, None)))(
      jnp.asarray(logits))
  expected = np.argmax(logits, axis=-1)
  assert got_argmax.dtype == jnp.int32
  np.testing.assert_array_equal(got_argmax, expected)
  np.testing.assert_array_equal(got_greedy, expected)
  assert expected[0] == 0 and expected[1] == 5


def _greedy(logits):
  return np.argmax(np.asarray(logits), -1)


def test_zero_temperature_is_greedy_even_with_filters():
  logits = _random_logits((64, 50))
  for top_k, top_p in [(0, 1.0), (5, 0.5), (50, 0.1)]:
    got = _sample(_per_row(64, 0.0, top_k, top_p), logits, _keys(64))
    np.testing.assert_array_equal(got, _greedy(logits))


def test_top_k_one_is_greedy():
  logits = _random_logits((64, 50), seed=4)
  temperature = np.tile([0.5, 1.0, 5.0, 100.0], 16)
  got = _sample(_per_row(64, temperature, 1, 1.0), logits, _keys(64))
  np.testing.assert_array_equal(got, _greedy(logits))


def test_positive_temperature_samples():
  """The greedy checks above would pass for a sampler that ignores keys."""
  logits = _random_logits((64, 50), seed=5, scale=0.1)
  got = _sample(_per_row(64, 1.0), logits, _keys(64))
  assert np.mean(np.asarray(got) != _greedy(logits)) > 0.5


def test_row_draw_depends_only_on_its_logits_and_key():
  logits, keys = _random_logits((64, 50), seed=6, scale=0.5), _keys(64)
  sampler = _per_row(64, 1.0, 0, 0.9)
  full = np.asarray(_sample(sampler, logits, keys))
  perm = np.random.default_rng(0).permutation(64)
  permuted = _sample(sampler, logits[perm], keys[perm])
  np.testing.assert_array_equal(permuted, full[perm])


# --- inverse_cdf -------------------------------------------------------------

_inverse_cdf = jax.jit(inverse_cdf, static_argnums=2)


@pytest.mark.parametrize("block", [4, 3, 128])
def test_inverse_cdf_hand_made(block):
  # vocab 14 with block 4: blocks [0 1 0 0][2 0 0 0][0 0 0 0][5 0 | pad pad].
  probs = np.asarray([0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0], np.float32)
  cases = {0.0: 1, 0.124: 1, 0.125: 4, 0.25: 4, 0.3749: 4,
           0.375: 12, 0.5: 12, 0.9999999: 12}
  u = jnp.asarray(list(cases), jnp.float32)
  got = _inverse_cdf(jnp.asarray(np.tile(probs, (len(cases), 1))), u, block)
  np.testing.assert_array_equal(got, list(cases.values()))


@pytest.mark.parametrize("vocab, block", [(10, 4), (10, 3), (130, 128),
                                          (7, 128), (257, 16)])
def test_inverse_cdf_matches_searchsorted(vocab, block):
  rng = np.random.default_rng(vocab * block)
  masses = rng.integers(0, 4, size=(64, vocab)) * (rng.random((64, vocab)) < .5)
  masses[:, -1] = 0  # trailing zero mass
  masses[:8, block:2 * block] = 0  # a whole zero block (where it exists)
  masses[masses.sum(-1) == 0, 0] = 1
  probs = masses.astype(np.float32)
  u = rng.random(64).astype(np.float32)
  u[:4] = 0.0
  got = np.asarray(_inverse_cdf(jnp.asarray(probs), jnp.asarray(u), block))
  cdf = np.cumsum(probs, -1)  # integer masses: exact in float32
  target = u * cdf[:, -1]
  expected = [np.searchsorted(c, t, side="right") for c, t in zip(cdf, target)]
  np.testing.assert_array_equal(got, expected)
  assert np.all(probs[np.arange(64), got] > 0)


# --- Validation and tracing --------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=np.array([1.0, -1.0])), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=jnp.asarray([0.5, -0.1])), "top_p"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_k=np.array([1.0, 2.0])), "top_k"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_sampling_validation(kwargs, field):
  with pytest.raises(ValueError, match=f"Sampling.{field}"):
    Sampling(**kwargs)


def test_valid_edge_values_accepted():
  Sampling(temperature=0.0, top_p=1.0, top_k=0)
  Sampling(temperature=np.zeros(3), top_k=np.asarray([0, 1, 2]))


def test_per_row_arrays_do_not_recompile():
  traces = []

  @jax.jit
  def sample(sampler, logits, keys):
    traces.append(1)
    return sampler(logits, keys)

  logits, keys = _random_logits((3, 16), seed=7), _keys(3)
  outs = []
  for t, k, p in [([0.0, 1.0, 2.0], [1, 2, 0], [1.0, 0.5, 0.9]),
                  ([1.0, 0.5, 0.0], [4, 0, 2], [0.3, 1.0, 0.7])]:
    sampler = Sampling(temperature=jnp.asarray(t), top_k=jnp.asarray(k),
                       top_p=jnp.asarray(p))
    outs.append(sample(sampler, logits, keys))
  # The traced values really are used: row 0 is greedy only the first time.
  assert int(outs[0][0]) == int(jnp.argmax(logits[0]))
  assert int(outs[1][2]) == int(jnp.argmax(logits[2]))
  # Python scalars are traced leaves too.
  sample(Sampling(temperature=0.7), logits, keys)
  sample(Sampling(temperature=1.3), logits, keys)
  assert len(traces) == 2
  assert sample._cache_size() == 2  # pylint: disable=protected-access
