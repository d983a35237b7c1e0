"""Per-device memory of a search run: parameters, KV cache, activation peaks.

Bytes are computed from shapes and the logical-axis rules alone, through the
same `partitioning.resolve_spec` that places real arrays, on an
`AbstractMesh` (a name -> size mapping): no devices are needed, so a laptop
can check that a 7B PRM plus a 1.5B policy and their caches fit a v5e-16
before a job is launched.

What is counted, per device:

* parameters of every model of the run (policy, verifier), at their
  `param_dtype`, sharded as `param_shardings` would shard them;
* the policy's KV cache (`models.init_cache` layout: k and v per layer,
  `[rows, kv_heads, cache_len, head_dim]` at `dtype`, plus `valid` and
  `next_pos`), sharded as `cache_shardings` would shard it;
* the decode state's per-row arrays (`decoding.DecodeState`: generated
  tokens and their log-probs, `[rows, max_gen]`, and a few `[rows]`
  fields), rows over the batch axes as `shard_rows` places them, once per
  state alive (a lookahead roll-out keeps the candidates' state besides
  the rolled-out one);
* with an incremental verifier (`SearchShapes.verifier_cache_len`), the
  verifier's KV cache of that many slots for every policy row, laid out
  and sharded as the policy's (`ttcjax.search.incremental`), plus, when
  its calls read fewer rows than the batch (`verifier_rows < rows`), the
  copy of one group's cache rows a call gathers;
* the largest of three activation peaks, which happen one at a time:
  - prefill: the LM logits `lm_logits` computes at every prompt position,
    `[prompt_rows, prompt_len, vocab] float32`;
  - decode step: logits and their softmax, `[rows, vocab] float32` x 2;
  - verifier scoring: one layer's attention scores (float32) and
    probabilities (compute dtype), `[n, heads, L, L]`, plus the MLP's two
    hidden activations `[n, L, d_ff]`, for `n = verifier_rows` rows scored
    per call, plus its `[n, L, vocab] float32` logits when the verifier is
    read from its LM head (step-tag PRMs such as RLHFlow's);
  - incremental verifier call: the same for `verifier_rows` rows (its
    calls read the rows in groups of that many),
    `t = verifier_len - prompt_len` new tokens (the most one round may
    add: the last round decodes to EOS) attending `verifier_cache_len`
    keys, `[verifier_rows, heads, t, verifier_cache_len]`.

Activation peaks are estimates (XLA may fuse or rematerialise); the check
keeps `headroom` of HBM free for them being off, for XLA's own buffers and
fragmentation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from ttcjax import partitioning
from ttcjax.models.config import ModelConfig, as_dtype

GiB = 2**30
CACHE_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")


@dataclasses.dataclass(frozen=True)
class AbstractMesh:
  """Axis sizes only: all `partitioning.resolve_spec` reads of a mesh."""
  shape: Mapping[str, int]

  @classmethod
  def of(cls, data: int = 1, fsdp: int = 1, model: int = 1) -> "AbstractMesh":
    for name, size in (("data", data), ("fsdp", fsdp), ("model", model)):
      if not isinstance(size, int) or size < 1:
        raise ValueError(f"AbstractMesh.{name} must be a positive int, got "
                         f"{size!r}")
    return cls({"data": data, "fsdp": fsdp, "model": model})

  @property
  def size(self) -> int:
    return math.prod(self.shape.values())

  def __str__(self) -> str:
    return ",".join(f"{k}={v}" for k, v in self.shape.items())


@dataclasses.dataclass(frozen=True)
class Device:
  """One accelerator chip: memory and bf16 peak."""
  name: str
  hbm_bytes: int
  peak_flops: float


DEVICES = {
    "v4": Device("TPU v4", 32 * GiB, 275e12),
    "v5e": Device("TPU v5e", 16 * GiB, 197e12),
    "v5p": Device("TPU v5p", 95 * GiB, 459e12),
    "v6e": Device("TPU v6e", 32 * GiB, 918e12),
    "a100_80gb": Device("A100 80GB", 80 * 10**9, 312e12),
    "h100": Device("H100 80GB", 80 * 10**9, 989e12),
    "h200": Device("H200", 141 * 10**9, 989e12),
}


def local_device() -> Device | None:
  """This process's first accelerator, as its runtime reports it: its
  `device_kind` and the bytes XLA may allocate on it
  (`memory_stats()['bytes_limit']`: on a GPU, the client's memory fraction
  of the card). None where the backend reports no limit (CPU: host memory
  is not what `estimate` budgets). `peak_flops` is not reported: nan."""
  dev = jax.local_devices()[0]
  stats = dev.memory_stats() or {}
  if not stats.get("bytes_limit"):
    return None
  return Device(dev.device_kind, int(stats["bytes_limit"]), math.nan)


def shard_bytes(shape: Sequence[int], dtype, logical_axes: Sequence[str | None],
                mesh, rules: partitioning.Rules | None = None) -> int:
  """Bytes one device holds of an array sharded by `logical_axes`."""
  spec = partitioning.resolve_spec(shape, logical_axes, mesh, rules)
  local = list(shape)
  for i, axes in enumerate(spec):
    if axes is None:
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    local[i] //= math.prod(mesh.shape[a] for a in axes)
  return math.prod(local) * np.dtype(dtype).itemsize


@functools.cache
def param_layout(config: ModelConfig
                 ) -> tuple[tuple[tuple[int, ...], np.dtype, tuple], ...]:
  """(shape, dtype, logical axes) of every parameter (traced once per config:
  `abstract_params` takes about a second for a 7B shape)."""
  from ttcjax.models import abstract_params, strip_boxes  # pylint: disable=g-import-not-at-top
  boxed = abstract_params(config)
  specs = jax.tree.leaves(nn.get_partition_spec(boxed),
                          is_leaf=lambda x: isinstance(x, P))
  shapes = jax.tree.leaves(strip_boxes(boxed))
  return tuple((tuple(x.shape), np.dtype(x.dtype), tuple(spec))
               for spec, x in zip(specs, shapes, strict=True))


def param_bytes(config: ModelConfig, mesh,
                rules: partitioning.Rules | None = None) -> int:
  """Per-device parameter bytes, sharded as `param_shardings` shards them."""
  return sum(shard_bytes(shape, dtype, axes, mesh, rules)
             for shape, dtype, axes in param_layout(config))


def cache_bytes(config: ModelConfig, rows: int, cache_len: int, mesh,
                rules: partitioning.Rules | None = None) -> int:
  """Per-device bytes of `init_cache(config, rows, cache_len)`, sharded as
  `partitioning.cache_shardings` shards it."""
  kv = shard_bytes((rows, config.n_kv_heads, cache_len, config.head_dim),
                   as_dtype(config.dtype), CACHE_AXES, mesh, rules)
  valid = shard_bytes((rows, cache_len), np.bool_, ("cache_batch", None),
                      mesh, rules)
  next_pos = shard_bytes((rows,), np.int32, ("cache_batch",), mesh, rules)
  return 2 * config.n_layers * kv + valid + next_pos + 4


def decode_state_bytes(rows: int, max_gen: int, mesh,
                       rules: partitioning.Rules | None = None) -> int:
  """Per-device bytes of a `DecodeState`'s arrays besides its cache:
  tokens (int32) and log-probs (float32) `[rows, max_gen]`, three int32
  and two bool `[rows]` fields over the batch axes, and the `[rows]` PRNG
  keys (two uint32 each), which `shard_rows` replicates."""
  row = lambda width, dtype: shard_bytes(
      (rows, width), dtype, ("cache_batch", None), mesh, rules)
  return (row(max_gen, np.int32) + row(max_gen, np.float32) +
          3 * row(1, np.int32) + 2 * row(1, np.bool_) + rows * 2 * 4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchShapes:
  """The shapes one search batch runs at.

  Attributes:
    policy: the policy (generator).
    verifier: the PRM/ORM (reward head, or an LM head read at step tags,
      whose `[n, L, vocab]` float32 logits count too), or None.
    rows: policy rows decoded together (problems per batch x beams/samples).
    prompt_rows: prompts prefilled together (problems per batch).
    prompt_len: padded prompt width.
    cache_len: policy KV-cache slots (prompt plus generation).
    verifier_len: tokens per verifier input (prompt plus solution).
    verifier_rows: rows scored per verifier call.
    max_gen: generated tokens kept per row (`DecodeState.tokens` and
      `logprobs`); 0: the decode state is not counted.
    decode_states: decode states alive at once (2 for lookahead: see
      `stepping.rollout_and_rollback`).
    verifier_cache_len: slots per row of the verifier's own KV cache when
      it is read incrementally (`VerifierFns.incremental`); 0: no cache
      (every call re-reads whole inputs).
  """
  policy: ModelConfig
  verifier: ModelConfig | None
  rows: int
  prompt_rows: int
  prompt_len: int
  cache_len: int
  verifier_len: int
  verifier_rows: int
  max_gen: int = 0
  decode_states: int = 1
  verifier_cache_len: int = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Per-device bytes of one configuration, and whether it fits."""
  params: int
  cache: int
  activations: int
  phase: str  # which activation peak is the largest
  capacity: int
  headroom: float
  state: int = 0  # the decode states' per-row arrays

  @property
  def total(self) -> int:
    return self.params + self.cache + self.activations + self.state

  @property
  def usable(self) -> int:
    """Bytes a run may fill: `capacity` less the headroom."""
    return int((1.0 - self.headroom) * self.capacity)

  @property
  def fits(self) -> bool:
    return self.total <= (1.0 - self.headroom) * self.capacity


