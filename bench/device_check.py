"""Accelerator check: decode throughput, HBM bandwidth use and forward MFU.

Uses only ttcjax's core (models, decoding, study.flops): no Hugging Face,
gin or TensorFlow, so it runs on a bare JAX + Flax host. A ~0.9B-parameter
bfloat16 Llama-shaped model is randomly initialised on the device, then:

  decode   tokens/s at each `--batches` size (prompt `--prompt_len`, then
           `--new_tokens` sampled at temperature 1; prefill + decode), the
           decode step time, and HBM bandwidth use =
           (parameter bytes + KV-cache bytes read per step) / step time /
           `--peak_bw`. Every cache slot is counted: `attend` reads them all;
  forward  MFU of a cache-less forward pass (`lm_logits`, LM head at every
           position) over `--prefill_batch` x `--prefill_len` tokens:
           FLOPs from `ttcjax.analysis.flops.prefill_flops` / time /
           `--peak_flops`, with causal (useful) and dense (computed) counts.

Nothing is asserted. `--tiny` swaps in a small config and shapes so the
script can be checked on a CPU.

  bash bench/device_check.sh                 # H100/H200 defaults
  bash bench/device_check.sh --tiny          # CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import models
from ttcjax.decoding import Decoder, Sampling
from ttcjax.analysis import flops

CONFIG_1B = models.ModelConfig(
    vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=8,
    d_ff=5632, tie_embeddings=False, param_dtype="bfloat16", dtype="bfloat16",
    max_len=4096)
CONFIG_TINY = models.ModelConfig(
    vocab_size=512, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2,
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
                           "(default 1,128; --tiny: 1,4)")
  parser.add_argument("--prompt_len", type=int, default=None)
  parser.add_argument("--new_tokens", type=int, default=None)
  parser.add_argument("--prefill_batch", type=int, default=None)
  parser.add_argument("--prefill_len", type=int, default=None)
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  defaults = dict(batches="1,4", prompt_len=16, new_tokens=32,
                  prefill_batch=2, prefill_len=128) if args.tiny else dict(
                      batches="1,128", prompt_len=128, new_tokens=256,
                      prefill_batch=8, prefill_len=2048)
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  cfg = CONFIG_TINY if args.tiny else CONFIG_1B
  cfg = cfg.replace(max_len=max(cfg.max_len, args.prefill_len,
                                args.prompt_len + args.new_tokens))
  start = time.perf_counter()

  device = jax.devices()[0]
  print(f"jax {jax.__version__}, {jax.device_count()} x {device.platform} "
        f"({device.device_kind}); peak {args.peak_bw / 1e12:.2f} TB/s, "
        f"{args.peak_flops / 1e12:.0f} TFLOP/s")
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
    fmt = "{:>14.1%}" if k == "HBM util" else "{:>14.3f}"
    if k == "tok/s":
      fmt = "{:>14.0f}"
    print(f"{k:16s}" + "".join(fmt.format(rows[b][k]) for b in batches))

  mfu = forward_mfu(cfg, params, args)
  print(f"\nforward {args.prefill_batch} x {args.prefill_len} tokens "
        "(lm_logits, no cache)")
  for k, v in mfu.items():
    print(f"  {k:20s} {v:>10.1%}" if k.startswith("MFU") else
          f"  {k:20s} {v:>10.2f}")
  print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
