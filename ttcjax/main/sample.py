"""Samples continuations of a prompt from a model.

    python -m ttcjax.main.sample --prompt="Compute: 3+4*2" --num_samples=8

Without --checkpoint, a randomly initialised tiny byte-level model is used
(the smoke test of the engine); with one (e.g. from `convert_hf`) pass its
tokenizer directory as --tokenizer_dir.
"""

import json
import os

from absl import app, flags, logging
import jax

from ttcjax import checkpoint, decoding, generate, models, tokenizer
from ttcjax.main import cli

_PROMPT = flags.DEFINE_string("prompt", "Compute: 37+8*4-12\n", "Prompt text.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 8, "Samples per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Token cap per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "0 decodes greedily.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Top-k filter (off if unset).")
_TOP_P = flags.DEFINE_float("top_p", None, "Top-p filter (off if unset).")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "ttcjax checkpoint dir.")
_TOKENIZER_DIR = flags.DEFINE_string("tokenizer_dir", None,
                                     "Directory with tokenizer.json.")
_EOS_TOKEN = flags.DEFINE_string("eos_token", "<|endoftext|>",
                                 "End-of-sequence token of --tokenizer_dir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Writes samples.jsonl here.")

TINY = models.ModelConfig(vocab_size=tokenizer.ByteTokenizer().vocab_size,
                          d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                          d_ff=192, max_len=512)


def main(argv):
  del argv
  if _CHECKPOINT.value:
    config, params = checkpoint.restore(_CHECKPOINT.value)
    from ttcjax.models import hf_import  # pylint: disable=g-import-not-at-top
    tok = hf_import.load_tokenizer(_TOKENIZER_DIR.value or _CHECKPOINT.value)
    encode = lambda s: tok.encode(s).ids
    eos_id = tok.token_to_id(_EOS_TOKEN.value)
    if eos_id is None:
      raise app.UsageError(f"--eos_token={_EOS_TOKEN.value!r} is not in the "
                           "tokenizer's vocabulary")
    decode = tok.decode
  else:
    byte_tok = tokenizer.ByteTokenizer()
    config, params = TINY, models.init_params(TINY, jax.random.key(_SEED.value))
    encode, decode, eos_id = byte_tok.encode, byte_tok.decode, byte_tok.eos_id
  sampler = (decoding.Greedy() if _TEMPERATURE.value == 0 else
             decoding.Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value))
  out = generate.generate(
      config, params, [encode(_PROMPT.value)], num_samples=_NUM_SAMPLES.value,
      sampler=sampler, max_new_tokens=_MAX_NEW.value, eos_id=eos_id,
      rng=jax.random.key(_SEED.value))
  rows = [{"sample": i, "text": decode(t), "num_tokens": len(t),
           "logprob": sum(lp), "finished": f}
          for i, (t, lp, f) in enumerate(zip(out.tokens, out.logprobs,
                                             out.finished))]
  for row in rows:
    print(json.dumps(row))
  logging.info("%d tokens in %.2f s (compile included)", out.generated_tokens,
               out.seconds)
  if _WORKDIR.value:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "samples.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
  cli.run(main, "ttcjax.main.sample", output_flags=("workdir",))
