"""A model's verifier scores read through its KV cache.

`extend_fn(config, tags)` is `IncrementalVerifier.extend_fn` for a ttcjax
model: `(params, tokens[n, t], token_mask[n, t], cache) -> (scores[n, t],
cache)`, the reward head's probabilities (or, with `tags`, the step-tag
probabilities of the LM head) at each new position, the cache advanced by
the new tokens. Core only (models and scoring), so a bare JAX host
(`bench/device_check.py`) scores as the sweeps do.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ttcjax import models
from ttcjax.verifiers import scoring


@functools.cache
def extend_fn(config: models.ModelConfig,
              tags: tuple[int, int] | None = None) -> Callable[..., Any]:
  """`reward_score_fn`'s scores read through a KV cache (`(good, bad)`
  LM-head ids with `tags`); one object per (config, tags), so jitted
  callers compile once."""
  head = "reward" if tags is None else "lm"

  def extend(params, tokens, token_mask, cache):
    out, cache = models.apply(config, params, tokens, token_mask, cache,
                              (head,))
    if tags is None:
      return scoring.reward_probs(out[head]), cache
    return scoring.step_tag_probs(out[head], *tags), cache

  return extend