def activation_bytes(shapes: SearchShapes, mesh,
                     rules: partitioning.Rules | None = None
                     ) -> dict[str, int]:
  """Per-device bytes of each activation peak (see module docstring)."""
  pol = shapes.policy
  f32 = np.float32
  out = {
      "prefill": shard_bytes(
          (shapes.prompt_rows, shapes.prompt_len, pol.vocab_size), f32,
          ("activation_batch", "activation_length", "activation_vocab"),
          mesh, rules),
      "decode": 2 * shard_bytes(
          (shapes.rows, pol.vocab_size), f32,
          ("activation_batch", "activation_vocab"), mesh, rules),
  }
  ver = shapes.verifier
  if ver is not None:
    out["verifier"] = _verifier_call_bytes(
        ver, shapes.verifier_rows, shapes.verifier_len, shapes.verifier_len,
        mesh, rules)
    if shapes.verifier_cache_len:
      out["incremental verifier"] = _verifier_call_bytes(
          ver, shapes.verifier_rows,
          max(shapes.verifier_len - shapes.prompt_len, 1),
          shapes.verifier_cache_len, mesh, rules)
  return out


def _verifier_call_bytes(ver: ModelConfig, n: int, length: int, keys: int,
                         mesh, rules) -> int:
  """One layer's attention scores and probabilities `[n, heads, length,
  keys]`, the MLP's hidden activations and, for an LM-head verifier, its
  logits."""
  f32 = np.float32
  heads = ("activation_batch", "activation_heads", None, None)
  scores = shard_bytes((n, ver.n_heads, length, keys), f32, heads, mesh,
                       rules)
  probs = shard_bytes((n, ver.n_heads, length, keys), as_dtype(ver.dtype),
                      heads, mesh, rules)
  mlp = 2 * shard_bytes((n, length, ver.d_ff), as_dtype(ver.dtype),
                        ("activation_batch", "activation_length",
                         "activation_mlp"), mesh, rules)
  total = scores + probs + mlp
  if not ver.reward_head:  # an LM-head PRM (step tags) computes logits
    total += shard_bytes(
        (n, length, ver.vocab_size), f32,
        ("activation_batch", "activation_length", "activation_vocab"),
        mesh, rules)
  return total


