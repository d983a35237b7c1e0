r"""Converts a Hugging Face checkpoint into a ttcjax checkpoint.

Only safetensors weights are read; the output is an orbax checkpoint that
`ttcjax.checkpoint.restore` loads. Nothing is written unless the whole model
loads and checks out. Families: Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3;
heads: causal LM, one-label reward model, Qwen2.5-Math-PRM, Skywork-o1-PRM
(`ttcjax.models.hf_config`). A refusal is one line, exit status 2.

  python -m ttcjax.main.convert_hf \
      --hf_dir=/models/Qwen2.5-0.5B --output_dir=/ckpt/qwen2.5-0.5b \
      [--dtype=bfloat16] [--overwrite]
"""

from absl import app
from absl import flags
from absl import logging

from ttcjax.main import cli
from ttcjax.models import hf_import

_HF_DIR = flags.DEFINE_string(
    "hf_dir", None, "Hugging Face model directory (config.json, safetensors).",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "ttcjax checkpoint directory to create.",
    required=True)
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16", "float16"],
    "Cast parameters to this dtype (default: the checkpoint's).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a non-empty --output_dir.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = hf_import.convert(_HF_DIR.value, _OUTPUT_DIR.value,
                             param_dtype=_DTYPE.value,
                             overwrite=_OVERWRITE.value)
  logging.info("wrote %s: %s (%d parameters)", _OUTPUT_DIR.value, config,
               config.num_params())


if __name__ == "__main__":
  cli.run(main, "ttcjax.main.convert_hf")
