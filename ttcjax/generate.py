"""Batch text generation: a model, a tokenizer's ids and the decoder, joined.

This is the one place that plugs a `ModelConfig`'s step function into the
model-agnostic `ttcjax.decoding.Decoder`; entry points and search callbacks
build on it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import decoding, models


def pad_prompts(prompts: Sequence[Sequence[int]],
                pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into `([n, max_len] int32, [n, max_len] bool)`."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  return decoding.left_pad(prompts, pad_id)


@dataclasses.dataclass(frozen=True)
class Generation:
  """Samples for a batch of prompts; rows are prompt-major.

  Attributes:
    tokens: per row, the generated ids (EOS included when emitted).
    logprobs: per row, the model log-prob of each generated id.
    finished: per row, whether it ended with EOS or a stop id (else it hit
      the token cap).
    prompt_tokens: tokens prefilled (each prompt once, however many samples).
    generated_tokens: tokens generated over all rows.
    seconds: wall time of prefill plus decode, compile excluded if warm.
  """
  tokens: list[list[int]]
  logprobs: list[list[float]]
  finished: list[bool]
  prompt_tokens: int
  generated_tokens: int
  seconds: float


def generate(config: models.ModelConfig, params: Any,
             prompts: Sequence[Sequence[int]], *, num_samples: int = 1,
             sampler: decoding.Sampler = decoding.Sampling(1.0),
             max_new_tokens: int = 128, eos_id: int = 1,
             stop_ids: Sequence[int] = (), rng: jax.Array | None = None
             ) -> Generation:
  """Samples `num_samples` continuations of each prompt.

  Each prompt is prefilled once and its cache broadcast to its samples.

  Args:
    config: model shape.
    params: model parameters.
    prompts: token id lists.
    num_samples: continuations per prompt.
    sampler: `decoding.Greedy()` or `decoding.Sampling(...)`.
    max_new_tokens: cap on generated tokens per row.
    eos_id: end-of-sequence id.
    stop_ids: ids that end generation like EOS (for whole-solution sampling
      these are usually empty; step-level search uses `Decoder` directly).
    rng: key; row `i` uses `fold_in(rng, i)`.

  Returns:
    A `Generation`.
  """
  if num_samples < 1 or max_new_tokens < 1:
    raise ValueError(f"num_samples={num_samples} and max_new_tokens="
                     f"{max_new_tokens} must be >= 1")
  rng = jax.random.key(0) if rng is None else rng
  tokens, mask = pad_prompts(prompts)
  n = len(prompts) * num_samples
  rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(n))
  decoder = decoding.Decoder(models.decode_step_fn(config), eos_id=eos_id,
                             stop_ids=tuple(stop_ids), max_gen=max_new_tokens,
                             prefill_fn=models.prefill_fn(config))
  cache = models.init_cache(config, len(prompts),
                            tokens.shape[1] + max_new_tokens)
  start = time.perf_counter()
  state = decoder.sample(params, tokens, mask, cache, sampler, rngs,
                         num_samples, max_new_tokens - 1,
                         until="step" if stop_ids else "eos")
  out_tokens, out_logp, num = jax.device_get(
      (state.tokens, state.logprobs, state.num_generated))
  seconds = time.perf_counter() - start
  ends = {eos_id, *stop_ids}
  finished = [num[i] > 0 and int(out_tokens[i, num[i] - 1]) in ends
              for i in range(n)]
  return Generation(
      tokens=[out_tokens[i, :num[i]].tolist() for i in range(n)],
      logprobs=[out_logp[i, :num[i]].tolist() for i in range(n)],
      finished=finished,
      prompt_tokens=int(mask.sum()), generated_tokens=int(num.sum()),
      seconds=seconds)
