"""Scoring every step of a batch of candidates in one verifier forward pass.

A verifier is plugged in as a callback

    score_fn(params, tokens[n, L], token_mask[n, L]) -> [n, L] float32

giving, at every position, a score in [0, 1] for "the solution is on track
after this token". `reward_head_score_fn` and `step_tag_score_fn` build one
from a model's raw outputs, and `chunked_score_fn` bounds the rows one
forward pass reads; this module never imports a model class.

`step_scores` reads the score at each step's end (the position whose output
has seen the whole step) and packs them per row, so a PRM reads a candidate
once, not once per step. `aggregate` turns per-step scores into one number
per candidate: 'last' (the paper's choice), 'min', 'prod' or 'mean'.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
AGGREGATIONS = ("last", "min", "prod", "mean")


def reward_probs(logits: jax.Array) -> jax.Array:
  """Scores from reward-head logits: `sigmoid`, as float32."""
  return jax.nn.sigmoid(logits.astype(jnp.float32))


def step_tag_probs(logits: jax.Array, good_id: int, bad_id: int
                   ) -> jax.Array:
  """Scores from `[..., V]` LM-head logits at step tags: P(good)
  renormalised over the (good, bad) tag ids, as float32."""
  logits = logits.astype(jnp.float32)
  return jax.nn.sigmoid(logits[..., good_id] - logits[..., bad_id])


def reward_head_score_fn(apply_fn: Callable[[Any, jax.Array, jax.Array],
                                            jax.Array]) -> ScoreFn:
  """A score_fn from a scalar reward head.

  Args:
    apply_fn: `(params, tokens[n, L], token_mask[n, L]) -> [n, L]` raw
      reward-head outputs (logits), e.g. `lambda p, t, m:
      models.reward_scores(cfg, p, t, m)`.

  Returns:
    A score_fn returning `sigmoid(apply_fn(...))` as float32.
  """

  def score_fn(params, tokens, token_mask):
    return reward_probs(apply_fn(params, tokens, token_mask))

  return score_fn


def step_tag_score_fn(logits_fn: Callable[[Any, jax.Array, jax.Array],
                                          jax.Array],
                      good_id: int, bad_id: int) -> ScoreFn:
  """A score_fn for LM-head PRMs that predict a good/bad tag after each step.

  Hugging Face PRMs such as Math-Shepherd read a step tag token after every
  step and predict '+' or '-' as the next token; the step's score is
  `P(good)` renormalised over the two tags. The verifier input must carry
  the tag (see `ttcjax.search.StepTagInput`), and the score is read at it.

  Args:
    logits_fn: `(params, tokens[n, L], token_mask[n, L]) -> [n, L, V]`
      next-token logits.
    good_id: id of the 'good step' token.
    bad_id: id of the 'bad step' token.

  Returns:
    A score_fn returning `softmax([logit_good, logit_bad])[0]` per position.
  """
  good_id, bad_id = int(good_id), int(bad_id)
  if good_id == bad_id:
    raise ValueError(f"step_tag_score_fn: good_id and bad_id are both "
                     f"{good_id}")

  def score_fn(params, tokens, token_mask):
    return step_tag_probs(logits_fn(params, tokens, token_mask), good_id,
                          bad_id)

  return score_fn


def chunked_score_fn(score_fn: ScoreFn, rows: int) -> ScoreFn:
  """`score_fn` reading at most `rows` rows per forward pass.

  The memory of one verifier forward pass (attention scores, MLP hidden
  activations) grows with the rows it reads; this bounds it. Inside jit,
  `[n, L]` inputs are split into `ceil(n / rows)` chunks of exactly `rows`
  rows (the last chunk padded by repeating the last row, so every chunk has
  one shape), scored one after another (`lax.map`), and the outputs put
  back in row order. Chunk `k` holds rows `k, k + c, k + 2c, ...` (`c`
  chunks): rows laid out over devices in contiguous blocks stay spread over
  every device in each chunk, without moving between devices when `rows`
  divides over the devices and `n` over `rows`.

  Args:
    score_fn: the verifier callback.
    rows: most rows per `score_fn` call (>= 1).

  Returns:
    A score_fn with the same outputs as `score_fn` (up to float rounding
    of differently shaped matrix products). Build it once per verifier: it
    is a static jit argument of `step_scores`.
  """
  if not isinstance(rows, int) or rows < 1:
    raise ValueError(f"chunked_score_fn: rows must be a positive int, got "
                     f"{rows!r}")

  def chunked(params, tokens, token_mask):
    n = tokens.shape[0]
    if n <= rows:
      return score_fn(params, tokens, token_mask)
    count = -(-n // rows)

    def split(x):  # [n, ...] -> [count, rows, ...]
      pad = [(0, count * rows - n)] + [(0, 0)] * (x.ndim - 1)
      x = jnp.pad(x, pad, mode="edge")
      return x.reshape(rows, count, *x.shape[1:]).swapaxes(0, 1)

    out = jax.lax.map(lambda chunk: score_fn(params, *chunk),
                      (split(tokens), split(token_mask)))
    return out.swapaxes(0, 1).reshape(count * rows, *out.shape[2:])[:n]

  return chunked


@functools.partial(jax.jit, static_argnums=0, static_argnames="max_steps")
def step_scores(score_fn: ScoreFn, params: Any, tokens: jax.Array,
                token_mask: jax.Array, step_end_mask: jax.Array,
                max_steps: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Scores every step of every row in one `score_fn` call.

  Args:
    score_fn: the verifier callback (static: keep one object per verifier,
      or every call recompiles).
    params: verifier parameters.
    tokens: `[n, L] int32` verifier inputs; any padding, left or right.
    token_mask: `[n, L] bool`, True on real tokens.
    step_end_mask: `[n, L] bool`, True where a step's score is read.
      Positions that are padding are ignored.
    max_steps: width `S` of the packed output (default `L`); steps beyond it
      are dropped.

  Returns:
    `(scores [n, S] float32, step_mask [n, S] bool)`: row `i`'s step `j`
    score at `[i, j]`, steps in order, packed to the left.
  """
  n, length = tokens.shape
  width = length if max_steps is None else max_steps
  scores = score_fn(params, tokens, token_mask).astype(jnp.float32)
  ends = step_end_mask.astype(bool) & token_mask.astype(bool)
  rank = jnp.cumsum(ends, axis=1) - 1
  column = jnp.where(ends & (rank < width), rank, width)  # width: dropped
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, length))
  packed = jnp.zeros((n, width), jnp.float32).at[rows, column].set(
      scores, mode="drop")
  mask = jnp.zeros((n, width), bool).at[rows, column].set(True, mode="drop")
  return packed, mask


