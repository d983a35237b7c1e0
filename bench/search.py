"""Overhead of the search engine over plain sampling, and of PRM scoring
over a plain forward pass. Printed, never asserted.

Model: a random byte-level decoder (vocab 259, d_model 256, 4 layers, 8
heads / 4 kv heads, d_ff 768). Its logits get a bias on the newline (step
delimiter) and EOS ids, in two regimes:

* random: a fixed bias, so step lengths are geometric (mean 10 tokens)
  and solutions end after ~60 tokens: a round, which lasts until the
  batch's longest step ends, idles most rows;
* regular: every 10th token of a row ends a step (newline, or EOS with
  probability 1/6): what a trained model on the arithmetic task looks like,
  so rows end their steps together.

The baseline uses the same biased step function, so both sides pay the
same per-token model cost.

1. Search wall time per generated policy token, over plain batched
   sampling (`Decoder.prefill` + `decode` of the same rows, EOS disabled so
   every row makes the same number of tokens, about as many in total as
   the search generated). Beam search and lookahead search, with a toy PRM
   (a cheap function of the prefix: this isolates the engine's overhead:
   rows idling until the batch's longest step ends, host syncs, beam
   gathers, roll-out rollback) and, for beam search, with a random
   reward-head PRM of the same shape (the real cost: the PRM re-reads every
   prefix each round), and with that PRM read incrementally ('cached PRM':
   `VerifierFns.incremental`, a KV cache per row, only new tokens read;
   beam and lookahead). Target: <= 1.3x with the toy PRM. The split of the
   search's time into decode calls, verifier calls and the rest is printed,
   and the same search with its cache allocated at full size from the start
   and no straggler batches (`PolicyFns.grow_cache=False`,
   `straggler_fraction=0`) is timed alternately with it.
2. PRM scoring of N candidates with `verifiers.step_scores` (scores at
   every step end, packed) over one plain forward pass of the same batch
   (`models.apply(heads=('reward',))`). Target: <= 1.1x.

Medians over `--reps` repetitions after a warm-up (compile excluded). In
part 1 each repetition times the search, the full-cache search and both
plain baselines back to back, and ratios are taken per repetition, so a
load that drifts on a busy machine cancels.

  python bench/search.py            # about 9 minutes on 2 busy cores, plus
                                    # ~10 for the PRM runs
  python bench/search.py --quick    # smoke run
  python bench/search.py --only regular,toy --skip_prm   # a subset
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import decoding, models, search, testing, verifiers
from ttcjax.experiments import callbacks
from ttcjax.search import batching, incremental, stepping, tree
from ttcjax.tasks import arithmetic
from ttcjax.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
NL = TOK.encode("\n")[0]
CONFIG = models.ModelConfig(vocab_size=TOK.vocab_size, d_model=256,
                            n_layers=4, n_heads=8, n_kv_heads=4, d_ff=768,
                            max_len=1024)
TARGETS = {"search": 1.3, "prm": 1.1}


def biased_step_fn(config: models.ModelConfig, step_len: float,
                   solution_len: float):
  """The model's step function with newline / EOS logits raised so that
  P(newline) ~ 1/step_len and P(EOS) ~ 1/solution_len per token."""
  base = models.decode_step_fn(config)
  others = config.vocab_size - 2
  bias = np.zeros(config.vocab_size, np.float32)
  bias[NL] = np.log(others / (step_len - 1))
  bias[TOK.eos_id] = np.log(others / solution_len)
  bias = jnp.asarray(bias)

  def step(params, tokens, token_mask, cache):
    logits, cache = base(params, tokens, token_mask, cache)
    return logits + bias, cache

  return step


def regular_step_fn(config: models.ModelConfig, step_len: int,
                    steps: float):
  """Every `step_len`-th token of a row ends a step: a newline, or EOS with
  probability 1/`steps` (a trained model's regime: steps of regular
  length, so rows of a round end their steps together). Elsewhere newline
  and EOS are suppressed."""
  base = models.decode_step_fn(config)
  at_end, inside = np.zeros((2, config.vocab_size), np.float32)
  at_end[:] = -30.0
  at_end[NL], at_end[TOK.eos_id] = np.log(steps - 1.0), 0.0
  inside[NL] = inside[TOK.eos_id] = -30.0
  at_end, inside = jnp.asarray(at_end), jnp.asarray(inside)

  def step(params, tokens, token_mask, cache):
    logits, cache = base(params, tokens, token_mask, cache)
    # The next token is the row's (next_pos + 1)-th.
    boundary = (cache.next_pos + 1) % step_len == 0
    bias = jnp.where(boundary[:, None], at_end, inside)[:, None, :]
    return logits + bias, cache

  return step


def toy_prm(params, tokens, token_mask):
  """A deterministic score in (0, 1) of each prefix, at negligible cost."""
  del params
  mixed = jnp.cumsum(jnp.where(token_mask, tokens, 0), axis=1)
  return jax.nn.sigmoid(jnp.sin(mixed.astype(jnp.float32) * 0.37))


def _timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def _median_time(fn, reps):
  times = []
  for i in range(reps):
    start = time.perf_counter()
    out = fn(i)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


class Split:
  """Wall time spent in decode calls and verifier calls during a search."""

  def __init__(self):
    self.decode = self.score = 0.0

  def install(self):
    decode, score = tree.decode_step, batching.score_rows  # same function

    def timed_decode(*args):
      start = time.perf_counter()
      state = jax.block_until_ready(decode(*args))
      self.decode += time.perf_counter() - start
      return state

    def timed_score(*args):
      start = time.perf_counter()
      out = score(*args)
      self.score += time.perf_counter() - start
      return out

    extend = incremental.RowCache.score

    def timed_extend(*args):
      start = time.perf_counter()
      out = extend(*args)  # it waits for its scores
      self.score += time.perf_counter() - start
      return out

    # Roll-outs call stepping.decode_step, the tree's rounds tree's.
    tree.decode_step = stepping.decode_step = timed_decode
    batching.score_rows = timed_score
    incremental.RowCache.score = timed_extend
    return lambda: (setattr(tree, "decode_step", decode),
                    setattr(stepping, "decode_step", decode),
                    setattr(batching, "score_rows", score),
                    setattr(incremental.RowCache, "score", extend))


def bench_search(args, params, prm_params, scenarios):
  problems = [search.SearchProblem(p.uid, TOK.encode(arithmetic.prompt(p)))
              for p in arithmetic.generate(arithmetic.ArithmeticConfig(),
                                           args.problems, seed=0)]
  prompt_len = 32
  task = search.TaskFns(
      answer_fn=lambda ids: arithmetic.extract_answer(TOK.decode(ids)),
      equiv_fn=lambda a, b: a == b)
  width = prompt_len + args.max_gen
  toy = search.VerifierFns(score_fn=toy_prm, params={}, max_len=width)
  prm_cfg = CONFIG.replace(reward_head=True)
  real = search.VerifierFns(
      score_fn=verifiers.reward_head_score_fn(
          functools.partial(models.reward_scores, prm_cfg)),
      params=prm_params, max_len=width)
  # The same PRM read through a KV cache per row: new tokens only.
  real_inc = dataclasses.replace(
      real, incremental=callbacks.incremental_verifier(
          prm_cfg, int(args.cache_factor * width)))
  rows = args.problems * args.budget

  ids, mask = batching.pad_prompts(problems, TOK.pad_id, prompt_len)

  def sample(plain, tokens, seed, slots=None):
    """Baseline: the same rows, `tokens` each (EOS disabled)."""
    rngs = jax.random.split(jax.random.key(seed), rows)
    cache = models.init_cache(CONFIG, len(problems),
                              slots or prompt_len + tokens)
    state = plain.prefill(params, ids, mask, cache, decoding.Sampling(1.0),
                          rngs, args.budget)
    return plain.decode(params, state, decoding.Sampling(1.0), tokens - 1,
                        "eos").num_generated

  beam_kw, look_kw = dict(beam_width=args.width), dict(beam_width=args.width,
                                                       lookahead=1)
  big, small = args.cache_factor, args.tight_cache_factor
  runs = [("random", "beam", "toy", beam_kw, toy, big),
          ("random", "lookahead", "toy", look_kw, toy, big),
          ("random", "beam", "random PRM", beam_kw, real, big),
          ("random", "beam", "cached PRM", beam_kw, real_inc, big),
          ("regular", "beam", "random PRM", beam_kw, real, big),
          ("regular", "beam", "cached PRM", beam_kw, real_inc, big),
          ("regular", "lookahead", "random PRM", look_kw, real, big),
          ("regular", "lookahead", "cached PRM", look_kw, real_inc, big),
          ("regular", "beam", "toy", beam_kw, toy, big),
          ("regular", "lookahead", "toy", look_kw, toy, big),
          ("regular", "beam", "toy", beam_kw, toy, small),
          ("regular", "lookahead", "toy", look_kw, toy, small)]
  print(f"\n1. search over plain sampling: {args.problems} problems x "
        f"N={args.budget} = {rows} rows, M={args.width}, max_gen="
        f"{args.max_gen}; medians of {args.reps}")
  print("cache: slots per row (prompt 32 + factor x max_gen); iters: "
        "decode-loop steps of the batch (a round lasts as long as its\n"
        "longest step, all problems together, plus roll-outs); util: tokens "
        "/ (rows x iters); plain: us per token of plain sampling\n(tight "
        "cache); ratio: search us/token over plain; full: the same search "
        "on a full-size cache, no straggler\nbatches (grow_cache=False, "
        "straggler_fraction=0, timed alternately); =cache: over plain sampling with the search's full "
        "cache; per-iter: search\ndecode time per iteration over plain's "
        "with the full cache; decode / verify / other: seconds of the "
        "search; read: verifier tokens read")
  print(f"{'steps':<8} {'strategy':<10} {'PRM':<11} {'cache':>5} "
        f"{'tokens':>6} {'rounds':>6} {'iters':>5} {'util':>5} "
        f"{'us/tok':>7} {'plain':>6} {'ratio':>6} {'full':>6} {'=cache':>6} "
        f"{'per-iter':>8} {'decode':>6} {'verify':>6} {'other':>5} "
        f"{'read':>7}")
  ratios = {}
  for scenario, strategy, prm_name, kw, verifier, factor in runs:
    if args.only and not all(word in f"{scenario} {strategy} {prm_name}"
                             for word in args.only.split(",")):
      continue
    step_fn = scenarios[scenario]
    cache_len = prompt_len + int(factor * args.max_gen)
    policy = search.PolicyFns(
        decoder=decoding.Decoder(step_fn, eos_id=TOK.eos_id, stop_ids=(NL,),
                                 max_gen=args.max_gen),
        params=params, init_cache=lambda b, n: models.init_cache(CONFIG, b, n),
        max_len=cache_len, pad_id=TOK.pad_id, prompt_len=prompt_len)
    # The engine without the cache growth and straggler batches.
    full_policy = dataclasses.replace(policy, grow_cache=False,
                                      straggler_fraction=0.0)
    plain = decoding.Decoder(step_fn, eos_id=-1, max_gen=args.max_gen)
    config = search.make_config(strategy, max_rounds=40, trace=True, **kw)
    run = lambda i, policy, config=config, verifier=verifier: (
        search.run_search(config, problems, args.budget, policy, verifier,
                          task, jax.random.key(100 + i)))
    # Compile every shape the timed runs meet (cache and verifier sizes
    # depend on the run).
    warm = [run(i, policy) for i in range(args.reps)][0]
    run(0, full_policy)
    made = sum(r.policy_tokens_generated for r in warm)
    per_row = max(2, min(args.max_gen, int(np.ceil(made / rows))))
    sample(plain, per_row, 0)  # compile
    sample(plain, per_row, 0, cache_len)
    # Every repetition times all four, so load drifts cancel in its ratios.
    split, rec = Split(), {}
    for i in range(args.reps):
      split.decode = split.score = 0.0
      restore = split.install()
      try:
        seconds, results = _timed(lambda: run(i, policy))
      finally:
        restore()
      full_seconds, _ = _timed(lambda: run(i, full_policy))
      base, _ = _timed(lambda: sample(plain, per_row, i))
      same, _ = _timed(lambda: sample(plain, per_row, i, cache_len))
      made = sum(r.policy_tokens_generated for r in results)
      depth = max(len(r.trace) for r in results)
      iters = 0
      for k in range(depth):
        traces = [r.trace[k] for r in results if len(r.trace) > k]
        iters += max(max(t.new_tokens) for t in traces)
        iters += max(max(t.rollout_tokens) for t in traces)
      base_tok, same_tok = base / (rows * per_row), same / (rows * per_row)
      for k, v in (("us", 1e6 * seconds / made), ("plain", 1e6 * base_tok),
                   ("ratio", seconds / made / base_tok),
                   ("full", full_seconds / made / base_tok),
                   ("same", seconds / made / same_tok),
                   ("util", made / (rows * iters)), ("tokens", made),
                   ("iters", iters), ("rounds", depth),
                   ("read", sum(r.verifier_tokens_read for r in results)),
                   ("per_iter", split.decode / iters / (same / per_row)),
                   ("decode", split.decode), ("score", split.score),
                   ("other", seconds - split.decode - split.score)):
        rec.setdefault(k, []).append(v)
    m = {k: statistics.median(v) for k, v in rec.items()}
    ratios[(scenario, strategy, prm_name, cache_len)] = m["ratio"]
    print(f"{scenario:<8} {strategy:<10} {prm_name:<11} {cache_len:>5} "
          f"{m['tokens']:>6.0f} {m['rounds']:>6.0f} {m['iters']:>5.0f} "
          f"{m['util']:>5.2f} {m['us']:>7.0f} {m['plain']:>6.0f} "
          f"{m['ratio']:>5.2f}x {m['full']:>5.2f}x {m['same']:>5.2f}x "
          f"{m['per_iter']:>7.2f}x {m['decode']:>6.2f} {m['score']:>6.2f} "
          f"{max(m['other'], 0):>5.2f} {m['read']:>7.0f}")
  return ratios


def bench_prm(args, prm_params):
  cfg = CONFIG.replace(reward_head=True)
  n, length = args.budget * args.problems, args.prm_len
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (n, length)).astype(np.int32)
  lengths = rng.integers(length // 2, length + 1, n)
  mask = np.arange(length)[None] < lengths[:, None]
  ends = mask & ((np.arange(length)[None] % 12 == 11) |
                 (np.arange(length)[None] == lengths[:, None] - 1))
  score_fn = verifiers.reward_head_score_fn(
      functools.partial(models.reward_scores, cfg))
  plain = jax.jit(lambda p, t, m: models.apply(cfg, p, t, m,
                                               heads=("reward",))[0]["reward"])
  tokens, mask, ends = map(jnp.asarray, (tokens, mask, ends))
  step = lambda i: verifiers.step_scores(score_fn, prm_params, tokens, mask,
                                         ends)
  forward = lambda i: plain(prm_params, tokens, mask)
  jax.block_until_ready((step(0), forward(0)))
  reps = 2 * args.reps + 1
  t_plain, _ = _median_time(forward, reps)
  t_step, _ = _median_time(step, reps)
  t_plain2, _ = _median_time(forward, reps)  # drift check
  base = min(t_plain, t_plain2)
  print(f"\n2. PRM scoring of {n} candidates x {length} tokens, median of "
        f"{reps}")
  print(f"plain forward (reward head): {1e3 * t_plain:.1f} ms, again "
        f"{1e3 * t_plain2:.1f} ms")
  print(f"step_scores (scores at {int(ends.sum())} step ends, packed): "
        f"{1e3 * t_step:.1f} ms -> {t_step / base:.3f}x")
  return t_step / base


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--problems", type=int, default=4)
  parser.add_argument("--budget", type=int, default=16)
  parser.add_argument("--width", type=int, default=4)
  parser.add_argument("--max_gen", type=int, default=96)
  parser.add_argument("--cache_factor", type=float, default=4.0)
  parser.add_argument("--tight_cache_factor", type=float, default=1.5)
  parser.add_argument("--prm_len", type=int, default=128)
  parser.add_argument("--only", default="",
                      help="comma-separated words a search run's "
                      "'steps strategy PRM' must all contain, e.g. "
                      "'regular,toy'")
  parser.add_argument("--skip_prm", action="store_true",
                      help="skip part 2 (PRM scoring)")
  args = parser.parse_args()
  if args.quick:
    args.reps, args.problems, args.budget, args.max_gen = 1, 2, 4, 32
    args.width, args.prm_len = 2, 48
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cpus, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print(f"model: {CONFIG.num_params() / 1e6:.2f}M params (vocab "
        f"{CONFIG.vocab_size}, d {CONFIG.d_model}, {CONFIG.n_layers} layers)")
  params = testing.numpy_params(CONFIG, seed=0, stddev=0.02)
  prm_params = testing.numpy_params(CONFIG.replace(reward_head=True), seed=1,
                                    stddev=0.02)
  scenarios = {"random": biased_step_fn(CONFIG, step_len=10,
                                        solution_len=60),
               "regular": regular_step_fn(CONFIG, step_len=10, steps=6)}
  ratios = bench_search(args, params, prm_params, scenarios)
  prm = None if args.skip_prm else bench_prm(args, prm_params)
  print("\nsummary (targets: search with toy PRM <= "
        f"{TARGETS['search']}x, PRM scoring <= {TARGETS['prm']}x)")
  for (scenario, strategy, prm_name, cache), ratio in ratios.items():
    target = TARGETS["search"] if prm_name == "toy" else None
    verdict = ("" if target is None else
               " PASS" if ratio <= target else " MISS")
    print(f"  {scenario:<8} {strategy:<10} {prm_name:<11} cache {cache:>3} "
          f"{ratio:5.2f}x{verdict}")
  if prm is not None:
    print(f"  PRM scoring                               {prm:5.3f}x "
          f"{'PASS' if prm <= TARGETS['prm'] else 'MISS'}")


if __name__ == "__main__":
  main()
