"""Exact FLOPs accountant from a model's shape.

Every count here is in floating-point operations (FLOPs) and counts one
multiply-add as 2 FLOPs. Per token and per decoder layer a forward pass costs

  projections  2 * d * (n_heads + 2 * n_kv_heads) * head_dim  (q, k, v; GQA)
             + 2 * n_heads * head_dim * d                       (o)
             + 2 * 3 * d * d_ff                                 (gate, up, down)
  attention    2 * 2 * n_heads * head_dim * n_keys              (q.k and p.v)

plus, once per token, the output head: `2 * d * vocab` for the LM head (tied or
not: the product is the same) or `2 * d` for a scalar reward head (PRM/ORM).
The embedding lookup is a gather and costs nothing.

`n_keys` is how many keys a query is scored against, which is where the two
attention modes differ:

- `"causal"`: the keys a query may attend to (itself and earlier tokens): the
  useful work, a triangle for a prompt. Independent of cache size.
- `"dense"`: what `ttcjax.models.transformer.attend` actually computes: scores
  over every key slot, masked afterwards. Without a cache that is the full
  square over the sequence; with a cache it is every one of its `cache_len`
  slots. This is the mode that matches XLA's `cost_analysis` (see
  `tests/analysis/test_flops.py` and `bench/flops_vs_xla.py`).

Functions take `attention=None` to mean "dense when `cache_len` is given,
causal otherwise": naming the cache size asks about our implementation.

Elementwise work (RMSNorm, RoPE, softmax, SiLU, residual adds, biases) is not
counted by default: it is `O(d)` per token against `O(d^2)` for the matmuls.
`elementwise=True` adds a rough count calibrated on XLA's CPU cost analysis
(about 10 FLOPs per residual element per layer, 3 per rotated q/k element,
5 per MLP hidden unit, 6 per attention score); it brings the XLA cross-check
from within ~5% to within ~1% for small widths, and is not meant to be exact.

The paper's coarse conventions (Snell et al. 2024, Sec. 7) are here too:
`pretrain_flops_6nd`, `inference_flops` and `flops_matched_budget`.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import jax

from ttcjax.models.config import ModelConfig

ATTENTION_MODES = ("causal", "dense")
HEADS = ("lm", "reward", "none")
CONVENTIONS = {"2nd": 2, "4nd": 4}


def _count(name: str, value: Any, minimum: int = 0) -> int:
  """Validates an integer count (tokens, batch rows, keys)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def _amount(name: str, value: Any, positive: bool = False) -> float:
  """Validates a real quantity (parameters, tokens in the 6ND conventions)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a number, got {value!r}")
  if value < 0 or (positive and value == 0) or value != value:
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"{name} must be {bound}, got {value}")
  return float(value)


def _config(config: Any, name: str = "config") -> ModelConfig:
  if not isinstance(config, ModelConfig):
    raise TypeError(f"{name} must be a ttcjax ModelConfig, got "
                    f"{type(config).__name__}")
  return config


def _attention(attention: str | None, cache_len: int | None) -> str:
  if attention is None:
    return "causal" if cache_len is None else "dense"
  if attention not in ATTENTION_MODES:
    raise ValueError(f"attention must be one of {ATTENTION_MODES}, got "
                     f"{attention!r}")
  return attention


def _head(config: ModelConfig, head: str) -> str:
  if head not in HEADS:
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")
  if head == "reward" and not config.reward_head:
    raise ValueError("head='reward' needs a config with reward_head=True")
  return head


def matmul_flops_per_token(config: ModelConfig, head: str = "lm",
                           elementwise: bool = False) -> int:
  """FLOPs of one token's forward pass, excluding attention scores/values.

  Args:
    config: model shape.
    head: output head computed for the token: 'lm' (`d x vocab`), 'reward'
      (`d x 1`, PRM/ORM scoring) or 'none' (hidden states only).
    elementwise: add the rough per-token elementwise count (module docstring).

  Returns:
    FLOPs per token: all projections of all layers plus the head.
  """
  cfg = _config(config)
  head = _head(cfg, head)
  d, h, kv, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  layer = 2 * d * (h + 2 * kv) * hd + 2 * h * hd * d + 6 * d * cfg.d_ff
  if elementwise:
    layer += 10 * d + 3 * (h + kv) * hd + 5 * cfg.d_ff
    if cfg.qkv_bias:
      layer += (h + 2 * kv) * hd
  total = cfg.n_layers * layer
  reward = 2 * d + (2 * d * d if cfg.reward_mlp else 0)  # + MLP head's hidden
  total += {"lm": 2 * d * cfg.vocab_size, "reward": reward, "none": 0}[head]
  if elementwise:
    total += 4 * d  # final norm
  return total


def attention_flops(config: ModelConfig, n_pairs: int,
                    elementwise: bool = False) -> int:
  """FLOPs of attention over `n_pairs` (query, key) pairs, all layers.

  Args:
    config: model shape.
    n_pairs: number of (query token, key slot) pairs scored, summed over
      tokens (and batch rows, if the caller folds them in).
    elementwise: add the rough softmax/mask count (module docstring).

  Returns:
    `n_layers * 4 * n_heads * head_dim * n_pairs` FLOPs (plus elementwise).
  """
  cfg = _config(config)
  n_pairs = _count("n_pairs", n_pairs)
  per_pair = 4 * cfg.n_heads * cfg.head_dim
  if elementwise:
    per_pair += 6 * cfg.n_heads + 1
  return cfg.n_layers * per_pair * n_pairs


def forward_flops(config: ModelConfig, n_tokens: int, context: int = 0, *,
                  attention: str | None = None, cache_len: int | None = None,
                  head: str = "lm", elementwise: bool = False) -> int:
  """FLOPs of one forward pass over `n_tokens` that follow `context` tokens.

  With `attention='causal'`, token `i` (0-based) of the pass attends to
  `context + i + 1` keys. With `'dense'` every token is scored against
  `cache_len` keys when a cache is given, else `context + n_tokens`.

  Args:
    config: model shape.
    n_tokens: tokens fed in this pass (one row).
    context: tokens already in the cache before this pass.
    attention: 'causal', 'dense' or None (dense iff `cache_len` is given).
    cache_len: key/value slots of the cache, if the pass uses one; must hold
      `context + n_tokens`.
    head: 'lm', 'reward' or 'none', computed at every position.
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs for one batch row.
  """
  n_tokens = _count("n_tokens", n_tokens)
  context = _count("context", context)
  if cache_len is not None:
    cache_len = _count("cache_len", cache_len)
    if cache_len < context + n_tokens:
      raise ValueError(f"cache_len={cache_len} cannot hold context={context} "
                       f"plus n_tokens={n_tokens}")
  mode = _attention(attention, cache_len)
  if mode == "causal":
    pairs = n_tokens * context + n_tokens * (n_tokens + 1) // 2
  else:
    keys = cache_len if cache_len is not None else context + n_tokens
    pairs = n_tokens * keys
  return (n_tokens * matmul_flops_per_token(config, head, elementwise) +
          attention_flops(config, pairs, elementwise))


def prefill_flops(config: ModelConfig, prompt_len: int, batch: int = 1, *,
                  attention: str | None = None, cache_len: int | None = None,
                  head: str = "lm", elementwise: bool = False) -> int:
  """FLOPs of prefilling `batch` prompts of `prompt_len` tokens.

  `attention='causal'` counts the triangle (`prompt_len * (prompt_len + 1) /
  2` pairs); `'dense'` the full square our `attend` computes without a cache
  (`ttcjax.models.lm_logits`), or `prompt_len * cache_len` with one. The XLA
  cross-check uses `'dense'`. The head is counted at every position, as
  `lm_logits` computes it.

  Args:
    config: model shape.
    prompt_len: tokens per prompt.
    batch: rows.
    attention: 'causal', 'dense' or None (dense iff `cache_len` is given).
    cache_len: cache slots, when prefilling into a cache.
    head: 'lm', 'reward' or 'none'.
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs for the whole batch.
  """
  batch = _count("batch", batch)
  return batch * forward_flops(config, prompt_len, 0, attention=attention,
                               cache_len=cache_len, head=head,
                               elementwise=elementwise)


def decode_flops(config: ModelConfig, context_len: int, batch: int = 1, *,
                 cache_len: int | None = None, attention: str | None = None,
                 head: str = "lm", elementwise: bool = False) -> int:
  """FLOPs of one decode step: one new token per row.

  Args:
    config: model shape.
    context_len: keys the new token attends to, itself included (its 1-based
      position in the sequence); >= 1.
    batch: rows.
    cache_len: cache slots; when given (and `attention` is not 'causal') the
      token is scored against all of them, as our implementation does.
    attention: 'causal', 'dense' or None (dense iff `cache_len` is given).
    head: 'lm', 'reward' or 'none'.
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs for the whole batch.
  """
  batch = _count("batch", batch)
  context_len = _count("context_len", context_len, minimum=1)
  return batch * forward_flops(config, 1, context_len - 1,
                               attention=attention, cache_len=cache_len,
                               head=head, elementwise=elementwise)


def generation_flops(config: ModelConfig, prompt_len: int, new_tokens: int,
                     batch: int = 1, *, cache_len: int | None = None,
                     attention: str | None = None, head: str = "lm",
                     elementwise: bool = False) -> int:
  """FLOPs of prefilling a prompt and sampling `new_tokens` after it.

  The prefill's last logits give the first new token; each later one costs a
  decode step that feeds the previous token, so `new_tokens - 1` steps (the
  last sampled token is never fed). With causal attention the total equals
  one causal forward pass over `prompt_len + new_tokens - 1` tokens.

  Args:
    config: model shape.
    prompt_len: prompt tokens per row (>= 1).
    new_tokens: sampled tokens per row.
    batch: rows.
    cache_len: cache slots; with dense attention every prefill query and every
      decode step is scored against all of them.
    attention: 'causal', 'dense' or None (dense iff `cache_len` is given).
    head: 'lm', 'reward' or 'none'.
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs for the whole batch.
  """
  prompt_len = _count("prompt_len", prompt_len, minimum=1)
  new_tokens = _count("new_tokens", new_tokens)
  batch = _count("batch", batch)
  steps = max(new_tokens - 1, 0)
  kwargs = dict(attention=attention, cache_len=cache_len, head=head,
                elementwise=elementwise)
  if cache_len is not None and cache_len < prompt_len + steps:
    raise ValueError(f"cache_len={cache_len} cannot hold prompt_len="
                     f"{prompt_len} plus {steps} decode steps")
  total = forward_flops(config, prompt_len, 0, **kwargs)
  if steps:
    mode = _attention(attention, cache_len)
    if mode == "dense" and cache_len is not None:
      pairs = steps * cache_len
    else:  # step j (1-based) attends to prompt_len + j keys
      pairs = steps * prompt_len + steps * (steps + 1) // 2
    total += (steps * matmul_flops_per_token(config, head, elementwise) +
              attention_flops(config, pairs, elementwise))
  return batch * total


def score_flops(config: ModelConfig, n_tokens: int, batch: int = 1, *,
                attention: str | None = None, head: str = "reward",
                elementwise: bool = False) -> int:
  """FLOPs of a verifier's forward pass over whole candidates (no cache).

  A PRM/ORM reads prompt and solution in one pass and reads out the scalar
  reward head (`d x 1`) at every position (`ttcjax.models.reward_scores`).

  Args:
    config: verifier shape.
    n_tokens: tokens per candidate, prompt included.
    batch: candidates.
    attention: 'causal' (default) or 'dense' (what XLA computes).
    head: 'reward' (needs `config.reward_head`), 'lm' or 'none'.
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs for all candidates.
  """
  return prefill_flops(config, n_tokens, batch, attention=attention,
                       head=head, elementwise=elementwise)


def train_step_flops(config: ModelConfig, batch: int, seq_len: int, *,
                     attention: str | None = None,
                     elementwise: bool = False) -> int:
  """FLOPs of one training step (forward and backward), LM head included.

  The backward pass costs twice the forward (gradients with respect to both
  activations and weights), so a step is 3 forward passes. Optimizer updates
  are not counted.

  Args:
    config: model shape.
    batch: sequences per step.
    seq_len: tokens per sequence.
    attention: 'causal' (default) or 'dense' (what XLA computes).
    elementwise: add the rough elementwise count.

  Returns:
    FLOPs per step.
  """
  return 3 * prefill_flops(config, seq_len, batch, attention=attention,
                           elementwise=elementwise)


def pretrain_flops_6nd(n_params: float, tokens: float) -> float:
  """The paper's pretraining cost, `6 * N * D` FLOPs.

  Args:
    n_params: parameters N.
    tokens: pretraining tokens D.

  Returns:
    FLOPs.
  """
  return 6.0 * _amount("n_params", n_params) * _amount("tokens", tokens)


def inference_flops(n_params: float, tokens: float,
                    convention: str = "2nd") -> float:
  """The paper's inference cost, `c * N * D` FLOPs.

  Args:
    n_params: parameters N of the policy.
    tokens: inference tokens D (prompt plus generated).
    convention: '2nd' (c=2: one forward pass per token; the paper's arXiv v1
      FLOPs-matched comparison) or '4nd' (c=4: a later version that adds the
      verifier reading every generated token, a same-size model, roughly
      doubling the cost).

  Returns:
    FLOPs.
  """
  return (_convention(convention) * _amount("n_params", n_params) *
          _amount("tokens", tokens))


def inference_flops_2nd(n_params: float, tokens: float) -> float:
  """`2 * N * D` FLOPs: one forward pass per inference token."""
  return inference_flops(n_params, tokens, "2nd")


def _convention(convention: str) -> int:
  try:
    return CONVENTIONS[convention]
  except (KeyError, TypeError):
    raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got "
                     f"{convention!r}") from None


def flops_matched_budget(n_small: float, n_large: float, d_pretrain: float,
                         d_inference: float, convention: str = "2nd") -> float:
  """Test-time compute multiplier X that FLOPs-matches a larger model.

  Solves the paper's relation (Snell et al. 2024, Sec. 7)

    6 N_s D_pre + c N_s D_inf X = 6 N_l D_pre + c N_l D_inf

  for X, i.e. `X = M + 6 (M - 1) / (c R)` with `M = N_l / N_s` and
  `R = D_inf / D_pre`: the small model may spend X times the large model's
  inference tokens (X generations per query where the large model spends
  one). X >= M >= 1 whenever `n_large >= n_small`, and X -> M as R grows
  (inference-heavy deployments); X < 1 could only arise with `n_large <
  n_small`, which is rejected rather than returned.

  Args:
    n_small: parameters of the small model.
    n_large: parameters of the large model (>= n_small).
    d_pretrain: pretraining tokens (both models).
    d_inference: inference tokens of the large model (> 0).
    convention: '2nd' (c=2) or '4nd' (c=4); see `inference_flops`.

  Returns:
    X, a float >= 1.
  """
  c = _convention(convention)
  n_small = _amount("n_small", n_small, positive=True)
  n_large = _amount("n_large", n_large, positive=True)
  d_pretrain = _amount("d_pretrain", d_pretrain)
  d_inference = _amount("d_inference", d_inference, positive=True)
  if n_large < n_small:
    raise ValueError(f"n_large={n_large:g} must be >= n_small={n_small:g}: "
                     "the small model would get X < 1 generations")
  ratio = n_large / n_small
  return ratio + 6.0 * (ratio - 1.0) * d_pretrain / (c * d_inference)


@dataclasses.dataclass(frozen=True)
class FlopsCount:
  """FLOPs spent on one query (or summed over many).

  Attributes:
    policy: FLOPs of the policy (prefill and generation).
    verifier: FLOPs of the verifier (PRM/ORM scoring).
  """

  policy: float = 0.0
  verifier: float = 0.0

  @property
  def total(self) -> float:
    """Policy plus verifier FLOPs."""
    return self.policy + self.verifier

  def __add__(self, other: "FlopsCount") -> "FlopsCount":
    if not isinstance(other, FlopsCount):
      return NotImplemented
    return FlopsCount(self.policy + other.policy,
                      self.verifier + other.verifier)


def search_flops(policy: ModelConfig, *, prompt_tokens: int,
                 generated_tokens: int, verifier: ModelConfig | None = None,
                 verifier_tokens: int = 0, policy_context: int | None = None,
                 verifier_context: int | None = None,
                 elementwise: bool = False) -> FlopsCount:
  """Turns a search strategy's token counts into policy and verifier FLOPs.

  Dense-context approximation: records carry token totals, not each token's
  position, so every token is charged its matmuls plus attention over a fixed
  number of keys: `policy_context` / `verifier_context`, default the config's
  `max_len`. That default is an upper bound, and exact for decode steps into
  a cache of `max_len` slots (our `attend` scores every slot). Pass 0 for a
  matmul-only count close to `2 N D` (non-embedding parameters plus the
  head). For exact numbers with known lengths use `generation_flops` and
  `score_flops`.

  Args:
    policy: policy shape; charged the LM head on every token.
    prompt_tokens: prompt tokens prefilled (count a shared prefix once).
    generated_tokens: tokens the policy generated.
    verifier: verifier shape; needed when `verifier_tokens > 0`. Charged its
      reward head if it has one, else the LM head.
    verifier_tokens: tokens the verifier read.
    policy_context: keys per policy token (default `policy.max_len`).
    verifier_context: keys per verifier token (default `verifier.max_len`).
    elementwise: add the rough elementwise count.

  Returns:
    A `FlopsCount`.
  """
  policy = _config(policy, "policy")
  prompt_tokens = _count("prompt_tokens", prompt_tokens)
  generated_tokens = _count("generated_tokens", generated_tokens)
  verifier_tokens = _count("verifier_tokens", verifier_tokens)

  def charge(cfg, tokens, context, head, name):
    context = cfg.max_len if context is None else _count(name, context)
    per_token = (matmul_flops_per_token(cfg, head, elementwise) +
                 attention_flops(cfg, context, elementwise))
    return float(tokens * per_token)

  policy_flops = charge(policy, prompt_tokens + generated_tokens,
                        policy_context, "lm", "policy_context")
  verifier_flops = 0.0
  if verifier_tokens:
    if verifier is None:
      raise ValueError(f"verifier_tokens={verifier_tokens} needs a verifier "
                       "config")
    verifier = _config(verifier, "verifier")
    head = "reward" if verifier.reward_head else "lm"
    verifier_flops = charge(verifier, verifier_tokens, verifier_context, head,
                            "verifier_context")
  return FlopsCount(policy_flops, verifier_flops)


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs XLA's cost analysis reports for `jax.jit(fn)(*args)`.

  Compiles without running, so `args` may be `jax.ShapeDtypeStruct`s. XLA
  counts elementwise ops too (and transcendentals separately).

  Args:
    fn: a jittable function.
    *args: its arguments (arrays or shape/dtype structs).

  Returns:
    The 'flops' entry, as a float.
  """
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  # Older jax returns one dict per computation in a list; newer, a dict.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    raise RuntimeError(f"XLA cost analysis has no 'flops' entry: {cost!r}")
  return float(cost["flops"])
