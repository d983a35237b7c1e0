"""Accelerator check: decode throughput, HBM bandwidth use, forward MFU and
the cost of PRM beam search.

Uses only ttcjax's core (models, decoding, search, verifiers,
analysis.flops): no Hugging Face, gin, TensorFlow, optax or orbax, so it
runs on a bare JAX + Flax host. A ~0.9B-parameter bfloat16 Llama-shaped
model is randomly initialised on the device, then:

  decode   tokens/s at each `--batches` size (prompt `--prompt_len`, then
           `--new_tokens` sampled at temperature 1; prefill + decode), the
           decode step time, and HBM bandwidth use =
           (parameter bytes + KV-cache bytes read per step) / step time /
           `--peak_bw`. Every cache slot is counted: `attend` reads them all;
  forward  MFU of a cache-less forward pass (`lm_logits`, LM head at every
           position) over `--prefill_batch` x `--prefill_len` tokens:
           FLOPs from `ttcjax.analysis.flops.prefill_flops` / time /
           `--peak_flops`, with causal (useful) and dense (computed) counts;
  search   beam search N=`--search_n` (16), M=`--search_m` (4) over
           `--search_problems` random prompts, the model as policy and a
           PRM of the same shape (its weights plus a random reward head).
           A synthetic step delimiter (`stepped`) ends every `--step_len`-th
           token's step, EOS after `--search_steps` steps, so every round
           meets the same shapes. Time per round (median over the rounds
           of the timed searches) and the share of the search's wall time
           spent in the verifier (`SearchClock`), with the PRM re-scoring
           every prefix each round (full) and reading only new tokens
           through a KV cache per row (incremental,
           `VerifierFns.incremental`), and the PRM tokens read.

Nothing is asserted. `--tiny` swaps in a small config and shapes (and host
initialised weights) so the script can be checked on a CPU
(tests/test_bench_device_check.py runs it). On an H100/H200 the default run
is estimated at 5-8 minutes, mostly compilation (about 16 compiles of the
1B model, 10 of them for the search; `--skip_search` drops those).

  bash bench/device_check.sh                 # H100/H200 defaults
  bash bench/device_check.sh --tiny          # CPU smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import models, search, testing, verifiers
from ttcjax.verifiers import cached as cached_scores
from ttcjax.analysis import flops
from ttcjax.decoding import Decoder, Sampling
from ttcjax.search import batching, incremental, tree

CONFIG_1B = models.ModelConfig(
    vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=8,
    d_ff=5632, tie_embeddings=False, param_dtype="bfloat16", dtype="bfloat16",
    max_len=4096)
CONFIG_TINY = models.ModelConfig(
    vocab_size=512, d_model=128, n_layers=1, n_heads=4, n_kv_heads=2,
    d_ff=256, tie_embeddings=False, param_dtype="bfloat16", dtype="bfloat16",
    max_len=512)


def _timed(fn, reps: int) -> float:
  """Median seconds of `fn()` over `reps` calls, after one untimed call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def bytes_per_step(cfg: models.ModelConfig, params, cache, batch: int) -> int:
  """HBM bytes a decode step must read: weights plus every cache slot.

  The input embedding is a gather of `batch` rows, not a read of the table
  (unless the table is also the tied LM head).
  """
  total = _nbytes(params) + _nbytes((cache.k, cache.v))
  if not cfg.tie_embeddings:
    table = params["embedding"]
    total -= table.size * table.dtype.itemsize
    total += batch * cfg.d_model * table.dtype.itemsize
  return total


def decode_row(cfg, params, batch: int, args) -> dict[str, float]:
  """Times prefill + decode at `batch` rows; returns the measured numbers."""
  decoder = Decoder(step_fn=models.decode_step_fn(cfg), eos_id=-1,
                    max_gen=args.new_tokens)
  sampler = Sampling(temperature=1.0)
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(
      rng.integers(1, cfg.vocab_size, (batch, args.prompt_len)), jnp.int32)
  mask = jnp.ones(prompts.shape, bool)
  cache = models.init_cache(cfg, batch, args.prompt_len + args.new_tokens)
  rngs = jax.random.split(jax.random.key(1), batch)
  steps = args.new_tokens - 1

  prefill = lambda: decoder.prefill(params, prompts, mask, cache, sampler,
                                    rngs)
  state = jax.block_until_ready(prefill())
  prefill_t = _timed(prefill, args.reps)
  decode_t = _timed(lambda: decoder.decode(params, state, sampler, steps),
                    args.reps)
  step_t = decode_t / steps
  moved = bytes_per_step(cfg, params, cache, batch)
  step_flops = flops.decode_flops(cfg, args.prompt_len + args.new_tokens,
                                  batch, cache_len=cache.max_len)
  return {
      "tok/s": batch * args.new_tokens / (prefill_t + decode_t),
      "prefill ms": prefill_t * 1e3,
      "step ms": step_t * 1e3,
      "MB read/step": moved / 1e6,
      "HBM util": moved / step_t / args.peak_bw,
      "decode TFLOP/s": step_flops / step_t / 1e12,
  }


