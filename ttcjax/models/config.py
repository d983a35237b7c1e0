"""Model hyper-parameters."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "llama3")
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
  """Shape of a Llama / Qwen2 / Qwen3 / Mistral-style decoder-only transformer.

  Attributes:
    vocab_size: number of token ids.
    d_model: width of the residual stream.
    n_layers: number of decoder blocks.
    n_heads: query heads.
    n_kv_heads: key/value heads (grouped-query attention); divides n_heads.
    head_dim: per-head width; defaults to d_model // n_heads.
    d_ff: hidden width of the SwiGLU MLP.
    rope_theta: RoPE base frequency.
    rope_type: RoPE frequency scaling: 'default' (none), 'linear' (every
      frequency divided by `rope_factor`) or 'llama3' (Llama 3.1: low
      frequencies divided by `rope_factor`, high ones kept, a smooth ramp
      between, set by the next three fields).
    rope_factor: scaling factor ('linear', 'llama3').
    rope_low_freq_factor: 'llama3': wavelengths above
      `rope_original_max_len / rope_low_freq_factor` are scaled.
    rope_high_freq_factor: 'llama3': wavelengths below
      `rope_original_max_len / rope_high_freq_factor` are kept.
    rope_original_max_len: 'llama3': the pre-training context length.
    qk_norm: RMSNorm over each head of q and k before RoPE (Qwen3).
    sliding_window: each token attends to itself and the `sliding_window - 1`
      real tokens before it (Mistral); None: to every earlier token.
    norm_eps: RMSNorm epsilon.
    qkv_bias: whether q/k/v projections have a bias (Qwen2 does).
    tie_embeddings: whether the LM head reuses the input embedding.
    param_dtype: storage dtype of parameters ('float32', 'bfloat16', ...).
    dtype: compute dtype of activations and matmuls.
    max_len: longest sequence (prompt plus generation) the model is used for.
    reward_head: whether the model carries a scalar reward head (PRM/ORM).
    reward_mlp: the reward head is `Dense(d, d) -> ReLU -> Dense(d, 1)`
      (Qwen2.5-Math-PRM) instead of one `Dense(d, 1)`; needs `reward_head`.
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int | None = None
  head_dim: int | None = None
  d_ff: int
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  qk_norm: bool = False
  sliding_window: int | None = None
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  tie_embeddings: bool = True
  param_dtype: str = "float32"
  dtype: str = "float32"
  max_len: int = 2048
  reward_head: bool = False
  reward_mlp: bool = False

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
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"ModelConfig.rope_type must be one of {ROPE_TYPES}, "
                       f"got {self.rope_type!r}")
    if self.rope_factor <= 0:
      raise ValueError(f"ModelConfig.rope_factor must be > 0, got "
                       f"{self.rope_factor}")
    if self.rope_type == "llama3" and not (
        0 < self.rope_low_freq_factor < self.rope_high_freq_factor):
      raise ValueError(
          f"ModelConfig.rope_low_freq_factor={self.rope_low_freq_factor} "
          f"must be > 0 and < rope_high_freq_factor="
          f"{self.rope_high_freq_factor} (rope_type='llama3')")
    if not isinstance(self.rope_original_max_len, int) or (
        self.rope_original_max_len <= 0):
      raise ValueError(f"ModelConfig.rope_original_max_len must be a positive"
                       f" int, got {self.rope_original_max_len!r}")
    if self.sliding_window is not None and (
        not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
      raise ValueError(f"ModelConfig.sliding_window must be a positive int or"
                       f" None, got {self.sliding_window!r}")
    if self.reward_mlp and not self.reward_head:
      raise ValueError("ModelConfig.reward_mlp=True needs reward_head=True")
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
    if self.qk_norm:
      attn += 2 * hd
    mlp = 3 * d * self.d_ff
    per_layer = attn + mlp + 2 * d
    total = self.n_layers * per_layer + d
    if include_embeddings:
      total += self.vocab_size * d
      if not self.tie_embeddings:
        total += d * self.vocab_size
    if self.reward_mlp:
      total += d * d + d
    if self.reward_head:
      total += d + 1
    return total