def estimate(shapes: SearchShapes, mesh, device: Device,
             rules: partitioning.Rules | None = None,
             headroom: float = 0.15) -> Estimate:
  """Per-device memory of a search batch on `mesh` of `device` chips."""
  params = param_bytes(shapes.policy, mesh, rules)
  if shapes.verifier is not None:
    params += param_bytes(shapes.verifier, mesh, rules)
  cache = cache_bytes(shapes.policy, shapes.rows, shapes.cache_len, mesh,
                      rules)
  if shapes.verifier is not None and shapes.verifier_cache_len:
    cache += cache_bytes(shapes.verifier, shapes.rows,
                         shapes.verifier_cache_len, mesh, rules)
    if shapes.verifier_rows < shapes.rows:  # a group's gathered copy
      cache += cache_bytes(shapes.verifier, shapes.verifier_rows,
                           shapes.verifier_cache_len, mesh, rules)
  peaks = activation_bytes(shapes, mesh, rules)
  phase = max(peaks, key=peaks.get)
  state = shapes.decode_states * decode_state_bytes(
      shapes.rows, shapes.max_gen, mesh, rules) if shapes.max_gen else 0
  return Estimate(params, cache, peaks[phase], phase, device.hbm_bytes,
                  headroom, state)


def max_rows(shapes: SearchShapes, mesh, device: Device,
             rules: partitioning.Rules | None = None, headroom: float = 0.15,
             multiple: int = 16) -> int:
  """Most policy rows (a multiple of `multiple`) that fit; 0 if none."""
  def fits(rows):
    return estimate(dataclasses.replace(shapes, rows=rows), mesh, device,
                    rules, headroom).fits
  if not fits(multiple):
    return 0
  lo, hi = 1, 2
  while fits(hi * multiple):
    lo, hi = hi, hi * 2
    if hi > 2**20:
      return lo * multiple
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid * multiple) else (lo, mid)
  return lo * multiple


