"""Countdown problem statistics and generation/checking time.

Draws problems with `tasks.countdown.generate` (the default config, or the
fields given as flags) and prints, overall and per count of numbers:

  * the distribution of the number of solutions and of a random policy's
    solve rate (the problem's difficulty descriptors);
  * redraws: how many (numbers, target) draws were made per accepted problem;
  * string lengths in bytes: question, step lines, whole solution, and
    prompt + solution (what a byte-level model reads);
  * wall time of generation and of `check_steps` / `reachable_after_steps` on
    the reference solutions, against the arithmetic task's `generate` /
    `check_solution_steps` on as many problems, measured in the same run.

  PYTHONPATH=. python bench/countdown_stats.py
  PYTHONPATH=. python bench/countdown_stats.py --num 1000 --max_number 20
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import statistics
import time

from ttcjax.tasks import arithmetic, countdown

_SOLUTION_BINS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, None))


def _quantiles(values, qs=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)):
  s = sorted(values)
  return [s[round(q * (len(s) - 1))] for q in qs]


def _bin_label(lo, hi):
  return f"{lo}" if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}"


def _histogram(problems) -> str:
  counts = collections.Counter()
  for p in problems:
    for lo, hi in _SOLUTION_BINS:
      if p.n_solutions >= lo and (hi is None or p.n_solutions <= hi):
        counts[(lo, hi)] += 1
  n = len(problems)
  return "  ".join(f"{_bin_label(lo, hi)}: {100 * counts[(lo, hi)] / n:4.1f}%"
                   for lo, hi in _SOLUTION_BINS)


def _timed(fn, reps=3):
  """Median wall seconds of ``fn()`` over ``reps`` runs, and its last result."""
  times, out = [], None
  for _ in range(reps):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def _describe(name, problems):
  print(f"\n== {name}: {len(problems)} problems")
  print("  #solutions  " + _histogram(problems))
  print("  #solutions quantiles (0,10,25,50,75,90,100%):",
        _quantiles([p.n_solutions for p in problems]))
  print("  solve rate quantiles:",
        [f"{r:.4f}" for r in _quantiles([p.solve_rate for p in problems])])
  draws = [p.draws for p in problems]
  print(f"  draws per problem: mean {statistics.mean(draws):.2f}, max {max(draws)} "
        f"({sum(draws) - len(draws)} redraws in all)")
  steps = [len(line) for p in problems for line in p.solution.split("\n")[:-1]
           if not line.startswith("####")]
  print(f"  bytes: question max {max(len(p.question) for p in problems)}; step line "
        f"median {statistics.median(steps):.0f}, p99 {_quantiles(steps, (0.99,))[0]}, "
        f"max {max(steps)}; solution mean "
        f"{statistics.mean(len(p.solution) for p in problems):.1f}, max "
        f"{max(len(p.solution) for p in problems)}; prompt+solution max "
        f"{max(len(countdown.prompt(p)) + len(p.solution) for p in problems)}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--reps", type=int, default=3)
  for field in dataclasses.fields(countdown.CountdownConfig):
    parser.add_argument(f"--{field.name}", type=int, default=None)
  args = parser.parse_args()
  config = countdown.CountdownConfig(**{
      f.name: getattr(args, f.name) for f in dataclasses.fields(countdown.CountdownConfig)
      if getattr(args, f.name) is not None})
  print(f"load average {os.getloadavg()[0]:.2f}; {config}")

  gen_s, problems = _timed(lambda: countdown.generate(config, args.num, args.seed), args.reps)
  base_s, arith = _timed(
      lambda: arithmetic.generate(arithmetic.ArithmeticConfig(), args.num, args.seed), args.reps)
  _describe("all", problems)
  for count in sorted({p.n_numbers for p in problems}):
    _describe(f"{count} numbers", [p for p in problems if p.n_numbers == count])

  check_s, _ = _timed(lambda: [countdown.check_steps(p, p.solution) for p in problems],
                      args.reps)
  reach_s, _ = _timed(lambda: [countdown.reachable_after_steps(p, p.solution)
                               for p in problems], args.reps)
  arith_check_s, _ = _timed(lambda: [arithmetic.check_solution_steps(p, p.solution)
                                     for p in arith], args.reps)
  n = len(problems)
  print(f"\n== time (median of {args.reps}), per problem")
  print(f"  generate: countdown {1e3 * gen_s / n:.3f} ms, arithmetic (baseline) "
        f"{1e3 * base_s / n:.3f} ms, ratio {gen_s / base_s:.1f}x; "
        f"{gen_s:.2f} s for {n} problems")
  print(f"  check_steps: countdown {1e3 * check_s / n:.3f} ms, arithmetic "
        f"check_solution_steps (baseline) {1e3 * arith_check_s / n:.3f} ms, ratio "
        f"{check_s / arith_check_s:.1f}x")
  print(f"  reachable_after_steps: {1e3 * reach_s / n:.3f} ms, ratio to countdown "
        f"check_steps {reach_s / check_s:.1f}x")


if __name__ == "__main__":
  main()
