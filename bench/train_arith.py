"""Trains and evaluates the arithmetic study's models; prints the figures.

Runs a preset's stages (`ttcjax.experiments`) into a workdir, finished stages
skipped, then prints: the policy's training wall time, pass@1 overall, by
difficulty bucket and by quantile bin, the PRM's ROC AUC on held-out
samples next to a difficulty-only baseline (AUC of -(n_ops, digits) on the
same samples), and the revision model's pass@1 by attempt with the ratio of
the last attempt to the first. Then PASS/MISS against the targets:

  * policy trained in <= 5 min (wall time, compile included);
  * overall pass@1 in [20%, 80%], easiest bucket - hardest bucket >= 30 pts;
  * PRM AUC ('last') >= 0.8;
  * revision pass@1 at the last attempt > at the first.

Timings depend on the machine's load (printed); other processes on a shared
2-core machine can double them.

  python bench/train_arith.py --preset smoke
  python bench/train_arith.py --preset arith_cpu --workdir /tmp/arith_cpu
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from ttcjax import checkpoint, experiments
from ttcjax.experiments import embedded, evaluate


def _pct(x) -> str:
  return "  n/a" if x is None or x != x else f"{100 * x:5.1f}%"


def _f3(x) -> str:
  return "n/a" if x is None or x != x else f"{x:.3f}"


def _difficulty_auc(workdir: str) -> float:
  rows = embedded.load_rows(os.path.join(workdir, "eval_policy", "samples.json"))
  scores = [-(r["n_ops"] * 10 + r["digits"]) for r in rows
            for _ in r["correct"]]
  return evaluate.roc_auc(scores, [ok for r in rows for ok in r["correct"]])


def report(workdir: str) -> None:
  s = evaluate.summarize(workdir)
  policy = checkpoint.load_config(
      os.path.join(workdir, "pretrain_policy", "model"))
  print(f"policy: {policy.num_params():,} parameters (d_model "
        f"{policy.d_model}, {policy.n_layers} layers)")
  train_s = s.get("train_seconds", {}).get("pretrain_policy")
  stage_s = s["seconds"].get("pretrain_policy")
  cpu_s = s["train_cpu_seconds"].get("pretrain_policy")
  print(f"policy training: {stage_s} s wall for the stage (data + train + "
        f"save); {train_s} s wall and {cpu_s} s CPU in train()")
  pol = s["eval_policy"]
  print(f"policy pass@1: {_pct(pol['pass_at_1'])} over {pol['problems']} "
        f"problems x {pol['samples_per_problem']} samples")
  for b in pol["by_difficulty"]:
    print(f"  n_ops={b['n_ops']} digits={b['digits']}: "
          f"{_pct(b['pass_at_1'])} ({b['problems']} problems)")
  for b in pol["by_quantile"]:
    print(f"  quantile bin {b['bin']}: {_pct(b['pass_at_1'])} "
          f"(range {_pct(b['min'])}..{_pct(b['max'])})")
  prm = s["eval_prm"]
  base = _difficulty_auc(workdir)
  print(f"PRM AUC: last {_f3(prm['auc_last'])}  min {_f3(prm['auc_min'])}  "
        f"within-problem last {_f3(prm['auc_last_within'])} "
        f"({prm['problems_with_both']} problems)  "
        f"[{prm['correct']}/{prm['samples']} correct]")
  ratio = (prm["auc_last"] or float("nan")) / base
  print(f"  baseline (difficulty prior) AUC {_f3(base)}; PRM/baseline "
        f"{ratio:.2f}x")
  rev = s["eval_revision"]
  by = rev["pass_at_1_by_attempt"]
  print("revision pass@1 by attempt: " + "  ".join(
      f"{j + 1}:{_pct(p)}" for j, p in enumerate(by)) +
        f"   last/first " + (f"{by[-1] / by[0]:.2f}x" if by[0] else "n/a") +
        "; solved by attempt "
        + " ".join(_pct(p) for p in rev["solved_by_attempt"]) +
        f"; ORM-selected {_pct(rev['selected_accuracy'])}")
  rates = [b["pass_at_1"] for b in pol["by_difficulty"]]
  checks = [
      ("policy trained in <= 300 s", stage_s is not None and stage_s <= 300),
      ("overall pass@1 in [20%, 80%]", 0.2 <= pol["pass_at_1"] <= 0.8),
      ("difficulty spread >= 30 pts", rates[0] - rates[-1] >= 0.3),
      ("PRM AUC >= 0.8", (prm["auc_last"] or 0) >= 0.8),
      ("revision pass@1 rises first -> last", by[-1] > by[0]),
  ]
  for name, ok in checks:
    print(f"  {'PASS' if ok else 'MISS'}  {name}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="smoke",
                      choices=sorted(embedded.PRESETS))
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--fresh", action="store_true",
                      help="delete the workdir first")
  parser.add_argument("--on_change", default="error",
                      choices=("error", "rerun"),
                      help="finished stages whose config changed: raise, "
                      "or recompute them and what reads them")
  parser.add_argument("--report_only", action="store_true",
                      help="print the figures of a finished workdir")
  args = parser.parse_args()
  workdir = args.workdir or f"/tmp/ttcjax_bench/{args.preset}"
  if args.fresh and os.path.exists(workdir):
    shutil.rmtree(workdir)
  if args.report_only:
    report(workdir)
    return
  print(f"load average {os.getloadavg()} on {os.cpu_count()} cores")
  began = time.perf_counter()
  experiments.run_arith_study(embedded.PRESETS[args.preset](), workdir,
                           on_change=args.on_change,
                           log=lambda line: print(line, flush=True))
  print(f"study: {time.perf_counter() - began:.0f} s this run; load average "
        f"{os.getloadavg()}")
  report(workdir)


if __name__ == "__main__":
  main()