def aggregate(scores, mask, how: str = "last"):
  """One score per row from its step scores.

  Works on numpy arrays (returns numpy) and on jax arrays (returns jax, and
  traces under jit).

  Args:
    scores: `[n, S] float` packed step scores (from `step_scores`).
    mask: `[n, S] bool` valid steps; valid steps form a prefix of each row.
    how: 'last' (score after the final step; Snell et al.'s choice), 'min',
      'prod' or 'mean'.

  Returns:
    `[n] float32`; rows without any step get 0.
  """
  if how not in AGGREGATIONS:
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
  xp = np if isinstance(scores, np.ndarray) and isinstance(
      mask, np.ndarray) else jnp
  scores = xp.asarray(scores, xp.float32)
  mask = xp.asarray(mask, bool)
  if scores.shape[-1] == 0:  # no step anywhere
    return xp.zeros(scores.shape[:-1], xp.float32)
  count = xp.sum(mask, axis=-1)
  if how == "last":
    last = xp.maximum(count - 1, 0)
    out = xp.take_along_axis(scores, last[:, None], axis=-1)[:, 0]
  elif how == "min":
    out = xp.min(xp.where(mask, scores, xp.inf), axis=-1)
  elif how == "prod":
    out = xp.prod(xp.where(mask, scores, 1.0), axis=-1)
  else:
    out = xp.sum(xp.where(mask, scores, 0.0), axis=-1) / xp.maximum(count, 1)
  return xp.where(count > 0, out, 0.0).astype(xp.float32)
