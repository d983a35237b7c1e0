"""Decode throughput of ttcjax against Hugging Face transformers on CPU.

Both libraries run the same random Llama weights: the model is built with
`transformers.LlamaForCausalLM`, saved as safetensors and imported with
`ttcjax.models.hf_import.load_hf`. By default it prints only the headline
rows, at 2 repetitions:

  1. per size, sampled tokens/s (prefill + decode) of ttcjax and of
     transformers (`sdpa`) and the ratio, from the median (and fastest) of
     interleaved repetitions;
  2. for the largest size, decode FLOP/s over the FLOP/s of a jitted float32
     matmul chain of decode shape measured in the same run;
  3. the shared-prefix fan-out cost at 4M: prefill of one long prompt with
     `num_samples=64` over `num_samples=1`;

then the targets, PASS or MISS. `--full` (3 repetitions) adds transformers'
`eager` attention (the faster of the two is the baseline), and

  * time per decode step split into dense layers (+ LM head), attention over
    the cache, cache update, sampling and token bookkeeping: jitted
    `fori_loop`s of each part at the decode shapes, next to the full step;
  * what fused projections, other attention formulations or cache layouts,
    and Gumbel sampling would change, each raced against the current code;
  * decode FLOP/s over a 1024^3 matmul, and the step's memory traffic
    against a measured read bandwidth;
  * the fan-out ratio at every size, and what it is made of.

Nothing is asserted. The numbers depend on
the machine and on whatever else runs on it: the load average is printed,
and torch's thread barriers suffer far more than XLA from a busy CPU, so a
ratio whose median and fastest repetitions disagree was measured under load.

  python bench/decode.py            # headline rows (under 5 minutes on 2
                                    # idle cores)
  python bench/decode.py --full     # and every profile and variant
  python bench/decode.py --quick    # smoke run, small shapes
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from ttcjax import models
from ttcjax.decoding import Decoder, Sampling
from ttcjax.decoding.decoder import _sample  # pylint: disable=protected-access
from ttcjax.models import hf_import
from ttcjax.models.transformer import attend
from ttcjax.analysis import flops

# name: (vocab, d_model, layers, heads, kv heads, d_ff, tied embeddings)
SIZES = {
    "4M": (4096, 256, 4, 8, 4, 768, True),
    "34M": (8192, 512, 8, 8, 4, 1536, False),
}
# Speed-ups over transformers per size, decode FLOP/s over matmul FLOP/s at
# the largest size, and prefill time with 64-way fan-out over 1-way.
TARGETS = {"4M": 3.0, "34M": 1.5, "matmul": 0.5, "fan-out": 1.2}


@dataclasses.dataclass(frozen=True)
class Workload:
  """Shapes and repetitions; `cache_len` slots hold prompt and new tokens."""
  batch: int = 64
  prompt_len: int = 32
  new_tokens: int = 128
  fanout_prompt: int = 512
  fanout_samples: int = 64
  reps: int = 3
  part_iters: int = 128

  @property
  def cache_len(self) -> int:
    return self.prompt_len + self.new_tokens


def _block(tree):
  return jax.block_until_ready(tree)


def _timer(fn):
  """A runner returning the seconds one call of `fn` takes to finish."""
  def run() -> float:
    start = time.perf_counter()
    _block(fn())
    return time.perf_counter() - start
  return run


# --------------------------------------------------------------------------
# Models.


def build_hf(name: str, directory: str, seed: int = 0):
  """Saves a random float32 `LlamaForCausalLM` of size `name` to `directory`."""
  vocab, d, layers, heads, kv, ff, tied = SIZES[name]
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=ff,
      tie_word_embeddings=tied, max_position_embeddings=2048,
      rms_norm_eps=1e-6, pad_token_id=0)
  model = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
  model.save_pretrained(directory, safe_serialization=True)
  return sum(p.numel() for p in model.parameters())


def hf_runner(directory: str, attn: str, ids: np.ndarray, w: Workload):
  """A function that samples with `generate` and returns its seconds."""
  model = transformers.LlamaForCausalLM.from_pretrained(
      directory, dtype=torch.float32, attn_implementation=attn).eval()
  input_ids = torch.tensor(ids, dtype=torch.long)
  attention_mask = torch.ones_like(input_ids)

  def run() -> dict[str, float]:
    start = time.perf_counter()
    with torch.inference_mode():
      out = model.generate(
          input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
          temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=w.new_tokens,
          min_new_tokens=w.new_tokens, pad_token_id=0)
    seconds = time.perf_counter() - start
    if out.shape != (w.batch, w.prompt_len + w.new_tokens):
      raise RuntimeError(f"HF generate returned shape {tuple(out.shape)}")
    return {"total": seconds}

  return run


def ttc_runner(cfg, params, ids: np.ndarray, w: Workload):
  """A function that samples with ttcjax and returns its seconds by phase.

  Also returns the prefilled state (the decode loop's input).
  """
  decoder = Decoder(step_fn=models.decode_step_fn(cfg), eos_id=-1,
                    max_gen=w.new_tokens, prefill_fn=models.prefill_fn(cfg))
  sampler = Sampling(temperature=1.0)
  prompts = jnp.asarray(ids, jnp.int32)
  mask = jnp.ones(prompts.shape, bool)
  cache = models.init_cache(cfg, w.batch, w.cache_len)
  rngs = jax.random.split(jax.random.key(1), w.batch)
  steps = w.new_tokens - 1

  def run() -> dict[str, float]:
    start = time.perf_counter()
    state = _block(decoder.prefill(params, prompts, mask, cache, sampler, rngs))
    mid = time.perf_counter()
    out = _block(decoder.decode(params, state, sampler, steps))
    end = time.perf_counter()
    if int(jnp.min(out.num_generated)) != w.new_tokens:
      raise RuntimeError("ttcjax stopped early: "
                         f"{np.asarray(out.num_generated).min()} tokens")
    return {"prefill": mid - start, "decode": end - mid, "total": end - start}

  return run, decoder.prefill(params, prompts, mask, cache, sampler, rngs)


def interleaved(runners: dict, reps: int) -> dict[str, dict[str, list]]:
  """Warms every runner up, then times them in turn `reps` times.

  Interleaving spreads load from other processes over all contestants.
  Returns {runner: {phase: [seconds per rep]}}.
  """
  for run in runners.values():
    run()
  times = {name: {} for name in runners}
  for _ in range(reps):
    for name, run in runners.items():
      for phase, seconds in run().items():
        times[name].setdefault(phase, []).append(seconds)
  return times


# --------------------------------------------------------------------------
# Parts of a decode step, each a jitted fori_loop at the decode shapes.


def _loop(body, args, carry, iters: int):
  """A runner: seconds per iteration of a jitted `fori_loop` of `body`.

  `body(args, i, carry) -> carry`; `args` are passed, not closed over, so
  XLA cannot constant-fold them.
  """
  fn = jax.jit(lambda a, c: jax.lax.fori_loop(
      0, iters, lambda i, cc: body(a, i, cc), c))

  def run() -> float:
    start = time.perf_counter()
    _block(fn(args, carry))
    return (time.perf_counter() - start) / iters
  return run


def _race(runners: dict, reps: int) -> dict:
  """Fastest time of each runner over `reps` interleaved rounds.

  The minimum, not the median: load from other processes only ever adds
  time, and interleaving exposes every contestant to the same load.
  """
  for run in runners.values():
    run()  # compile
  best = {k: math.inf for k in runners}
  for _ in range(reps):
    for k, run in runners.items():
      best[k] = min(best[k], run())
  return best


def _eps(acc):
  # Ties a loop-invariant input to the carry so XLA cannot hoist the work.
  return acc * 1e-30


def part_times(cfg, params, state, w: Workload) -> dict[str, float]:
  """Fastest seconds per decode step of each part, and of the model step."""
  b, n, reps = w.batch, w.part_iters, w.reps
  kh, hd, h, L = cfg.n_kv_heads, cfg.head_dim, cfg.n_heads, w.cache_len
  key = jax.random.key(2)
  k0 = jax.random.normal(key, (b, 1), jnp.float32)
  tok0 = jnp.arange(b, dtype=jnp.int32)
  step_fn = models.decode_step_fn(cfg)
  out = {}

  def dense(p, i, acc):  # the model without a cache: projections, norms, head
    tokens = ((tok0 + i) % cfg.vocab_size)[:, None]
    logits, _ = step_fn(p, tokens, jnp.ones((b, 1), bool), None)
    return acc + _eps(jnp.sum(logits))
  out["(a) dense layers + head"] = _loop(dense, params, 0.0, n)

  def head(p, i, x):  # LM head alone, [b, d] x [d, vocab]
    if cfg.tie_embeddings:
      logits = jnp.einsum("bd,vd->bv", x, p["embedding"],
                          preferred_element_type=jnp.float32)
    else:
      logits = x @ p["lm_head"]["kernel"]
    return x + _eps(jnp.sum(logits))
  x0 = jax.random.normal(key, (b, cfg.d_model), jnp.float32)
  out["    of which LM head"] = _loop(head, params, x0, n)

  caches = [jax.random.normal(jax.random.fold_in(key, j), (b, kh, L, hd))
            for j in range(2 * cfg.n_layers)]
  q0 = jax.random.normal(key, (b, 1, h, hd))

  def attention(kv, i, q):
    index = w.prompt_len + i
    key_slots = jnp.arange(L)
    valid = jnp.broadcast_to(key_slots <= index, (b, L))
    mask = valid[:, None, :] & (key_slots[None, None, :] <= index)
    for j in range(cfg.n_layers):
      q = attend(q, kv[2 * j], kv[2 * j + 1], mask)
    return q
  out["(b) attention over cache"] = _loop(attention, caches, q0, n)

  new_kv = jax.random.normal(key, (b, kh, 1, hd))

  def update(_, i, carry):
    kv, valid = carry
    index = w.prompt_len + i
    kv = [jax.lax.dynamic_update_slice(c, new_kv + _eps(i), (0, 0, index, 0))
          for c in kv]
    valid = jax.lax.dynamic_update_slice(valid, jnp.ones((b, 1), bool),
                                         (0, index))
    return kv, valid
  out["(c) cache update"] = _loop(
      update, None, (caches, jnp.zeros((b, L), bool)), n)

  logits0 = jax.random.normal(key, (b, cfg.vocab_size), jnp.float32)
  sampler = Sampling(temperature=1.0)

  def sample(a, i, acc):
    logits, rngs = a
    tokens, logp = _sample(sampler, logits + _eps(acc), rngs,
                           jnp.full((b,), i, jnp.int32))
    return acc + _eps(jnp.sum(logp) + jnp.sum(tokens))
  out["(d) sampling"] = _loop(sample, (logits0, state.rngs), 0.0, n)

  decoder = Decoder(step_fn=step_fn, eos_id=-1, max_gen=w.new_tokens)

  def record(_, i, s):
    tokens = (tok0 + i) % cfg.vocab_size
    # pylint: disable-next=protected-access
    return decoder._record(s, tokens, k0[:, 0], ~s.finished)
  out["(e) record tokens"] = _loop(record, None, state.replace(cache=None),
                                   n)

  def model_step(p, i, carry):
    cache, acc = carry
    tokens = ((tok0 + i) % cfg.vocab_size)[:, None]
    logits, cache = step_fn(p, tokens, jnp.ones((b, 1), bool), cache)
    return cache, acc + _eps(jnp.sum(logits))
  out["model step alone (a+b+c in one)"] = _loop(
      model_step, params, (state.cache, 0.0), n - 1)
  return _race(out, max(reps, 5))


def variant_times(cfg, params, w: Workload) -> list[tuple[str, float, float]]:
  """(what, current, alternative) fastest s/step for proposed changes."""
  b, n, reps = w.batch, w.part_iters, w.reps
  d, h, kh, hd, ff = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                      cfg.d_ff)
  layers = [params[f"layer_{j}"] for j in range(cfg.n_layers)]
  key = jax.random.key(3)
  x0 = jax.random.normal(key, (b, d), jnp.float32)
  dot = lambda x, k: jax.lax.dot_general(x, k, (((1,), (0,)), ((), ())))
  rows = []

  def qkv_sep(ls, i, x):
    for lp in ls:
      a = lp["attn"]
      q, k, v = (dot(x, a[m]["kernel"]) for m in ("q_proj", "k_proj",
                                                  "v_proj"))
      x = x + _eps(q.reshape(b, -1)[:, :d] + jnp.sum(k) + jnp.sum(v))
    return x
  fused = [jnp.concatenate([lp["attn"][m]["kernel"]
                            for m in ("q_proj", "k_proj", "v_proj")], 1)
           for lp in layers]

  def qkv_fused(ks, i, x):
    for k in ks:
      y = dot(x, k)
      x = x + _eps(y[:, :h].reshape(b, -1)[:, :d] + jnp.sum(y[:, h:]))
    return x
  rows.append(("q/k/v: 3 dots -> 1 fused dot",
               _loop(qkv_sep, layers, x0, n), _loop(qkv_fused, fused, x0, n)))

  def mlp_sep(ls, i, x):
    for lp in ls:
      m = lp["mlp"]
      g, u = dot(x, m["gate_proj"]["kernel"]), dot(x, m["up_proj"]["kernel"])
      x = x + _eps(dot(jax.nn.silu(g) * u, m["down_proj"]["kernel"]))
    return x
  gate_up = [(jnp.concatenate([lp["mlp"]["gate_proj"]["kernel"],
                               lp["mlp"]["up_proj"]["kernel"]], 1),
              lp["mlp"]["down_proj"]["kernel"]) for lp in layers]

  def mlp_fused(ks, i, x):
    for gu, down in ks:
      y = dot(x, gu)
      x = x + _eps(dot(jax.nn.silu(y[:, :ff]) * y[:, ff:], down))
    return x
  rows.append(("MLP: gate,up 2 dots -> 1 fused dot",
               _loop(mlp_sep, layers, x0, n), _loop(mlp_fused, gate_up, x0, n)))

  L = w.cache_len
  caches = [jax.random.normal(jax.random.fold_in(key, j), (b, kh, L, hd))
            for j in range(2 * cfg.n_layers)]
  q0 = jax.random.normal(key, (b, 1, h, hd))
  g = h // kh

  def attend_einsum(q, k, v, mask):  # the t > 1 path of `attend`, at t == 1
    qg = q.reshape(b, kh, g, hd)
    s = jnp.einsum("bkgd,bkTd->bkgT", qg, k) / math.sqrt(hd)
    s = jnp.where(mask[:, None], s, -1e30)
    o = jnp.einsum("bkgT,bkTd->bkgd", jax.nn.softmax(s, -1), v)
    return o.reshape(b, 1, h, hd)

  def attend_keys_t(q, kt, v, mask):  # keys stored [b, kv_heads, hd, slots]
    s = jnp.sum(q.reshape(b, kh, g, hd, 1) * kt[:, :, None], 3) / math.sqrt(hd)
    p = jax.nn.softmax(jnp.where(mask[:, None], s, -1e30), -1)
    return jnp.sum(p[..., None] * v[:, :, None], -2).reshape(b, 1, h, hd)

  def make_attention(fn, slots=L):
    def body(kv, i, q):
      index = w.prompt_len + i % (slots - w.prompt_len)
      mask = jnp.broadcast_to(jnp.arange(slots) <= index, (b, 1, slots))
      for j in range(cfg.n_layers):
        k, v = kv[2 * j], kv[2 * j + 1]
        q = fn(q, k.astype(q.dtype), v.astype(q.dtype), mask)
      return q
    return body
  now = _loop(make_attention(attend), caches, q0, n)
  keys_t = [c.swapaxes(2, 3) if j % 2 == 0 else c for j, c in enumerate(caches)]
  half = [c.astype(jnp.bfloat16) for c in caches]
  filled = w.prompt_len + w.new_tokens // 2
  short = [c[:, :, :filled] for c in caches]
  for what, body, kv in (
      ("einsum (batched matmuls)", make_attention(attend_einsum), caches),
      ("keys stored [b, kv, hd, slots]", make_attention(attend_keys_t),
       keys_t),
      ("bfloat16 cache, float32 math", make_attention(attend), half),
      (f"a cache of {filled} slots (mean filled)",
       make_attention(attend, filled), short)):
    rows.append((f"attention t=1: {what}", now, _loop(body, kv, q0, n)))

  logits0 = jax.random.normal(key, (b, cfg.vocab_size), jnp.float32)
  rngs = jax.random.split(key, b)
  sampler = Sampling(temperature=1.0)

  def current(a, i, acc):
    tokens, logp = _sample(sampler, a[0] + _eps(acc), a[1],
                           jnp.full((b,), i, jnp.int32))
    return acc + _eps(jnp.sum(logp) + jnp.sum(tokens))

  def gumbel(a, i, acc):  # jax.random.categorical draws [b, vocab] noise
    logits = a[0] + _eps(acc)
    keys = jax.vmap(jax.random.fold_in)(a[1], jnp.full((b,), i, jnp.int32))
    tokens = jax.vmap(jax.random.categorical)(keys, logits)
    logp = jnp.take_along_axis(logits, tokens[:, None], -1)[:, 0] - (
        jax.nn.logsumexp(logits, -1))
    return acc + _eps(jnp.sum(logp) + jnp.sum(tokens))
  rows.append(("sampling: inverse CDF -> Gumbel (categorical)",
               _loop(current, (logits0, rngs), 0.0, n),
               _loop(gumbel, (logits0, rngs), 0.0, n)))
  # Each alternative races its current version; the shared attention
  # baseline runs once per round.
  runners = {}
  for what, now, alt in rows:
    runners.setdefault(id(now), now)
    runners[what] = alt
  best = _race(runners, max(reps, 5))
  return [(what, best[id(now)], best[what]) for what, now, _ in rows]


# --------------------------------------------------------------------------
# Baselines and fan-out.


def matmul_rates(batch: int, reps: int, iters: int, square: bool
                 ) -> tuple[float, float | None]:
  """FLOP/s of jitted float32 matmuls: decode-shaped chain, and (with
  `square`, else None) 1024^3."""
  key = jax.random.key(4)
  x = jax.random.normal(key, (batch, 512), jnp.float32)
  w1 = jax.random.normal(key, (512, 1536), jnp.float32) / math.sqrt(512)
  w2 = jax.random.normal(key, (1536, 512), jnp.float32) / math.sqrt(1536)
  t = _race({0: _loop(lambda ws, i, x: (x @ ws[0]) @ ws[1], (w1, w2), x,
                      iters)}, max(reps, 5))[0]
  small = 2 * (2 * batch * 512 * 1536) / t
  if not square:
    return small, None
  a = jax.random.normal(key, (1024, 1024), jnp.float32)
  square = jax.jit(lambda a, c: a @ c)
  t = _race({0: _timer(lambda: square(a, a))}, max(reps, 5))[0]
  return small, 2 * 1024**3 / t


def read_bandwidth(reps: int) -> float:
  """Best bytes/s of a jitted row-wise sum over a 256 MiB float32 array."""
  x = jnp.ones((64, 1 << 20), jnp.float32)
  total = jax.jit(lambda x: jnp.sum(x, axis=1))
  return x.nbytes / _race({0: _timer(lambda: total(x))}, max(reps, 5))[0]


def step_bytes(cfg, w: Workload) -> tuple[int, int]:
  """(weight bytes, KV-cache bytes) one decode step reads, float32.

  The input embedding is a gather of `batch` rows unless it is also the
  (tied) LM head; `attend` reads every cache slot.
  """
  weights = cfg.num_params()
  if not cfg.tie_embeddings:
    weights -= (cfg.vocab_size - w.batch) * cfg.d_model
  cache = 2 * cfg.n_layers * w.batch * cfg.n_kv_heads * w.cache_len * (
      cfg.head_dim)
  return 4 * weights, 4 * cache


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def fanout_times(cfg, params, w: Workload, parts: bool
                 ) -> dict[str, float]:
  """Prefill + first token of one long prompt with n-way and 1-way fan-out.

  With `parts`, also times what the n-way overhead is made of: gathering the cache into n
  new rows (`KVCache.repeat`, a fresh buffer whose pages are touched for the
  first time: the page faults are counted), the same copy written into a
  donated, already-touched cache, and the prompt pass with the LM head at
  the last position only (prefill computes it at every position).
  """
  decoder = Decoder(step_fn=models.decode_step_fn(cfg), eos_id=-1,
                    max_gen=w.new_tokens, prefill_fn=models.prefill_fn(cfg))
  sampler = Sampling(temperature=1.0)
  rng = np.random.default_rng(5)
  prompt = jnp.asarray(rng.integers(1, cfg.vocab_size, (1, w.fanout_prompt)),
                       jnp.int32)
  mask = jnp.ones(prompt.shape, bool)
  cache = models.init_cache(cfg, 1, w.fanout_prompt + w.new_tokens)
  n = w.fanout_samples
  reps = max(w.reps, 5)

  def runner(rows):
    rngs = jax.random.split(jax.random.key(6), rows)

    def run():
      start = time.perf_counter()
      _block(decoder.prefill(params, prompt, mask, cache, sampler, rngs, rows))
      return {"total": time.perf_counter() - start}
    return run
  times = interleaved({n: runner(n), 1: runner(1)}, reps)
  out = {k: statistics.median(times[k]["total"]) for k in (n, 1)}
  if not parts:
    return out

  every = jax.jit(lambda p, c: models.apply(cfg, p, prompt, mask, c))
  _, full = every(params, cache)
  repeat = jax.jit(lambda c: c.repeat(n))
  faults = []

  def put(dst, src):
    return jax.lax.dynamic_update_slice(dst, jnp.broadcast_to(src, dst.shape),
                                        (0,) * dst.ndim)
  write = jax.jit(lambda c, dst: jax.tree.map(put, dst, c), donate_argnums=1)
  box = [models.init_cache(cfg, n, cache.max_len)]

  last = jax.jit(lambda p, c: models.prefill_fn(cfg)(p, prompt, mask, c))

  def timed(fn):
    def run():
      before, start = _minor_faults(), time.perf_counter()
      result = _block(fn())
      seconds = time.perf_counter() - start
      faults.append((fn, _minor_faults() - before))
      del result
      return seconds
    return run

  def donated():
    box[0] = write(full, box[0])
    return box[0]
  gather = lambda: repeat(full)
  out.update(_race({
      "repeat": timed(gather), "donated": timed(donated),
      "head everywhere": timed(lambda: every(params, cache)),
      "head last": timed(lambda: last(params, cache))}, reps))
  out["repeat faults"] = statistics.median(f for g, f in faults if g is gather)
  return out


# --------------------------------------------------------------------------
# Reports.


def run_size(name: str, w: Workload, attn_impls: list[str],
             small_rate: float, full: bool) -> dict:
  """Times ttcjax and HF on one size, prints its block; with `full`,
  measures its parts and variants."""
  with tempfile.TemporaryDirectory() as tmp:
    n_hf = build_hf(name, tmp)
    cfg, params = hf_import.load_hf(tmp)
    params = jax.device_put(params)
    if cfg.num_params() != n_hf:
      raise RuntimeError(f"{name}: ttcjax counts {cfg.num_params()} params, "
                         f"HF {n_hf}")
    ids = np.random.default_rng(0).integers(
        1, cfg.vocab_size, (w.batch, w.prompt_len)).astype(np.int32)
    ttc, state = ttc_runner(cfg, params, ids, w)
    runners = {"ttcjax": ttc}
    runners.update({f"HF {a}": hf_runner(tmp, a, ids, w) for a in attn_impls})
    times = interleaved(runners, w.reps)
  med = {k: {p: statistics.median(v) for p, v in t.items()}
         for k, t in times.items()}
  best_of = {k: min(t["total"]) for k, t in times.items()}
  tokens = w.batch * w.new_tokens
  baseline = min((k for k in med if k != "ttcjax"),
                 key=lambda k: med[k]["total"])
  step = med["ttcjax"]["decode"] / (w.new_tokens - 1)
  print(f"== {name}: {n_hf / 1e6:.2f}M params ({cfg.n_layers} layers, "
        f"d={cfg.d_model}, vocab {cfg.vocab_size}, "
        f"{'tied' if cfg.tie_embeddings else 'untied'}); tok/s from the "
        "median (and fastest) rep")
  for k, t in med.items():
    mark = "  <- baseline" if k == baseline else ""
    split = (f": prefill {t['prefill'] * 1e3:.0f} ms + decode "
             f"{step * 1e3:.2f} ms/step" if k == "ttcjax" else "")
    print(f"  {k:10s} {tokens / t['total']:7.0f} ({tokens / best_of[k]:5.0f})"
          f" tok/s  {t['total']:7.3f} s{split}{mark}")
  speedup = med[baseline]["total"] / med["ttcjax"]["total"]
  speedup_best = best_of[baseline] / best_of["ttcjax"]
  print(f"  ttcjax / {baseline}: {speedup:.2f}x (fastest reps: "
        f"{speedup_best:.2f}x)\n")
  out = dict(cfg=cfg, params=params, n=n_hf, decode=med["ttcjax"]["decode"],
             step=step, speedup=speedup, speedup_best=speedup_best)
  if full:
    out.update(parts=part_times(cfg, params, state, w),
               variants=variant_times(cfg, params, w),
               floor=w.batch * flops.matmul_flops_per_token(cfg) / small_rate)
  return out


def print_parts(results: dict, w: Workload):
  sizes = list(results)
  print("== time per decode step by part, ms and % of the full step: jitted "
        f"fori_loop of each part at the decode shapes, {w.part_iters} "
        f"iterations, fastest of {max(w.reps, 5)} interleaved rounds; the "
        "full step is the median decode above")
  print(f"  {'part':34s}" + "".join(f"{n:>16s}" for n in sizes))

  def row(label, value):
    print(f"  {label:34s}" + "".join(
        f"{value(r) * 1e3:9.3f} ({value(r) / r['step']:4.0%})"
        for r in results.values()))
  for k in results[sizes[0]]["parts"]:
    row(k, lambda r, k=k: r["parts"][k])
  row("sum of (a)-(e)", lambda r: sum(
      v for k, v in r["parts"].items() if k.startswith("(")))
  row("full step (Decoder.decode / steps)", lambda r: r["step"])
  row("(a)'s matmul FLOPs at matmul rate", lambda r: r["floor"])

  print("\n== proposed changes, ms per decode step (same loops over all "
        "layers, each raced against the current code)")
  for n, r in results.items():
    for what, now, alt in r["variants"]:
      print(f"  {n:4s} {what:52s} {now * 1e3:8.3f} -> {alt * 1e3:8.3f}  "
            f"saves {(now - alt) * 1e3:7.3f} ms/step "
            f"({(now - alt) / r['step']:5.1%} of the step)")
  print("  (attention rows: current = multiply-reduce `attend` over every "
        "slot of a float32 cache)")


def print_flops(name: str, r: dict, w: Workload, small_rate: float,
                square_rate: float | None) -> float:
  """Prints decode FLOP/s against the matmul rates (the 1024^3 one and the
  memory traffic unless `square_rate` is None); returns the headline."""
  steps = w.new_tokens - 1
  per_step = flops.decode_flops(r["cfg"], context_len=w.cache_len,
                                batch=w.batch, cache_len=w.cache_len)
  achieved = per_step * steps / r["decode"]
  dense = 2 * r["n"] * w.batch * steps / r["decode"]
  print(f"\n== {name} decode FLOP/s (FLOPs from ttcjax.analysis.flops."
        f"decode_flops, dense attention over {w.cache_len} slots: "
        f"{per_step / 1e9:.3f} GFLOP/step x {steps} steps)")
  print(f"  ttcjax decode achieved            {achieved / 1e9:8.1f} GFLOP/s"
        f"   (2*N_params*batch convention: {dense / 1e9:.1f} GFLOP/s)")
  print(f"  jitted f32 matmul chain [{w.batch},512]x[512,1536]x[1536,512] "
        f"{small_rate / 1e9:6.1f} GFLOP/s  -> ratio "
        f"{achieved / small_rate:.2f}  (headline)")
  if square_rate is None:
    return achieved / small_rate
  print(f"  jitted f32 matmul 1024^3          {square_rate / 1e9:8.1f} GFLOP/s"
        f"  -> ratio {achieved / square_rate:.2f}")
  weights, cache = step_bytes(r["cfg"], w)
  bw = read_bandwidth(w.reps)
  floor = (weights + cache) / bw
  print(f"  memory: a step reads {weights / 1e6:.0f} MB of weights + "
        f"{cache / 1e6:.0f} MB of KV cache; at the measured read bandwidth "
        f"{bw / 1e9:.1f} GB/s that alone takes {floor * 1e3:.1f} ms of the "
        f"{r['step'] * 1e3:.1f} ms step")
  return achieved / small_rate


def print_summary(rows: list[tuple[str, float, str, float]]):
  print(f"\n== summary (load avg {os.getloadavg()[0]:.2f}; other processes "
        "on this machine add noise)")
  for what, value, op, target in rows:
    ok = value >= target if op == ">=" else value <= target
    print(f"  {what:46s} {value:7.2f}  target {op} {target:<4g} "
          f"{'PASS' if ok else 'MISS'}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: small batch and lengths, 1 repetition")
  parser.add_argument("--full", action="store_true",
                      help="also the per-part profile, the variants, HF "
                           "eager attention, the 1024^3 matmul and memory "
                           "traffic, and fan-out at every size with its "
                           "parts")
  parser.add_argument("--sizes", default="4M,34M",
                      help=f"comma-separated subset of {list(SIZES)}")
  parser.add_argument("--hf_attn", default=None,
                      help="HF attention implementations to time; the "
                           "fastest is the baseline (default sdpa; --full: "
                           "sdpa,eager)")
  parser.add_argument("--reps", type=int, default=None,
                      help="repetitions (default 2; --full: 3)")
  args = parser.parse_args()
  if args.hf_attn is None:
    args.hf_attn = "sdpa,eager" if args.full else "sdpa"
  if args.reps is None:
    args.reps = 3 if args.full else 2
  w = Workload(reps=args.reps)
  if args.quick:
    w = Workload(batch=8, prompt_len=8, new_tokens=16, fanout_prompt=64,
                 fanout_samples=8, reps=1, part_iters=16)
  sizes = [s for s in args.sizes.split(",") if s]
  if not sizes or any(s not in SIZES for s in sizes):
    parser.error(f"--sizes={args.sizes!r}: expected a subset of {list(SIZES)}")
  torch.set_num_threads(2)
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()

  print(f"jax {jax.__version__} ({jax.devices()[0].platform}, "
        f"{jax.device_count()} device), torch {torch.__version__} "
        f"(torch.set_num_threads(2): {torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, "
        f"load avg {os.getloadavg()[0]:.2f}")
  print(f"workload: batch {w.batch}, prompt {w.prompt_len} random ids, "
        f"{w.new_tokens} new tokens sampled at temperature 1 (no top-k/p), "
        f"cache {w.cache_len} slots, float32; median of {w.reps} reps after "
        "a warm-up; " + ("--full" if args.full else "headline rows only "
                         "(--full: profiles and variants)") + "\n")
  small_rate, square_rate = matmul_rates(w.batch, w.reps, w.part_iters,
                                         args.full)
  results = {n: run_size(n, w, args.hf_attn.split(","), small_rate,
                         args.full)
             for n in sizes}
  if args.full:
    print_parts(results, w)
  big = sizes[-1]
  frac = print_flops(big, results[big], w, small_rate, square_rate)

  print(f"\n== fan-out: one {w.fanout_prompt}-token prompt, prefill + first "
        f"token, cache {w.fanout_prompt + w.new_tokens} slots, ms")
  fan = {}
  n = w.fanout_samples
  # The target is read at 4M; --full measures every size.
  fan_name = "4M" if "4M" in results else big
  for name, r in results.items():
    if not args.full and name != fan_name:
      continue
    t = fanout_times(r["cfg"], r["params"], w, args.full)
    fan[name] = t[n] / t[1]
    print(f"  {name:4s} num_samples={n}: {t[n] * 1e3:7.1f}   num_samples=1: "
          f"{t[1] * 1e3:7.1f}   ratio {fan[name]:.2f}")
    if not args.full:
      continue
    print(f"       of which: cache.repeat({n}) {t['repeat'] * 1e3:.1f} "
          f"({t['repeat faults']:.0f} page faults/call); the same copy into "
          f"a donated cache {t['donated'] * 1e3:.1f}; prompt pass with LM head"
          f" at every position {t['head everywhere'] * 1e3:.1f}, at the last "
          f"only {t['head last'] * 1e3:.1f}")

  rows = [(f"ttcjax / HF tok/s at {n} (fastest reps "
           f"{r['speedup_best']:.2f})", r["speedup"], ">=", TARGETS[n])
          for n, r in results.items()]
  rows.append((f"decode FLOP/s / matmul FLOP/s at {big}", frac, ">=",
               TARGETS["matmul"]))
  rows.append((f"fan-out x{w.fanout_samples} / x1 at {fan_name}",
               fan[fan_name], "<=", TARGETS["fan-out"]))
  print_summary(rows)


if __name__ == "__main__":
  main()
