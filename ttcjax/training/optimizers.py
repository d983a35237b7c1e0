"""The optax chain: global-norm clipping, then AdamW on a warmup-cosine schedule.

Weight decay is masked by parameter path: leaves named `scale` (RMSNorm) and
`bias` (q/k/v and reward-head biases) are never decayed; every other leaf
(projection kernels, embeddings) is.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ttcjax.training.config import TrainConfig

NO_DECAY_NAMES = frozenset({"scale", "bias"})


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
  """Linear warmup then cosine decay, as a function of the update count.

  Update `s` (0-based, optax's `count`) uses
  `peak * (s + 1) / warmup_steps` while `s < warmup_steps` (so the first
  update is not wasted at rate 0), then
  `end + (peak - end) * (1 + cos(pi * p)) / 2` with
  `p = (s - warmup_steps) / (total_steps - warmup_steps)` clipped to [0, 1]
  and `end = peak * final_learning_rate_ratio`: the peak at
  `s = warmup_steps` and `end` at `s = total_steps`.

  Args:
    config: supplies learning_rate, warmup_steps, total_steps and
      final_learning_rate_ratio.

  Returns:
    `schedule(step) -> float32 learning rate`.
  """
  peak = config.learning_rate
  end = peak * config.final_learning_rate_ratio
  warmup = config.warmup_steps
  decay_steps = max(config.total_steps - warmup, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * (step + 1) / max(warmup, 1)
    progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    cosine = end + (peak - end) * 0.5 * (1 + jnp.cos(math.pi * progress))
    return jnp.where(step < warmup, warm, cosine)

  return schedule


def _leaf_name(path) -> str:
  last = path[-1]
  for attr in ("key", "name", "idx"):
    if hasattr(last, attr):
      return str(getattr(last, attr))
  return str(last)


def decay_mask(params: Any) -> Any:
  """True for the leaves that weight decay applies to (not norms, biases)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _leaf_name(path) not in NO_DECAY_NAMES, params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """`clip_by_global_norm(clip_norm)` then AdamW with `decay_mask`."""
  adamw = optax.adamw(
      learning_rate=learning_rate_schedule(config), b1=config.b1,
      b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
      mask=decay_mask)
  if config.clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
