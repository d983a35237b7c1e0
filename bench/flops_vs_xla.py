"""Compares ttcjax.analysis.flops with XLA's cost analysis.

Prints, per model size, the accountant's count (matmuls only, and with the
rough elementwise count), XLA's count and their ratios for a cache-less
prefill (`lm_logits`, dense attention) and one cached decode step. Nothing is
asserted; `tests/analysis/test_flops.py` holds the bounds.

  python bench/flops_vs_xla.py
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ttcjax import models
from ttcjax.analysis import flops

SIZES = {
    "tiny  d=64  L2 h4/kv2 tied  ": models.ModelConfig(
        vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
        d_ff=256),
    "small d=128 L2 h8/kv2 untied": models.ModelConfig(
        vocab_size=512, d_model=128, n_layers=2, n_heads=8, n_kv_heads=2,
        d_ff=384, tie_embeddings=False),
    "mid   d=256 L2 h8/kv4 tied+b": models.ModelConfig(
        vocab_size=1024, d_model=256, n_layers=2, n_heads=8, n_kv_heads=4,
        d_ff=768, qkv_bias=True),
    "large d=384 L3 h6/kv6 untied": models.ModelConfig(
        vocab_size=1024, d_model=384, n_layers=3, n_heads=6, d_ff=1024,
        tie_embeddings=False),
}
BATCH = 2


def main():
  print(f"{'size':30s} {'pass':14s} {'ours':>12s} {'xla':>12s} "
        f"{'xla/ours':>9s} {'xla/ours+ew':>11s}")
  for name, cfg in SIZES.items():
    params = nn.unbox(models.abstract_params(cfg))
    for length in (128, 256):
      tokens = jax.ShapeDtypeStruct((BATCH, length), jnp.int32)
      xla = flops.xla_flops(lambda p, t: models.lm_logits(cfg, p, t), params,
                            tokens)
      ours = flops.prefill_flops(cfg, length, BATCH, attention="dense")
      ours_ew = flops.prefill_flops(cfg, length, BATCH, attention="dense",
                                    elementwise=True)
      print(f"{name:30s} {'prefill ' + str(length):14s} {ours:12.4g} "
            f"{xla:12.4g} {xla / ours:9.4f} {xla / ours_ew:11.4f}")
    for cache_len in (128, 256, 1024):
      cache = jax.eval_shape(lambda: models.init_cache(cfg, BATCH, cache_len))
      tokens = jax.ShapeDtypeStruct((BATCH, 1), jnp.int32)
      xla = flops.xla_flops(
          lambda p, t, c: models.apply(cfg, p, t, None, c), params, tokens,
          cache)
      ours = flops.decode_flops(cfg, 1, BATCH, cache_len=cache_len)
      ours_ew = flops.decode_flops(cfg, 1, BATCH, cache_len=cache_len,
                                   elementwise=True)
      print(f"{name:30s} {'decode ' + str(cache_len):14s} {ours:12.4g} "
            f"{xla:12.4g} {xla / ours:9.4f} {xla / ours_ew:11.4f}")


if __name__ == "__main__":
  main()