def replicated_rules() -> partitioning.Rules:
  """Every logical axis replicated: the naive layout, for comparison."""
  return tuple((name, None) for name, _ in partitioning.logical_axis_rules())


def search_rules() -> partitioning.Rules:
  """Rules for decoding with few key/value heads on a mesh with `model` > 1.

  The defaults put cache rows over `(data, fsdp)` and kv heads over
  `model`; a policy with fewer kv heads than `model` (Qwen2.5-1.5B has 2)
  then keeps a full copy of its cache on every `model` shard. Here rows go
  over all three axes (a row's heads stay together), and so do activation
  rows, so the decode step is data parallel with weights gathered per
  layer. Weights keep their default layout.
  """
  every = ("data", "fsdp", "model")
  overrides = {"cache_batch": every, "cache_kv_heads": None,
               "activation_batch": every}
  return tuple((name, overrides.get(name, axes))
               for name, axes in partitioning.logical_axis_rules())


# --- The MATH-500 experiment (gin_configs/experiments/math500_tpu.gin) -------

QWEN25_MATH_1P5B = ModelConfig(
    vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2,
    d_ff=8960, rope_theta=10000.0, qkv_bias=True, tie_embeddings=True,
    param_dtype="bfloat16", dtype="bfloat16", max_len=4096)
"""Qwen2.5-Math-1.5B(-Instruct), the policy."""

QWEN25_MATH_PRM_7B = ModelConfig(
    vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
    d_ff=18944, rope_theta=10000.0, qkv_bias=True, tie_embeddings=False,
    param_dtype="bfloat16", dtype="bfloat16", max_len=4096, reward_head=True)
"""The shape of Qwen2.5-Math-PRM-7B with ttcjax's scalar reward head."""


def math500_shapes(rows: int = 256, verifier_rows: int = 32) -> SearchShapes:
  """One MATH-500 search batch, as `math500_tpu.gin` configures it.

  16 problems per batch (`problems_per_batch`); `rows` = 16 x N for
  best-of-N (N = 16) or 4 problems x 64 beams, etc.: 256 rows is the
  design point, `max_rows` says how far each layout stretches. Prompts are
  padded to 512 tokens (the Qwen2.5-Math chat template plus the longest
  MATH-500 problem fits), solutions get up to 1024 tokens, tree searches
  3584 cache slots past the prompt (`tree_cache_tokens`), so the cache has
  4096 slots; the PRM reads prompt plus solution, 1536 tokens, 32 rows per
  call.
  """
  return SearchShapes(policy=QWEN25_MATH_1P5B, verifier=QWEN25_MATH_PRM_7B,
                      rows=rows, prompt_rows=16, prompt_len=512,
                      cache_len=4096, verifier_len=1536,
                      verifier_rows=verifier_rows)


@dataclasses.dataclass(frozen=True)
class Layout:
  """An accelerator slice, its mesh and the rules the run uses on it."""
  name: str
  device: Device
  mesh: AbstractMesh
  rules: partitioning.Rules | None = None  # None: the defaults
  rules_name: str = "default"


MATH500_LAYOUTS = (
    Layout("v4-8", DEVICES["v4"], AbstractMesh.of(fsdp=4)),
    Layout("v4-8", DEVICES["v4"], AbstractMesh.of(model=4), search_rules(),
           "search_rules"),
    Layout("v5litepod-16", DEVICES["v5e"], AbstractMesh.of(fsdp=16)),
    Layout("v5litepod-16", DEVICES["v5e"], AbstractMesh.of(fsdp=4, model=4),
           search_rules(), "search_rules"),
    Layout("1x H100 80GB", DEVICES["h100"], AbstractMesh.of()),
)
"""The layouts `math500_tpu.gin` is meant to run on; each must fit."""
