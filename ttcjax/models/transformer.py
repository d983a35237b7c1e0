"""Llama / Qwen2 / Qwen3 / Mistral-shaped decoder-only transformer in Flax.

RoPE (rotate-half convention, as in Hugging Face; plain, linear or Llama 3.1
frequency scaling), RMSNorm, SwiGLU MLP, grouped-query attention with
optional q/k/v bias, per-head q/k RMSNorm (Qwen3) and a sliding window
(Mistral), tied or untied embeddings, and an optional scalar reward head
(linear, or a two-layer MLP) on the same backbone (PRM / ORM).

Every parameter carries logical axis names (`ttcjax.sharding_rules` maps them
to the mesh); activations are constrained with logical names too, which is a
no-op outside a mesh.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ttcjax.models.config import ModelConfig, as_dtype
from ttcjax.models.kv_cache import KVCache
from ttcjax.sharding_rules import constrain

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

# Logical names of activations (separate from weight axes, as in MaxText).
# `ACT_` keeps them apart from the weight axes' names (and from `class MLP`).
ACT_BATCH, ACT_LENGTH, ACT_EMBED = ("activation_batch", "activation_length",
                                    "activation_embed")
ACT_HEADS, ACT_KV_HEADS, ACT_MLP, ACT_VOCAB = (
    "activation_heads", "activation_kv_heads", "activation_mlp",
    "activation_vocab")


def _param(module, name, init, shape, axes, config):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      as_dtype(config.param_dtype))


def rope_inv_freq(config: ModelConfig) -> jax.Array:
  """RoPE's inverse frequencies, `[head_dim // 2] float32`.

  Plain RoPE's `theta ** (-2i / head_dim)`, then the config's scaling, in
  float32 and in the order Hugging Face computes it ('linear': all divided
  by the factor; 'llama3': wavelengths above `original / low_freq_factor`
  divided by it, those below `original / high_freq_factor` kept, a linear
  ramp between).
  """
  half = config.head_dim // 2
  inv_freq = 1.0 / (config.rope_theta**(jnp.arange(0, half, dtype=jnp.float32)
                                        / half))
  factor = jnp.float32(config.rope_factor)
  if config.rope_type == "linear":
    inv_freq = inv_freq / factor
  elif config.rope_type == "llama3":
    old_len = jnp.float32(config.rope_original_max_len)
    low = jnp.float32(config.rope_low_freq_factor)
    high = jnp.float32(config.rope_high_freq_factor)
    wavelen = jnp.float32(2 * math.pi) / inv_freq
    scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv_freq = jnp.where(medium, smoothed, scaled)
  return inv_freq


def rope(x: jax.Array, positions: jax.Array,
         inv_freq: jax.Array) -> jax.Array:
  """Applies rotary embeddings.

  Args:
    x: `[batch, length, heads, head_dim]`.
    positions: `[batch, length] int32`.
    inv_freq: `[head_dim // 2]` inverse frequencies (`rope_inv_freq`).

  Returns:
    `x` rotated, same shape and dtype.
  """
  half = x.shape[-1] // 2
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, half]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array,
           mask: jax.Array) -> jax.Array:
  """Grouped-query dot-product attention.

  Queries are grouped under their key/value head so both products are plain
  batched matmuls over `(batch, kv_heads)`: no copy of the cache is made.

  Args:
    q: `[batch, q_len, heads, head_dim]`.
    k: `[batch, kv_heads, kv_len, head_dim]`.
    v: `[batch, kv_heads, kv_len, head_dim]`.
    mask: `[batch, q_len, kv_len] bool`, True where a query may attend.

  Returns:
    `[batch, q_len, heads, head_dim]`.
  """
  b, t, h, d = q.shape
  kh = k.shape[1]
  g = h // kh
  if t == 1:
    # One query per row (a decode step): multiply-and-reduce, which XLA:CPU
    # runs ~3x faster than tiny batched matmuls, and which is memory-bound
    # on accelerators either way.
    qg = q.reshape(b, kh, g, 1, d).astype(jnp.float32)
    scores = jnp.sum(qg * k[:, :, None].astype(jnp.float32), -1) / math.sqrt(d)
    scores = jnp.where(mask[:, None], scores, _MASK_VALUE)  # [b, kh, g, T]
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.sum(probs[..., None] * v[:, :, None].astype(jnp.float32), -2)
    return out.reshape(b, 1, h, d).astype(v.dtype)
  q = q.reshape(b, t, kh, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, d)
  scores = jnp.einsum("bkqd,bkTd->bkqT", q, k,
                      preferred_element_type=jnp.float32) / math.sqrt(d)
  mask = jnp.broadcast_to(mask[:, None, None], (b, 1, g, t, mask.shape[-1]))
  scores = jnp.where(mask.reshape(b, 1, g * t, -1), scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkqT,bkTd->bkqd", probs, v)
  return out.reshape(b, kh, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


class RMSNorm(nn.Module):
  """Root-mean-square norm, computed in float32."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],),
                   ("norm",), self.config)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) +
                              self.config.norm_eps)
    dtype = as_dtype(self.config.dtype)
    return x32.astype(dtype) * scale.astype(dtype)