def forward_mfu(cfg, params, args) -> dict[str, float]:
  """MFU of a cache-less forward pass over a [prefill_batch, prefill_len]."""
  tokens = jnp.asarray(
      np.random.default_rng(2).integers(
          0, cfg.vocab_size, (args.prefill_batch, args.prefill_len)),
      jnp.int32)
  forward = jax.jit(lambda p, t: models.lm_logits(cfg, p, t))
  seconds = _timed(lambda: forward(params, tokens), args.reps)
  out = {"forward ms": seconds * 1e3}
  for mode in ("causal", "dense"):
    count = flops.prefill_flops(cfg, args.prefill_len, args.prefill_batch,
                                attention=mode)
    out[f"TFLOP/s ({mode})"] = count / seconds / 1e12
    out[f"MFU ({mode})"] = count / seconds / args.peak_flops
  return out


# Synthetic token ids of the search section: the policy's step delimiter,
# EOS and prompt padding (the vocabulary's other ids are prompt filler).
NL_ID, EOS_ID, PAD_ID = 10, 2, 0


def stepped(fn, cfg: models.ModelConfig, prompt_len: int, step_len: int,
            steps: int):
  """`fn` (a step or prefill callback) with a synthetic step delimiter.

  The random model's logits get a bias so that every `step_len`-th
  generated token ends a step, a newline (`NL_ID`) or, at the end of step
  `steps`, EOS, and no other token does: every row ends its steps together
  and every search meets the same shapes, so the warm-up run compiles all
  the timed runs need. Prompts must be `prompt_len` real tokens.
  """
  table = np.zeros((3, cfg.vocab_size), np.float32)
  table[0, [NL_ID, EOS_ID]] = -1e9  # inside a step
  table[1:] = -1e9
  table[1, NL_ID] = table[2, EOS_ID] = 0.0  # a step's end; the last one's
  table = jnp.asarray(table)

  def biased(params, tokens, token_mask, cache):
    logits, cache = fn(params, tokens, token_mask, cache)
    # `next_pos` is the position of the token these logits sample.
    made = cache.next_pos - prompt_len + 1
    kind = jnp.where(made % step_len == 0,
                     jnp.where(made >= steps * step_len, 2, 1), 0)
    bias = table[kind]
    return logits + (bias if logits.ndim == 2 else bias[:, None, :]), cache

  return biased


def with_reward_head(cfg: models.ModelConfig, params, rng: jax.Array):
  """A PRM of the policy's shape: its parameters plus a random `d_model ->
  1` reward head (as the study's PRMs start from the policy). It costs
  what a separately initialised PRM would, without a second init."""
  shapes = models.param_shapes(cfg.replace(reward_head=True))["reward_head"]
  kernel = shapes["kernel"]
  head = {"kernel": (jax.random.normal(rng, kernel.shape) * cfg.d_model**-0.5
                     ).astype(kernel.dtype),
          "bias": jnp.zeros(shapes["bias"].shape, shapes["bias"].dtype)}
  return {**params, "reward_head": head}


class SearchClock:
  """While installed, times a tree search's rounds and verifier calls.

  A round starts at each `decode_step` of `ttcjax.search.tree` (one per
  round); the verifier's time is that of `batching.score_rows` (full
  re-scoring) or `incremental.RowCache` (the prompt read and `score`), each
  waited for (both return host values).
  """

  def __init__(self):
    self.starts, self.verify = [], 0.0

  def _timed_verifier(self, fn, block=lambda out, args: out):
    def timed(*args):
      start = time.perf_counter()
      out = fn(*args)
      jax.block_until_ready(block(out, args))
      self.verify += time.perf_counter() - start
      return out
    return timed

  def __enter__(self):
    self._saved = (tree.decode_step, batching.score_rows,
                   incremental.RowCache.score, incremental.RowCache.__init__)
    decode = tree.decode_step

    def timed_decode(*args):
      self.starts.append(time.perf_counter())
      return decode(*args)

    tree.decode_step = timed_decode
    batching.score_rows = self._timed_verifier(batching.score_rows)
    incremental.RowCache.score = self._timed_verifier(
        incremental.RowCache.score)
    # The prompt read: wait for the cache it fills.
    incremental.RowCache.__init__ = self._timed_verifier(
        incremental.RowCache.__init__, lambda out, args: args[0].cache)
    return self

  def __exit__(self, *exc):
    (tree.decode_step, batching.score_rows, incremental.RowCache.score,
     incremental.RowCache.__init__) = self._saved


