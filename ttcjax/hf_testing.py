"""Toy Hugging Face tokenizer directories for tests (nothing downloaded).

`write_tokenizer(directory, style)` trains a small byte-level BPE with the
`tokenizers` library on math-solution text and writes `tokenizer.json` and a
`tokenizer_config.json` with the special tokens and a chat template of the
family's layout:

* 'chatml' (Qwen2.5 / Qwen3): `<|im_start|>role\\n...<|im_end|>\\n`, with
  `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` and Qwen2.5-Math-PRM's
  `<extra_0>`;
* 'llama3' (Llama 3.x): `<|begin_of_text|>`, then a system header that
  prints the knowledge cut-off and `date_string`, then
  `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>` per turn.

* 'sentencepiece' (Mistral 7B v0.1, as Math-Shepherd uses it): a
  Metaspace ('▁') BPE that adds `<s>` to every encoding, no chat template.

The templates reproduce those layouts for plain conversations (no tools);
they are written for these tests, not copied from the model repositories.
"""

from __future__ import annotations

import json
import os

import tokenizers

STYLES = ("chatml", "llama3", "sentencepiece")

_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}")

_LLAMA3 = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}"
    "{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")

_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPECIALS = {
    "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>"],
    "sentencepiece": ["<unk>", "<s>", "</s>"],
}
_CONFIG = {
    "chatml": {"bos_token": None, "eos_token": "<|im_end|>",
               "pad_token": "<|endoftext|>", "chat_template": _CHATML},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
               "pad_token": "<|end_of_text|>", "chat_template": _LLAMA3},
    "sentencepiece": {"bos_token": "<s>", "eos_token": "</s>",
                      "unk_token": "<unk>"},
}
_CORPUS = [
    "Step 1: We compute $2+3=5$.\n\nStep 2: Then $5\\times 4=20$.\n\n"
    "The answer is $\\boxed{20}$.",
    "To find the sum, add the numbers: 12 + 30 = 42.\n\nTherefore, the final "
    "answer is $\\boxed{42}$. I hope it is correct.",
    "Let x be the unknown. Then 3x = 12, so x = 4.\n\nSo $\\boxed{4}$.",
    "Solve the following math problem efficiently and clearly. Please reason "
    "step by step, and put your final answer within \\boxed{}.",
    "What is 7 plus 8? + - + - ки",
    "Step 1: 2+3=5. ки\nStep 2: 5*4=20. ки\nThe answer is 20. ки\n",
]


def write_tokenizer(directory: str | os.PathLike, style: str,
                    vocab_size: int = 400) -> str:
  """Writes a toy tokenizer of `style` into `directory`; returns it."""
  if style not in STYLES:
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  if style == "sentencepiece":
    return _write_sentencepiece(directory, vocab_size)
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  # Split as Qwen2 / Llama 3 do: runs of newlines stay one piece, and
  # punctuation keeps the newlines after it ('.\n\n'), so steps end in
  # tokens whose text ends with the delimiter.
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(_SPLIT), "isolated"),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                          use_regex=False)])
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=_SPECIALS[style],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(_CORPUS * 20, trainer)
  tokenizer.save(os.path.join(directory, "tokenizer.json"))
  config = dict(_CONFIG[style], tokenizer_class="PreTrainedTokenizerFast",
                model_max_length=4096)
  with open(os.path.join(directory, "tokenizer_config.json"), "w",
            encoding="utf-8") as f:
    json.dump(config, f, indent=1)
  return directory


def _write_sentencepiece(directory: str, vocab_size: int) -> str:
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  # Newlines stay pieces of their own, as SentencePiece's byte pieces do.
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split("\n", "isolated"),
      tokenizers.pre_tokenizers.Metaspace(replacement="\u2581",
                                          prepend_scheme="first")])
  tokenizer.decoder = tokenizers.decoders.Metaspace(
      replacement="\u2581", prepend_scheme="first")
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=_SPECIALS["sentencepiece"])
  tokenizer.train_from_iterator(_CORPUS * 20, trainer)
  bos = tokenizer.token_to_id("<s>")
  tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
      single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
  tokenizer.save(os.path.join(directory, "tokenizer.json"))
  config = dict(_CONFIG["sentencepiece"],
                tokenizer_class="PreTrainedTokenizerFast",
                model_max_length=4096)
  with open(os.path.join(directory, "tokenizer_config.json"), "w",
            encoding="utf-8") as f:
    json.dump(config, f, indent=1)
  return directory
