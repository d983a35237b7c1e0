"""Training objectives as pure functions of (config, params, batch).

Each returns `(loss, metrics)`: a scalar float32 loss to differentiate and a
dict of scalar metrics (`loss`, `accuracy`, `weight_sum`). Losses are weighted
means over the batch's weights, so padding and prompt tokens (weight 0) never
count, and a batch whose weights are all zero has loss 0.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ttcjax import models

Batch = Mapping[str, jax.Array]
# Optional keys of packed rows (`ttcjax.data.packing`); absent: one example
# per row.
SEGMENT_KEYS = ("segment_ids", "positions")
Metrics = dict[str, jax.Array]
LossFn = Callable[[models.ModelConfig, Any, Batch], tuple[jax.Array, Metrics]]

# Batch keys each objective reads, besides `tokens` and `token_mask`.
OBJECTIVE_KEYS = {
    "lm": ("loss_weights",),
    "reward": ("reward_targets", "reward_weights"),
}


def _weighted_mean(values: jax.Array, weights: jax.Array,
                   weight_sum: jax.Array) -> jax.Array:
  total = jnp.sum(values * weights)
  return jnp.where(weight_sum > 0, total / jnp.where(weight_sum > 0,
                                                     weight_sum, 1.0), 0.0)


def weighted_cross_entropy(logits: jax.Array, targets: jax.Array,
                           weights: jax.Array) -> tuple[jax.Array, Metrics]:
  """Softmax cross-entropy, averaged over `weights`.

  Args:
    logits: `[..., vocab]` float.
    targets: `[...] int32` token ids.
    weights: `[...]` float, weight of each prediction.

  Returns:
    `(loss, metrics)`: loss is `sum(w * nll) / sum(w)`; metrics hold `loss`,
    `accuracy` (weighted argmax hit rate) and `weight_sum`.
  """
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)
  nll = log_z - target_logits[..., 0]
  weight_sum = jnp.sum(weights)
  loss = _weighted_mean(nll, weights, weight_sum)
  hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return loss, {"loss": loss,
                "accuracy": _weighted_mean(hits, weights, weight_sum),
                "weight_sum": weight_sum}


def weighted_sigmoid_bce(logits: jax.Array, targets: jax.Array,
                         weights: jax.Array) -> tuple[jax.Array, Metrics]:
  """Binary cross-entropy with logits against soft targets, weighted mean.

  Args:
    logits: `[...]` float, reward-head outputs (pre-sigmoid).
    targets: `[...]` float in [0, 1], e.g. Monte-Carlo success rates.
    weights: `[...]` float.

  Returns:
    `(loss, metrics)`: loss is the weighted mean of
    `-t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))`; `accuracy` is the
    weighted rate of `(sigmoid(x) > 0.5) == (t > 0.5)`.
  """
  logits = logits.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  # softplus(x) - x t, in the form that never overflows.
  per_position = (jnp.maximum(logits, 0.0) - logits * targets +
                  jnp.log1p(jnp.exp(-jnp.abs(logits))))
  weight_sum = jnp.sum(weights)
  loss = _weighted_mean(per_position, weights, weight_sum)
  hits = ((logits > 0) == (targets > 0.5)).astype(jnp.float32)
  return loss, {"loss": loss,
                "accuracy": _weighted_mean(hits, weights, weight_sum),
                "weight_sum": weight_sum}


def _segments(batch: Batch) -> dict[str, jax.Array]:
  """The model's `segment_ids`/`positions` keywords of a (packed) batch."""
  return {k: batch[k] for k in SEGMENT_KEYS if k in batch}


def lm_loss(config: models.ModelConfig, params: Any,
            batch: Batch) -> tuple[jax.Array, Metrics]:
  """Next-token cross-entropy: logits at i predict `tokens[:, i + 1]`.

  Args:
    config: model shape.
    params: model parameters.
    batch: `tokens [b, L] int32`, `token_mask [b, L] bool`,
      `loss_weights [b, L] float32` (weight of predicting `tokens[:, i]`);
      packed rows add `segment_ids` and `positions` (`ttcjax.data.packing`):
      attention stays within a segment, and a segment's first token is
      never predicted from the previous segment.

  Returns:
    `(loss, metrics)` as in `weighted_cross_entropy`.
  """
  tokens = batch["tokens"]
  outputs, _ = models.apply(config, params, tokens, batch["token_mask"],
                            heads=("lm",), **_segments(batch))
  weights = batch["loss_weights"][:, 1:]
  if "segment_ids" in batch:
    segments = batch["segment_ids"]
    weights = weights * (segments[:, 1:] == segments[:, :-1])
  return weighted_cross_entropy(outputs["lm"][:, :-1], tokens[:, 1:], weights)


def reward_loss(config: models.ModelConfig, params: Any,
                batch: Batch) -> tuple[jax.Array, Metrics]:
  """Soft-label BCE of the reward head at every weighted position.

  Args:
    config: model shape, with `reward_head=True`.
    params: model parameters including `reward_head`.
    batch: `tokens`, `token_mask`, `reward_targets [b, L] float32` and
      `reward_weights [b, L] float32` (PRM: step ends; ORM: last token);
      packed rows add `segment_ids` and `positions` (see `lm_loss`).

  Returns:
    `(loss, metrics)` as in `weighted_sigmoid_bce`.
  """
  outputs, _ = models.apply(config, params, batch["tokens"],
                            batch["token_mask"], heads=("reward",),
                            **_segments(batch))
  return weighted_sigmoid_bce(outputs["reward"], batch["reward_targets"],
                              batch["reward_weights"])


_LOSSES = {"lm": lm_loss, "reward": reward_loss}


def loss_fn(objective: str) -> LossFn:
  """The loss function of a `TrainConfig.objective`."""
  try:
    return _LOSSES[objective]
  except KeyError:
    raise ValueError(f"unknown objective {objective!r}; expected one of "
                     f"{sorted(_LOSSES)}") from None