class Projection(nn.Module):
  """`einsum` projection with logically named kernel (and optional bias)."""
  config: ModelConfig
  shape: tuple[int, ...]
  axes: tuple[str, ...]
  in_dims: int = 1
  use_bias: bool = False
  out_dtype: str | None = None  # e.g. 'float32' for logits

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    fan_in = math.prod(self.shape[:self.in_dims])
    init = nn.initializers.normal(stddev=1.0 / math.sqrt(fan_in))
    kernel = _param(self, "kernel", init, self.shape, self.axes, cfg)
    dtype = as_dtype(cfg.dtype)
    out_dtype = as_dtype(self.out_dtype) if self.out_dtype else None
    y = jax.lax.dot_general(
        x.astype(dtype), kernel.astype(dtype),
        ((tuple(range(x.ndim - self.in_dims, x.ndim)),
          tuple(range(self.in_dims))), ((), ())),
        preferred_element_type=out_dtype)
    if self.use_bias:
      bias = _param(self, "bias", nn.initializers.zeros,
                    self.shape[self.in_dims:], self.axes[self.in_dims:], cfg)
      y = y + bias.astype(y.dtype)
    return y


class Attention(nn.Module):
  """Grouped-query self-attention over the current tokens and the cache."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, kv, index):
    """See `Transformer.__call__`; `kv` is this layer's (k, v) or None."""
    cfg = self.config
    d, h, kh, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = Projection(cfg, (d, h, hd), ("embed", "heads", "head_dim"),
                   use_bias=cfg.qkv_bias, name="q_proj")(x)
    k = Projection(cfg, (d, kh, hd), ("embed", "kv_heads", "head_dim"),
                   use_bias=cfg.qkv_bias, name="k_proj")(x)
    v = Projection(cfg, (d, kh, hd), ("embed", "kv_heads", "head_dim"),
                   use_bias=cfg.qkv_bias, name="v_proj")(x)
    if cfg.qk_norm:  # per head, before RoPE (Qwen3)
      q = RMSNorm(cfg, name="q_norm")(q)
      k = RMSNorm(cfg, name="k_norm")(k)
    inv_freq = rope_inv_freq(cfg)
    q = constrain(rope(q, positions, inv_freq),
                  (ACT_BATCH, ACT_LENGTH, ACT_HEADS, None))
    k = rope(k, positions, inv_freq).transpose(0, 2, 1, 3)
    v = v.transpose(0, 2, 1, 3)  # [b, kv_heads, t, head_dim]
    if kv is not None:
      k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype),
                                       (0, 0, index, 0))
      v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype),
                                       (0, 0, index, 0))
    out = attend(q, k.astype(q.dtype), v.astype(q.dtype), mask)
    out = Projection(cfg, (h, hd, d), ("heads", "head_dim", "embed"),
                     in_dims=2, name="o_proj")(out)
    return constrain(out, (ACT_BATCH, ACT_LENGTH, ACT_EMBED)), (k, v)


class MLP(nn.Module):
  """SwiGLU feed-forward block."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    gate = Projection(cfg, (cfg.d_model, cfg.d_ff), ("embed", "mlp"),
                      name="gate_proj")(x)
    up = Projection(cfg, (cfg.d_model, cfg.d_ff), ("embed", "mlp"),
                    name="up_proj")(x)
    hidden = constrain(jax.nn.silu(gate) * up, (ACT_BATCH, ACT_LENGTH, ACT_MLP))
    return Projection(cfg, (cfg.d_ff, cfg.d_model), ("mlp", "embed"),
                      name="down_proj")(hidden)


class Block(nn.Module):
  """Pre-norm decoder block."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, kv, index):
    attn_out, kv = Attention(self.config, name="attn")(
        RMSNorm(self.config, name="attn_norm")(x), positions, mask, kv, index)
    x = x + attn_out
    x = x + MLP(self.config, name="mlp")(RMSNorm(self.config,
                                                 name="mlp_norm")(x))
    return constrain(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED)), kv


