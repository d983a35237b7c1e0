"""Losses checked by hand on tiny arrays, and against the model's own outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax import testing
from ttcjax import models
from ttcjax.training import losses

_CONFIG = models.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4,
                             n_kv_heads=2, d_ff=64, max_len=16,
                             reward_head=True)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _tiny_params(config, seed):
  """Numpy params shaped like the model's init (no init compile needed)."""
  return testing.numpy_params(config, seed, stddev=None)


def test_cross_entropy_matches_manual_log_softmax():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 3, 5)).astype(np.float32) * 3
  targets = rng.integers(0, 5, (2, 3)).astype(np.int32)
  weights = np.array([[0, 1, 2], [1, 0, 0.5]], np.float32)
  loss, metrics = losses.weighted_cross_entropy(logits, targets, weights)

  nll = -np.take_along_axis(_log_softmax(logits.astype(np.float64)),
                            targets[..., None], -1)[..., 0]
  want = (nll * weights).sum() / weights.sum()
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  hits = logits.argmax(-1) == targets
  np.testing.assert_allclose(metrics["accuracy"],
                             (hits * weights).sum() / weights.sum(), rtol=1e-6)
  assert float(metrics["weight_sum"]) == pytest.approx(4.5)
  assert float(metrics["loss"]) == float(loss)


def test_cross_entropy_ignores_zero_weight_positions():
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((2, 4, 6)).astype(np.float32)
  targets = rng.integers(0, 6, (2, 4)).astype(np.int32)
  weights = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], np.float32)
  changed = logits.copy()
  changed[weights == 0] = 100 * rng.standard_normal((4, 6))
  a, _ = losses.weighted_cross_entropy(logits, targets, weights)
  b, _ = losses.weighted_cross_entropy(changed, targets, weights)
  assert float(a) == float(b)


def test_all_zero_weights_give_zero_loss_and_finite_grads():
  logits = jnp.ones((1, 3, 4))
  targets = jnp.zeros((1, 3), jnp.int32)
  weights = jnp.zeros((1, 3))
  loss, metrics = losses.weighted_cross_entropy(logits, targets, weights)
  assert float(loss) == 0.0 and float(metrics["weight_sum"]) == 0.0
  grad = jax.grad(lambda x: losses.weighted_cross_entropy(
      x, targets, weights)[0])(logits)
  assert np.all(np.isfinite(grad)) and not np.any(grad)
  bce_grad = jax.grad(lambda x: losses.weighted_sigmoid_bce(
      x, weights, weights)[0])(jnp.ones((1, 3)))
  assert np.all(np.isfinite(bce_grad))


def test_bce_soft_labels_by_hand():
  logits = np.array([[-2.0, 0.5, 3.0, 0.0]], np.float32)
  targets = np.array([[0.6, 0.8, 1.0, 0.5]], np.float32)
  weights = np.array([[1.0, 2.0, 1.0, 0.0]], np.float32)
  loss, metrics = losses.weighted_sigmoid_bce(logits, targets, weights)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  per = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  np.testing.assert_allclose(loss, (per * weights).sum() / weights.sum(),
                             rtol=1e-6)
  # (p > .5) vs (t > .5): miss, hit, hit; the 4th has weight 0.
  np.testing.assert_allclose(metrics["accuracy"], 3 / 4, rtol=1e-6)
  # The minimum over logits is at sigmoid(x) = t: gradient zero there.
  x_star = np.log(targets / (1 - targets + 1e-30))[:, :2]
  grad = jax.grad(lambda x: losses.weighted_sigmoid_bce(
      x, targets[:, :2], weights[:, :2])[0])(x_star)
  np.testing.assert_allclose(grad, 0, atol=1e-6)


def test_bce_is_stable_for_large_logits():
  logits = np.array([100.0, -100.0, 100.0], np.float32)
  targets = np.array([1.0, 1.0, 0.0], np.float32)
  loss, _ = losses.weighted_sigmoid_bce(logits, targets, np.ones(3))
  np.testing.assert_allclose(loss, 200 / 3, rtol=1e-5)


def _batch(seed):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 32, (2, 8)).astype(np.int32)
  mask = np.ones((2, 8), bool)
  mask[1, 5:] = False  # right padding
  loss_weights = np.zeros((2, 8), np.float32)
  loss_weights[0, 3:] = 1  # prompt of 3 tokens
  loss_weights[1, 2:5] = 1
  reward_targets = np.zeros((2, 8), np.float32)
  reward_weights = np.zeros((2, 8), np.float32)
  reward_targets[0, [2, 7]] = [0.75, 0.25]
  reward_weights[0, [2, 7]] = 1
  reward_targets[1, 4], reward_weights[1, 4] = 1.0, 1  # ORM-style: last token
  return dict(tokens=tokens, token_mask=mask, loss_weights=loss_weights,
              reward_targets=reward_targets, reward_weights=reward_weights)


def test_lm_loss_shifts_targets_and_uses_loss_weights():
  params = _tiny_params(_CONFIG, 0)
  batch = _batch(0)
  loss, metrics = jax.jit(losses.lm_loss, static_argnums=0)(
      _CONFIG, params, batch)
  logits = np.asarray(models.lm_logits(_CONFIG, params, batch["tokens"],
                                       batch["token_mask"]), np.float64)
  logp = _log_softmax(logits)
  total = weight = 0.0
  for b in range(2):
    for i in range(1, 8):  # logits at i - 1 predict tokens[i]
      w = batch["loss_weights"][b, i]
      total += -w * logp[b, i - 1, batch["tokens"][b, i]]
      weight += w
  np.testing.assert_allclose(loss, total / weight, rtol=1e-5)
  assert float(metrics["weight_sum"]) == weight == 8


def test_reward_loss_uses_reward_head_at_weighted_positions():
  params = _tiny_params(_CONFIG, 1)
  batch = _batch(1)
  loss, metrics = jax.jit(losses.reward_loss, static_argnums=0)(
      _CONFIG, params, batch)
  scores = np.asarray(models.reward_scores(_CONFIG, params, batch["tokens"],
                                           batch["token_mask"]), np.float64)
  p = 1 / (1 + np.exp(-scores))
  t, w = batch["reward_targets"], batch["reward_weights"]
  per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  np.testing.assert_allclose(loss, (per * w).sum() / w.sum(), rtol=1e-5)
  assert float(metrics["weight_sum"]) == 3


def test_loss_fn_names_unknown_objective():
  assert losses.loss_fn("lm") is losses.lm_loss
  with pytest.raises(ValueError, match="'orm'"):
    losses.loss_fn("orm")
