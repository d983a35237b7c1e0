"""Llama / Mistral / Qwen2 / Qwen3-shaped decoder models (policy, PRM, ORM,
revision model)."""

from ttcjax.models.api import (abstract_params, apply, decode_step_fn,
                               init_params, lm_logits, param_shapes,
                               prefill_fn, reward_scores, strip_boxes)
from ttcjax.models.config import ModelConfig
from ttcjax.models.kv_cache import KVCache, init_cache
from ttcjax.models.transformer import Transformer

__all__ = [
    "KVCache", "ModelConfig", "Transformer", "abstract_params", "apply",
    "decode_step_fn", "init_cache", "init_params", "lm_logits",
    "param_shapes", "prefill_fn", "reward_scores", "strip_boxes",
]