class Transformer(nn.Module):
  """Decoder-only transformer with LM and (optional) reward heads."""
  config: ModelConfig

  @nn.compact
  def __call__(
      self,
      tokens: jax.Array,
      token_mask: jax.Array | None = None,
      cache: KVCache | None = None,
      heads: Sequence[str] = ("lm",),
      segment_ids: jax.Array | None = None,
      positions: jax.Array | None = None,
  ) -> tuple[dict[str, jax.Array], KVCache | None]:
    """Runs the decoder.

    Args:
      tokens: `[batch, length] int32`.
      token_mask: `[batch, length] bool`, False for padding (left or right).
        Padding neither attends nor is attended to, nor advances positions.
      cache: if given, tokens are written at slots `cache.index + arange(len)`
        and attend to the cache's valid slots; the updated cache is returned.
      heads: which outputs to compute: 'lm' (`[b, t, vocab] float32`),
        'lm_last' (`[b, vocab] float32`, at each row's last real token),
        'reward' (`[b, t] float32`), 'hidden' (`[b, t, d_model]`).
      segment_ids: `[batch, length] int32` for packed rows
        (`ttcjax.data.packing`): a token attends only to tokens of its own
        segment. Without a cache only.
      positions: `[batch, length] int32` rotary positions (packed rows: the
        position within the segment); default the count of real tokens
        before each token. Without a cache only.

    Returns:
      (dict of the requested head outputs, updated cache or None).
    """
    cfg = self.config
    b, t = tokens.shape
    if cache is not None and (segment_ids is not None or
                              positions is not None):
      raise ValueError("Transformer: segment_ids and positions are for the "
                       "full-sequence (training) forward, not with a cache")
    if token_mask is None:
      token_mask = jnp.ones((b, t), bool)
    token_mask = token_mask.astype(bool)
    step = token_mask.astype(jnp.int32)
    offset = jnp.cumsum(step, axis=1) - step  # exclusive count of real tokens
    if cache is None:
      positions = offset if positions is None else positions
      slots = jnp.arange(t)
      valid = token_mask
      index = 0
    else:
      positions = cache.next_pos[:, None] + offset
      index = cache.index
      slots = index + jnp.arange(t)
      valid = jax.lax.dynamic_update_slice(cache.valid, token_mask, (0, index))
    key_slots = jnp.arange(valid.shape[1])
    mask = valid[:, None, :] & (key_slots[None, None, :] <= slots[None, :, None])
    if cfg.sliding_window is not None:
      # Distance in real tokens of each row, as positions count them, so a
      # row's window does not depend on its padding or its batch.
      key_pos = jnp.cumsum(valid, axis=1) - 1  # [b, slots]
      query_pos = jnp.take(key_pos, slots, axis=1)  # [b, t]
      mask &= (query_pos[:, :, None] - key_pos[:, None, :]) < cfg.sliding_window
    if segment_ids is not None:  # block-diagonal: packed examples stay apart
      mask &= segment_ids[:, :, None] == segment_ids[:, None, :]

    embedding = _param(self, "embedding",
                       nn.initializers.normal(stddev=cfg.d_model**-0.5),
                       (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg)
    x = jnp.take(embedding, tokens, axis=0).astype(as_dtype(cfg.dtype))
    x = constrain(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
    new_k, new_v = [], []
    for i in range(cfg.n_layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      x, (k, v) = Block(cfg, name=f"layer_{i}")(x, positions, mask, kv, index)
      new_k.append(k)
      new_v.append(v)
    x = RMSNorm(cfg, name="final_norm")(x)

    outputs = {}
    if "hidden" in heads:
      outputs["hidden"] = x
    if "lm" in heads or "lm_last" in heads:
      if cfg.tie_embeddings:
        lm_head = lambda h: jnp.einsum("btd,vd->btv", h,
                                       embedding.astype(h.dtype),
                                       preferred_element_type=jnp.float32)
      else:
        lm_head = Projection(cfg, (cfg.d_model, cfg.vocab_size),
                             ("embed", "vocab"), out_dtype="float32",
                             name="lm_head")
      if "lm" in heads:
        outputs["lm"] = constrain(
            lm_head(x).astype(jnp.float32), (ACT_BATCH, ACT_LENGTH, ACT_VOCAB))
      if "lm_last" in heads:
        # Only the last real position of each row (a prefill samples from
        # it): the `[b, t, vocab]` logits of a long prompt are never made.
        last = jnp.max(jnp.where(token_mask, jnp.arange(t), 0), axis=1)
        x_last = jnp.take_along_axis(x, last[:, None, None], axis=1)
        outputs["lm_last"] = constrain(
            lm_head(x_last)[:, 0].astype(jnp.float32), (ACT_BATCH, ACT_VOCAB))
    if cfg.reward_head and ("reward" in heads or self.is_initializing()):
      features = x
      if cfg.reward_mlp:
        features = jax.nn.relu(Projection(
            cfg, (cfg.d_model, cfg.d_model), ("embed", "mlp"), use_bias=True,
            name="reward_hidden")(x))
      reward = Projection(cfg, (cfg.d_model, 1), ("embed", None),
                          use_bias=True, out_dtype="float32",
                          name="reward_head")(features)
      outputs["reward"] = reward[..., 0].astype(jnp.float32)
    elif "reward" in heads and not self.is_initializing():
      raise ValueError("heads=('reward',) needs ModelConfig.reward_head=True")
    if (not cfg.tie_embeddings and self.is_initializing() and
        "lm" not in heads and "lm_last" not in heads):
      Projection(cfg, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
                 name="lm_head")(x)

    if cache is None:
      return outputs, None
    new_cache = cache.replace(
        k=tuple(new_k), v=tuple(new_v), valid=valid, index=index + t,
        next_pos=cache.next_pos + jnp.sum(step, axis=1))
    return outputs, new_cache
