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
3. The real-checkpoint recipes (`gin_configs/experiments/recipe_*.gin`):
   per-device memory of each on a v4-8 (fsdp=4), one host of a
   v5litepod-16 (fsdp=4: each process runs its own batches) and one 80 GB
   GPU, with the most rows each holds, and chip-hours for the 500 problems
   at N = 4...256 (best-of-N and beam search).

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


# --- Real-checkpoint recipes -------------------------------------------------

# Shapes from the checkpoints' config.json (ttcjax.models.hf_config).
LLAMA32_1B = memory.ModelConfig(
    vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
    head_dim=64, d_ff=8192, rope_theta=5e5, rope_type="llama3",
    rope_factor=32.0, rope_original_max_len=8192, tie_embeddings=True,
    param_dtype="bfloat16", dtype="bfloat16", max_len=131072)
RLHFLOW_PRM_8B = memory.ModelConfig(  # Llama-3.1-8B, read at its LM head
    vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
    d_ff=14336, rope_theta=5e5, rope_type="llama3", rope_factor=8.0,
    rope_original_max_len=8192, tie_embeddings=False,
    param_dtype="bfloat16", dtype="bfloat16", max_len=131072)
QWEN25_MATH_PRM_7B = memory.ModelConfig(  # MLP head, no LM head (tied)
    vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
    d_ff=18944, rope_theta=10000.0, qkv_bias=True, tie_embeddings=True,
    param_dtype="bfloat16", dtype="bfloat16", max_len=4096,
    reward_head=True, reward_mlp=True)
QWEN3_1P7B = memory.ModelConfig(
    vocab_size=151936, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=8,
    head_dim=128, d_ff=6144, rope_theta=1e6, qk_norm=True,
    tie_embeddings=True, param_dtype="bfloat16", dtype="bfloat16",
    max_len=40960)

# recipe: (policy, PRM, prompt_len, cache_len, verifier_len, verifier_rows,
#          prompt tokens, PRM tokens per solution beyond it) as its gin binds.
RECIPES = {
    "recipe_sal_llama32_1b_rlhflow": (LLAMA32_1B, RLHFLOW_PRM_8B, 768, 4096,
                                      3328, 4, 330, 48 + 12 * 8),
    "recipe_qwen25_math_prm": (memory.QWEN25_MATH_1P5B, QWEN25_MATH_PRM_7B,
                               512, 4096, 1664, 32, 160, 48 + 8),
    "recipe_qwen3_policy": (QWEN3_1P7B, QWEN25_MATH_PRM_7B, 512, 4096, 1664,
                            32, 160, 48 + 8),
}
RECIPE_LAYOUTS = (
    memory.Layout("v4-8", memory.DEVICES["v4"], memory.AbstractMesh.of(
        fsdp=4)),
    memory.Layout("v5litepod-16 (one host)", memory.DEVICES["v5e"],
                  memory.AbstractMesh.of(fsdp=4)),
    memory.Layout("1x 80 GB GPU", memory.DEVICES["h100"],
                  memory.AbstractMesh.of()),
)


def recipe_shapes(recipe: str, rows: int) -> memory.SearchShapes:
  policy, prm, prompt_len, cache_len, verifier_len, verifier_rows, _, _ = (
      RECIPES[recipe])
  return memory.SearchShapes(policy=policy, verifier=prm, rows=rows,
                             prompt_rows=16, prompt_len=prompt_len,
                             cache_len=cache_len, verifier_len=verifier_len,
                             verifier_rows=verifier_rows)


def recipe_memory_rows(rows: int):
  """(recipe, layout, estimate, most rows) for every recipe and layout."""
  out = []
  for recipe in RECIPES:
    shapes = recipe_shapes(recipe, rows)
    for lay in RECIPE_LAYOUTS:
      out.append((recipe, lay, memory.estimate(shapes, lay.mesh, lay.device,
                                               lay.rules),
                  memory.max_rows(shapes, lay.mesh, lay.device, lay.rules)))
  return out


def print_recipes(rows: int, mfu_decode: float, mfu_score: float,
                  num_problems: int = 500) -> None:
  print(f"## Recipes: memory per device at {rows} policy rows\n")
  print("| recipe | slice | mesh | params GiB | cache GiB | act GiB (phase) | "
        "total GiB | HBM GiB | fits | max rows |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for recipe, lay, est, most in recipe_memory_rows(rows):
    print(f"| {recipe} | {lay.name} | {lay.mesh} | {est.params / GiB:.2f} | "
          f"{est.cache / GiB:.2f} | {est.activations / GiB:.2f} "
          f"({est.phase}) | {est.total / GiB:.2f} | "
          f"{est.capacity / GiB:.1f} | {'yes' if est.fits else 'NO'} | "
          f"{most} |")
  print(f"\n## Recipes: chip-hours for {num_problems} problems (MFU: decode "
        f"{mfu_decode:.0%}, PRM {mfu_score:.0%}; {SOLUTION_TOKENS} tokens "
        f"per solution, {STEP_TOKENS} per step)\n")
  print("| recipe | strategy | N | policy PFLOP | PRM PFLOP | v4 chip-h | "
        "v5e chip-h | H100 GPU-h |")
  print("|---|---|---|---|---|---|---|---|")
  rounds = SOLUTION_TOKENS // STEP_TOKENS
  for recipe, spec in RECIPES.items():
    policy, prm, _, cache_len, verifier_len, _, prompt, overhead = spec
    for strategy in ("best_of_n", "beam"):
      for budget in (4, 16, 64, 256):
        if strategy == "beam":  # each round re-scores every beam's prefix
          read = (rounds * (prompt + overhead) +
                  STEP_TOKENS * rounds * (rounds + 1) // 2)
        else:
          read = prompt + overhead + SOLUTION_TOKENS
        count = flops.search_flops(
            policy, prompt_tokens=prompt,
            generated_tokens=budget * SOLUTION_TOKENS, verifier=prm,
            verifier_tokens=budget * read, policy_context=cache_len,
            verifier_context=verifier_len)
        hours = {}
        for chip in ("v4", "v5e", "h100"):
          peak = memory.DEVICES[chip].peak_flops
          hours[chip] = num_problems * (
              count.policy / (peak * mfu_decode) +
              count.verifier / (peak * mfu_score)) / 3600
        print(f"| {recipe} | {strategy} | {budget} | "
              f"{num_problems * count.policy / 1e15:.0f} | "
              f"{num_problems * count.verifier / 1e15:.0f} | "
              f"{hours['v4']:.1f} | {hours['v5e']:.1f} | "
              f"{hours['h100']:.1f} |")
  print()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", type=int, default=256)
  parser.add_argument("--mfu_decode", type=float, default=0.10)
  parser.add_argument("--mfu_score", type=float, default=0.40)
  args = parser.parse_args()
  print_memory(args.rows)
  print_chip_hours(args.mfu_decode, args.mfu_score)
  print_recipes(args.rows, args.mfu_decode, args.mfu_score)


if __name__ == "__main__":
  main()
