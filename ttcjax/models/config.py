"""Model hyper-parameters."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


def as_dtype(name: str) -> Any:
  """Returns the jnp dtype for a dtype name such as 'bfloat16'."""
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(
        f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """Shape of a Llama/Qwen2-style decoder-only transformer.

  Attributes:
    vocab_size: number of token ids.
    d_model: width of the residual stream.
    n_layers: number of decoder blocks.
    n_heads: query heads.
    n_kv_heads: key/value heads (grouped-query attention); divides n_heads.
    head_dim: per-head width; defaults to d_model // n_heads.
    d_ff: hidden width of the SwiGLU MLP.
    rope_theta: RoPE base frequency.
    norm_eps: RMSNorm epsilon.
    qkv_bias: whether q/k/v projections have a bias (Qwen2 does).
    tie_embeddings: whether the LM head reuses the input embedding.
    param_dtype: storage dtype of parameters ('float32', 'bfloat16', ...).
    dtype: compute dtype of activations and matmuls.
    max_len: longest sequence (prompt plus generation) the model is used for.
    reward_head: whether the model carries a scalar reward head (PRM/ORM).
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int | None = None
  head_dim: int | None = None
  d_ff: int
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = True
  param_dtype: str = "float32"
  dtype: str = "float32"
  max_len: int = 2048
  reward_head: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff",
                 "max_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got "
                         f"{value!r}")
    if self.n_kv_heads is None:
      object.__setattr__(self, "n_kv_heads", self.n_heads)
    if self.head_dim is None:
      if self.d_model % self.n_heads:
        raise ValueError(
            f"ModelConfig.d_model={self.d_model} is not divisible by "
            f"n_heads={self.n_heads}; set head_dim explicitly")
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
    if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"ModelConfig.n_kv_heads={self.n_kv_heads} must be positive and "
          f"divide n_heads={self.n_heads}")
    if not isinstance(self.head_dim, int) or self.head_dim <= 0:
      raise ValueError(
          f"ModelConfig.head_dim must be a positive int, got {self.head_dim!r}")
    if self.head_dim % 2:
      raise ValueError(
          f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")
    if self.rope_theta <= 0:
      raise ValueError(f"ModelConfig.rope_theta must be > 0, got "
                       f"{self.rope_theta}")
    for name in ("param_dtype", "dtype"):
      try:
        as_dtype(getattr(self, name))
      except ValueError as e:
        raise ValueError(f"ModelConfig.{name}: {e}") from None

  @property
  def n_groups(self) -> int:
    """Query heads per key/value head."""
    return self.n_heads // self.n_kv_heads

  def replace(self, **changes) -> "ModelConfig":
    """Returns a copy with `changes` applied (and validated)."""
    return dataclasses.replace(self, **changes)

  def num_params(self, include_embeddings: bool = True) -> int:
    """Exact parameter count of the decoder (reward head included)."""
    d, h, kv, hd = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if self.qkv_bias:
      attn += h * hd + 2 * kv * hd
    mlp = 3 * d * self.d_ff
    per_layer = attn + mlp + 2 * d
    total = self.n_layers * per_layer + d
    if include_embeddings:
      total += self.vocab_size * d
      if not self.tie_embeddings:
        total += d * self.vocab_size
    if self.reward_head:
      total += d + 1
    return total