def search_rows(policy_cfg, params, prm_params, args) -> dict[str, dict]:
  """Times beam search (N = `--search_n`, M = `--search_m`) with a PRM of
  the policy's shape, re-scoring every prefix each round ('full') and read
  through a KV cache per row ('incremental'); returns each's numbers."""
  max_gen = args.search_steps * args.step_len
  prompt_len = args.search_prompt_len
  prm_cfg = policy_cfg.replace(reward_head=True)
  policy = search.PolicyFns(
      decoder=Decoder(
          step_fn=stepped(models.decode_step_fn(policy_cfg), policy_cfg,
                          prompt_len, args.step_len, args.search_steps),
          prefill_fn=stepped(models.prefill_fn(policy_cfg), policy_cfg,
                             prompt_len, args.step_len, args.search_steps),
          eos_id=EOS_ID, stop_ids=(NL_ID,), max_gen=max_gen),
      params=params,
      init_cache=functools.partial(models.init_cache, policy_cfg),
      max_len=prompt_len + max_gen + args.step_len, pad_id=PAD_ID,
      prompt_len=prompt_len)
  full = search.VerifierFns(
      score_fn=verifiers.reward_head_score_fn(
          functools.partial(models.reward_scores, prm_cfg)),
      params=prm_params, max_len=prompt_len + max_gen, pad_id=PAD_ID)
  cached = dataclasses.replace(full, incremental=search.IncrementalVerifier(
      init_cache=functools.partial(models.init_cache, prm_cfg),
      extend_fn=cached_scores.extend_fn(prm_cfg),
      max_len=2 * (prompt_len + max_gen)))
  # Prompts of ids above NL_ID: no delimiter, EOS or padding in them.
  rng = np.random.default_rng(3)
  problems = [search.SearchProblem(f"p{i}", tuple(
      rng.integers(NL_ID + 1, policy_cfg.vocab_size, prompt_len).tolist()))
              for i in range(args.search_problems)]
  task = search.TaskFns(answer_fn=lambda ids: None,
                        equiv_fn=lambda a, b: a == b)
  config = search.make_config("beam", beam_width=args.search_m,
                              max_rounds=args.search_steps + 1)
  out = {}
  for name, verifier in (("full", full), ("incremental", cached)):
    run = lambda i: search.run_search(config, problems, args.search_n,
                                      policy, verifier, task,
                                      jax.random.key(10 + i))
    start = time.perf_counter()
    run(0)  # compiles every shape of the timed runs (see `stepped`)
    warm = time.perf_counter() - start
    rounds, walls, shares, reads = [], [], [], []
    for i in range(args.reps):
      with SearchClock() as clock:
        start = time.perf_counter()
        results = run(i + 1)
        end = time.perf_counter()
      walls.append(end - start)
      shares.append(clock.verify / (end - start))
      rounds += np.diff(clock.starts + [end]).tolist()
      reads.append(sum(r.verifier_tokens_read for r in results))
    out[name] = {
        "rounds": len(rounds) / args.reps,
        "round ms": statistics.median(rounds) * 1e3,
        "search s": statistics.median(walls),
        "verify share": statistics.median(shares),
        "PRM tokens read": statistics.median(reads),
        "warm-up s": warm,
    }
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tiny", action="store_true",
                      help="small config and shapes (CPU smoke run)")
  parser.add_argument("--peak_bw", type=float, default=4.8e12,
                      help="peak HBM bandwidth, bytes/s (H200: 4.8e12, "
                           "H100 SXM: 3.35e12)")
  parser.add_argument("--peak_flops", type=float, default=989e12,
                      help="peak dense bf16 FLOP/s (H100/H200 SXM: 989e12)")
  parser.add_argument("--batches", default=None,
                      help="comma-separated decode batch sizes "
                           "(default 1,128; --tiny: 4)")
  parser.add_argument("--prompt_len", type=int, default=None)
  parser.add_argument("--new_tokens", type=int, default=None)
  parser.add_argument("--prefill_batch", type=int, default=None)
  parser.add_argument("--prefill_len", type=int, default=None)
  parser.add_argument("--reps", type=int, default=None,
                      help="timed repetitions (default 3; --tiny: 2)")
  parser.add_argument("--search_problems", type=int, default=None,
                      help="beam search prompts (default 8; --tiny: 2)")
  parser.add_argument("--search_n", type=int, default=16,
                      help="beam search budget N (rows per prompt)")
  parser.add_argument("--search_m", type=int, default=4,
                      help="beam width M: N/M beams kept, M children each")
  parser.add_argument("--search_prompt_len", type=int, default=None,
                      help="beam search prompt tokens (default 128; "
                           "--tiny: 16)")
  parser.add_argument("--step_len", type=int, default=None,
                      help="tokens per synthetic step (default 32; "
                           "--tiny: 4)")
  parser.add_argument("--search_steps", type=int, default=None,
                      help="steps per solution = rounds (default 6; "
                           "--tiny: 3)")
  parser.add_argument("--skip_search", action="store_true",
                      help="skip the beam search section")
  args = parser.parse_args()
  defaults = dict(
      batches="4", prompt_len=16, new_tokens=32, prefill_batch=2,
      prefill_len=128, reps=2, search_problems=2, search_prompt_len=16,
      step_len=4, search_steps=3) if args.tiny else dict(
          batches="1,128", prompt_len=128, new_tokens=256, prefill_batch=8,
          prefill_len=2048, reps=3, search_problems=8, search_prompt_len=128,
          step_len=32, search_steps=6)
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  cfg = CONFIG_TINY if args.tiny else CONFIG_1B
  cfg = cfg.replace(max_len=max(cfg.max_len, args.prefill_len,
                                args.prompt_len + args.new_tokens))
  start = time.perf_counter()

  device = jax.devices()[0]
  print(f"jax {jax.__version__}, {jax.device_count()} x {device.platform} "
        f"({device.device_kind}); peak {args.peak_bw / 1e12:.3g} TB/s, "
        f"{args.peak_flops / 1e12:.3g} TFLOP/s")
  if args.tiny:  # compiling the initialisers takes ~10 s on a CPU
    params = jax.tree.map(lambda x, shape: jnp.asarray(x, shape.dtype),
                          testing.numpy_params(cfg, stddev=None),
                          models.param_shapes(cfg))
  else:
    params = models.init_params(cfg, jax.random.key(0))
  jax.block_until_ready(params)
  print(f"model: {cfg.num_params() / 1e6:.1f}M params "
        f"({_nbytes(params) / 1e6:.1f} MB {cfg.param_dtype}), "
        f"{cfg.n_layers} layers, d={cfg.d_model}, "
        f"heads {cfg.n_heads}/{cfg.n_kv_heads} kv, d_ff {cfg.d_ff}, vocab "
        f"{cfg.vocab_size}; init {time.perf_counter() - start:.1f} s")
  print(f"decode: prompt {args.prompt_len}, {args.new_tokens} new tokens, "
        f"temperature 1; median of {args.reps} after a warm-up\n")

  batches = [int(b) for b in args.batches.split(",") if b]
  rows = {b: decode_row(cfg, params, b, args) for b in batches}
  keys = list(rows[batches[0]])
  print(f"{'decode':16s}" + "".join(f"{'batch ' + str(b):>14s}"
                                    for b in batches))
  for k in keys:
    fmt = "{:>14.1%}" if k == "HBM util" else "{:>14.4g}"
    if k == "tok/s":
      fmt = "{:>14.0f}"
    print(f"{k:16s}" + "".join(fmt.format(rows[b][k]) for b in batches))

  mfu = forward_mfu(cfg, params, args)
  print(f"\nforward {args.prefill_batch} x {args.prefill_len} tokens "
        "(lm_logits, no cache)")
  for k, v in mfu.items():
    print(f"  {k:20s} {v:>10.1%}" if k.startswith("MFU") else
          f"  {k:20s} {v:>10.4g}")

  if not args.skip_search:
    section = time.perf_counter()
    prm_params = with_reward_head(cfg, params, jax.random.key(4))
    rows = search_rows(cfg, params, prm_params, args)
    print(f"\nbeam search N={args.search_n}, M={args.search_m}: "
          f"{args.search_problems} prompts x {args.search_n} rows, prompt "
          f"{args.search_prompt_len}, {args.search_steps} steps of "
          f"{args.step_len} tokens (synthetic delimiter); PRM = the policy's "
          f"shape + reward head\n(random init), re-scoring every prefix "
          f"(full) or reading new tokens through a KV cache per row "
          f"(incremental); median of {args.reps} after a warm-up")
    print(f"{'PRM scoring':16s}" + "".join(f"{name:>14s}" for name in rows))
    for k in rows["full"]:
      fmt = "{:>14.1%}" if k == "verify share" else "{:>14.4g}"
      if k in ("rounds", "PRM tokens read"):
        fmt = "{:>14.0f}"
      print(f"{k:16s}" + "".join(fmt.format(r[k]) for r in rows.values()))
    print(f"search section {time.perf_counter() - section:.1f} s")
  print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
