r"""Per-device memory and chip-hours of the MATH-500 experiment.

Prints two tables for `gin_configs/experiments/math500_tpu.gin` (policy
Qwen2.5-Math-1.5B, PRM of Qwen2.5-Math-PRM-7B's shape, bf16):

1. memory per device (`ttcjax.memory`): parameters of both models, the
   policy's KV cache and the largest activation peak, against HBM, for each
   layout of `memory.MATH500_LAYOUTS` plus two that do not fit (the default
   rules on a `model`=4 mesh, and everything replicated), with the most rows
   each layout holds. Baseline: the same batch with every array replicated.
2. FLOPs (`ttcjax.analysis.flops.search_flops`) and chip-hours for the 500
   problems at budgets 16/64/256, best-of-N and beam search, on TPU v4 and
   v5e at the stated MFU.

No device is used; it runs in seconds on a laptop.

  python bench/memory_table.py [--rows=256] [--mfu_decode=0.1] \
      [--mfu_score=0.4]
"""

from __future__ import annotations

import argparse
import dataclasses

from ttcjax import memory
from ttcjax.analysis import flops

GiB = memory.GiB

# Token assumptions for the chip-hours (averages over MATH-500).
PROMPT_TOKENS = 160    # chat template (~30) + problem (~130 Qwen tokens)
SOLUTION_TOKENS = 512  # generated tokens per finished solution
STEP_TOKENS = 64       # tokens per "\n\n"-delimited step: 8 rounds
BEAM_WIDTH = 4


def memory_rows(rows: int):
  shapes = memory.math500_shapes(rows=rows)
  layouts = list(memory.MATH500_LAYOUTS) + [
      memory.Layout("v4-8", memory.DEVICES["v4"],
                    memory.AbstractMesh.of(model=4), None, "default"),
      memory.Layout("v5litepod-16", memory.DEVICES["v5e"],
                    memory.AbstractMesh.of(fsdp=16), memory.replicated_rules(),
                    "replicated"),
  ]
  out = []
  for lay in layouts:
    est = memory.estimate(shapes, lay.mesh, lay.device, lay.rules)
    one_call = memory.estimate(dataclasses.replace(shapes, verifier_rows=rows),
                               lay.mesh, lay.device, lay.rules)
    out.append((lay, est, one_call.fits,
                memory.max_rows(shapes, lay.mesh, lay.device, lay.rules)))
  return out


def print_memory(rows: int) -> None:
  print(f"## Memory per device: {rows} policy rows, cache 4096 slots, PRM "
        f"32 rows x 1536 tokens per call, 15% headroom\n")
  print("| slice | mesh | rules | params GiB | cache GiB | act GiB (phase) "
        "| total GiB | HBM GiB | fits | fits, PRM one call | max rows |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for lay, est, one_call, most in memory_rows(rows):
    print(f"| {lay.name} | {lay.mesh} | {lay.rules_name} | "
          f"{est.params / GiB:.2f} | {est.cache / GiB:.2f} | "
          f"{est.activations / GiB:.2f} ({est.phase}) | "
          f"{est.total / GiB:.2f} | {est.capacity / GiB:.1f} | "
          f"{'yes' if est.fits else 'NO'} | {'yes' if one_call else 'no'} | "
          f"{most} |")
  base = memory.estimate(memory.math500_shapes(rows=rows),
                         memory.AbstractMesh.of(fsdp=16),
                         memory.DEVICES["v5e"], memory.replicated_rules())
  best = memory.estimate(memory.math500_shapes(rows=rows),
                         memory.AbstractMesh.of(fsdp=16),
                         memory.DEVICES["v5e"])
  print(f"\nBaseline (v5e-16, everything replicated): {base.total / GiB:.1f} "
        f"GiB per chip; sharded (fsdp=16): {best.total / GiB:.2f} GiB "
        f"({base.total / best.total:.1f}x less).\n")


def problem_flops(strategy: str, budget: int, padded: bool):
  """Policy and verifier FLOPs of one problem (see module constants)."""
  shapes = memory.math500_shapes()
  tree = strategy == "beam"
  rounds = SOLUTION_TOKENS // STEP_TOKENS
  if tree:  # every round re-scores each beam's whole prefix
    per_row = (rounds * PROMPT_TOKENS +
               STEP_TOKENS * rounds * (rounds + 1) // 2)
    padded_row = rounds * shapes.verifier_len
  else:
    per_row = PROMPT_TOKENS + SOLUTION_TOKENS
    padded_row = shapes.verifier_len
  return flops.search_flops(
      shapes.policy, prompt_tokens=PROMPT_TOKENS,
      generated_tokens=budget * SOLUTION_TOKENS, verifier=shapes.verifier,
      verifier_tokens=budget * (padded_row if padded else per_row),
      policy_context=shapes.cache_len if tree else 512 + 1024,
      verifier_context=shapes.verifier_len)


def print_chip_hours(mfu_decode: float, mfu_score: float,
                     num_problems: int = 500) -> None:
  print(f"## Chip-hours for {num_problems} problems (MFU: policy decode "
        f"{mfu_decode:.0%}, PRM scoring {mfu_score:.0%})\n")
  print(f"Assumed per problem: prompt {PROMPT_TOKENS} tokens, "
        f"{SOLUTION_TOKENS} generated per solution, {STEP_TOKENS} per step "
        f"(beam: {SOLUTION_TOKENS // STEP_TOKENS} rounds, width "
        f"{BEAM_WIDTH}, each round re-scores whole prefixes). 'padded': the "
        "PRM computes every row at its full 1536-token width, as "
        "`score_rows` does today.\n")
  print("| strategy | N | policy PFLOP | PRM PFLOP | PRM padded PFLOP | "
        "v4 chip-h | v5e chip-h | v4 chip-h padded | v5e chip-h padded |")
  print("|---|---|---|---|---|---|---|---|---|")
  for strategy in ("best_of_n", "beam"):
    for budget in (16, 64, 256):
      used = problem_flops(strategy, budget, padded=False)
      pad = problem_flops(strategy, budget, padded=True)
      hours = {}
      for chip in ("v4", "v5e"):
        peak = memory.DEVICES[chip].peak_flops
        for tag, count in (("", used), ("pad", pad)):
          seconds = num_problems * (count.policy / (peak * mfu_decode) +
                                    count.verifier / (peak * mfu_score))
          hours[chip, tag] = seconds / 3600
      print(f"| {strategy} | {budget} | "
            f"{num_problems * used.policy / 1e15:.0f} | "
            f"{num_problems * used.verifier / 1e15:.0f} | "
            f"{num_problems * pad.verifier / 1e15:.0f} | "
            f"{hours['v4', '']:.1f} | {hours['v5e', '']:.1f} | "
            f"{hours['v4', 'pad']:.1f} | {hours['v5e', 'pad']:.1f} |")
  print()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=256)
  parser.add_argument("--mfu_decode", type=float, default=0.10)
  parser.add_argument("--mfu_score", type=float, default=0.40)
  args = parser.parse_args()
  print_memory(args.rows)
  print_chip_hours(args.mfu_decode, args.mfu_score)


if __name__ == "__main__":
  main()
