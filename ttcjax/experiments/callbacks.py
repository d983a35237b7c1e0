"""Models as search callbacks: the one place a model becomes a `PolicyFns` or
a `VerifierFns`.

Search and scoring take callbacks and never import a model class
(`ttcjax.search.base`); the experiments plug ttcjax's models in through
these adapters (`sweep_runner` for checkpoint sweeps, `embedded` and
`evaluate` for the embedded study).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from ttcjax import decoding, models, verifiers
from ttcjax.search import base
from ttcjax.verifiers import cached


def sampler_for(temperature: float) -> decoding.Sampler:
  """Greedy at temperature 0, else sampling at `temperature` (> 0)."""
  if temperature < 0:
    raise ValueError(f"sampling temperature must be >= 0, got {temperature}")
  return (decoding.Sampling(float(temperature)) if temperature > 0
          else decoding.Greedy())


def policy_fns(config: models.ModelConfig, params: Any, *, eos_id: int,
               stop_ids: Sequence[int], pad_id: int,
               detokenize: Callable[[Sequence[int]], str] | None,
               max_gen: int, prompt_len: int, cache_len: int,
               temperature: float,
               shard: Callable[[Any], Any] | None = None) -> base.PolicyFns:
  """A ttcjax LM as `PolicyFns`.

  Args:
    config: the model's config.
    params: its parameters.
    eos_id: end of a solution.
    stop_ids: ids that end a step.
    pad_id: prompt padding.
    detokenize: ids -> text for `Candidate.text` (None: no text).
    max_gen: tokens per candidate, EOS included.
    prompt_len: fixed prompt width.
    cache_len: cache slots per row (`PolicyFns.max_len`).
    temperature: proposal temperature (`sampler_for`).
    shard: places decode rows and caches (None: one device).
  """
  decoder = decoding.Decoder(models.decode_step_fn(config), eos_id=eos_id,
                             stop_ids=tuple(stop_ids), max_gen=max_gen,
                             prefill_fn=models.prefill_fn(config))
  return base.PolicyFns(
      decoder=decoder, params=params,
      init_cache=functools.partial(models.init_cache, config),
      max_len=cache_len, sampler=sampler_for(temperature), pad_id=pad_id,
      prompt_len=prompt_len, detokenize=detokenize, shard=shard)


@functools.cache
def reward_score_fn(config: models.ModelConfig, rows: int | None = None,
                    tags: tuple[int, int] | None = None) -> verifiers.ScoreFn:
  """`sigmoid(reward head)` as a score_fn (with `tags`, P(good) over the
  (good, bad) LM-head ids instead), reading at most `rows` rows per forward
  pass (None: all); one object per (config, rows, tags), so the scorer
  compiles once (`step_scores` takes it as a static argument)."""
  if tags is None:
    score_fn = verifiers.reward_head_score_fn(
        functools.partial(models.reward_scores, config))
  else:
    score_fn = verifiers.step_tag_score_fn(
        functools.partial(models.lm_logits, config), *tags)
  return score_fn if rows is None else verifiers.chunked_score_fn(score_fn,
                                                                  rows)


# `IncrementalVerifier.extend_fn` of a ttcjax model (lives in the core
# package so bench/device_check.py can use it without optax/orbax).
extend_fn = cached.extend_fn


def incremental_verifier(config: models.ModelConfig, cache_len: int,
                         tags: tuple[int, int] | None = None,
                         rows: int | None = None
                         ) -> base.IncrementalVerifier:
  """The model as an `IncrementalVerifier` (reward head, or with `tags` the
  (good, bad) LM-head ids) with at most `cache_len` cache slots per row.

  A tree search then holds a cache of `cache_len` slots for every row of its
  batch besides the policy's, and reads at most `rows` rows a call (None:
  all; more are fed in groups, as `reward_score_fn` chunks its rows)."""
  return base.IncrementalVerifier(
      init_cache=functools.partial(models.init_cache, config),
      extend_fn=extend_fn(config, tags), max_len=cache_len, rows=rows)


def verifier_fns(config: models.ModelConfig, params: Any, *, max_len: int,
                 pad_id: int, rows: int | None = None,
                 shard: Callable[[Any], Any] | None = None,
                 cache_len: int | None = None) -> base.VerifierFns:
  """A reward-head model as `VerifierFns` (prompt + solution input),
  scoring `rows` rows per forward pass (None: all); `shard` places them.
  With `cache_len`, tree searches read it incrementally through a cache of
  at most that many slots per row (`incremental_verifier`)."""
  if not config.reward_head:
    raise ValueError("verifier_fns needs a model with a reward head "
                     "(ModelConfig.reward_head=False)")
  return base.VerifierFns(
      score_fn=reward_score_fn(config, rows), params=params, max_len=max_len,
      pad_id=pad_id, shard=shard,
      incremental=(None if cache_len is None else
                   incremental_verifier(config, cache_len, rows=rows)))
