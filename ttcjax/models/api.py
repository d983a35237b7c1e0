"""Functional entry points to the decoder: init, logits, rewards, decode step."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ttcjax.models.config import ModelConfig
from ttcjax.models.kv_cache import KVCache
from ttcjax.models.transformer import Transformer

Params = Any


def _init_variables(config: ModelConfig, rng: jax.Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Transformer(config).init(rng, tokens, heads=("lm", "reward"))


def strip_boxes(tree: Any) -> Any:
  """Removes flax's logical-axis boxes without applying any constraint.

  `nn.unbox` applies sharding constraints whenever a mesh is current, which
  fails on shape structs; plain stripping is what every caller here needs.
  """
  return jax.tree.map(lambda x: x.value, tree,
                      is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def param_shapes(config: ModelConfig) -> Params:
  """`jax.ShapeDtypeStruct` per parameter (no boxes)."""
  return strip_boxes(abstract_params(config))


def abstract_params(config: ModelConfig) -> Params:
  """Shapes of the parameters, boxed with their logical axis names."""
  return jax.eval_shape(functools.partial(_init_variables, config),
                        jax.random.key(0))["params"]


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: ModelConfig, rng: jax.Array) -> Params:
  """Randomly initialised parameters (plain arrays, no metadata boxes)."""
  return strip_boxes(_init_variables(config, rng)["params"])


def apply(config: ModelConfig, params: Params, tokens: jax.Array,
          token_mask: jax.Array | None = None, cache: KVCache | None = None,
          heads: tuple[str, ...] = ("lm",), *,
          segment_ids: jax.Array | None = None,
          positions: jax.Array | None = None):
  """Runs the decoder; see `Transformer.__call__` for arguments
  (`segment_ids` and `positions`: packed training rows, no cache)."""
  return Transformer(config).apply({"params": params}, tokens, token_mask,
                                   cache, heads, segment_ids, positions)


def lm_logits(config: ModelConfig, params: Params, tokens: jax.Array,
              token_mask: jax.Array | None = None) -> jax.Array:
  """Causal next-token logits without a cache.

  Args:
    config: model shape.
    params: parameters from `init_params`, `hf_import.load_hf` or a checkpoint.
    tokens: `[batch, length] int32`.
    token_mask: optional `[batch, length] bool`; False marks padding.

  Returns:
    `[batch, length, vocab] float32`.
  """
  return apply(config, params, tokens, token_mask)[0]["lm"]


def reward_scores(config: ModelConfig, params: Params, tokens: jax.Array,
                  token_mask: jax.Array | None = None) -> jax.Array:
  """The scalar reward head at every position, `[batch, length] float32`."""
  return apply(config, params, tokens, token_mask, heads=("reward",))[0]["reward"]


@functools.cache
def decode_step_fn(config: ModelConfig):
  """The `(params, tokens, token_mask, cache) -> (logits, cache)` callback.

  This is what `ttcjax.decoding` drives; it never sees the model class.
  Cached per config, so a `Decoder` holding it hashes the same each time and
  its jitted methods compile once.
  """

  def step(params, tokens, token_mask, cache):
    outputs, cache = apply(config, params, tokens, token_mask, cache)
    return outputs["lm"], cache

  return step


@functools.cache
def prefill_fn(config: ModelConfig):
  """The `(params, tokens, token_mask, cache) -> (last_logits, cache)`
  callback of `Decoder.prefill`: the logits `[batch, vocab] float32` at each
  row's last real token only, so a long prompt never materialises its
  `[batch, length, vocab]` logits. Cached per config, like
  `decode_step_fn`."""

  def prefill(params, tokens, token_mask, cache):
    outputs, cache = apply(config, params, tokens, token_mask, cache,
                           heads=("lm_last",))
    return outputs["lm_last"], cache

  return prefill
