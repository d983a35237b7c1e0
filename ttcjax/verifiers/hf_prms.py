"""Which input layout and score each public PRM checkpoint needs, by name.

`PRM_FORMATS` names the layouts of `ttcjax.verifiers.prm_inputs` a run can
select (gin: `search.Checkpoints.prm_format`):

* 'reward_head': the policy prompt then the solution, read at each step's
  last token; `sigmoid` of the reward head (ttcjax-trained PRMs; Math-Shepherd
  style step-tag PRMs use `search.StepTagInput` instead).
* 'qwen_math_prm': `prm_inputs.ChatSeparatorInput`, `sigmoid` of the folded
  two-class head = P(class 1) (Qwen2.5-Math-PRM-7B / 72B).
* 'skywork_prm': `prm_inputs.StepTokenInput` with the step token of '\\n',
  `sigmoid` of the value head (Skywork-o1-Open-PRM-Qwen-2.5-1.5B / 7B).
* 'rlhflow_prm': `prm_inputs.ChatTurnsInput`, P('+') over {'+', '-'} from the
  LM head (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data and -Mistral-Data).
* 'math_shepherd': `prm_inputs.TagTextInput`, P('+') over {'+', '-'} (as
  the tokenizer encodes '+ -') from the LM head at each 'ки'
  (peiyi9979/math-shepherd-mistral-7b-prm).

`input_builder` builds the layout from the PRM's tokenizer files (duck-typed
as `ttcjax.models.hf_tokenizer.HFTokenizerFiles`) and the policy's decoder;
`step_tags` gives the ('+', '-') ids for LM-head scoring, or None.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ttcjax.verifiers import prm_inputs

PRM_FORMATS = ("reward_head", "qwen_math_prm", "skywork_prm", "rlhflow_prm",
               "math_shepherd")
# Tokens a layout adds per step beyond the solution's own (headers, turn
# ends, separators), rounded up: sizes the verifier's context.
TOKENS_PER_STEP = {"reward_head": 0, "qwen_math_prm": 1, "skywork_prm": 2,
                   "rlhflow_prm": 12, "math_shepherd": 3}
# Tokens of the layout's fixed part beyond the question (system prompt,
# headers); a policy prompt covers the question itself.
FIXED_TOKENS = {"reward_head": 0, "qwen_math_prm": 48, "skywork_prm": 4,
                "rlhflow_prm": 48, "math_shepherd": 2}


def check_format(prm_format: str, where: str = "prm_format") -> None:
  """Raises ValueError naming `where` unless `prm_format` is known."""
  if prm_format not in PRM_FORMATS:
    raise ValueError(f"{where}={prm_format!r} is not one of {PRM_FORMATS}")


def _encode_offsets(files: Any):
  def encode(text: str):
    encoding = files.tokenizer.encode(text, add_special_tokens=False)
    return encoding.ids, encoding.offsets
  return encode


def input_builder(prm_format: str, files: Any,
                  decode: Callable[[Sequence[int]], str],
                  questions: Mapping[tuple[int, ...], str],
                  delimiter: str) -> Callable | None:
  """The `VerifierFns.build_input` of `prm_format` (None: 'reward_head').

  Args:
    prm_format: one of `PRM_FORMATS`.
    files: the PRM's tokenizer files (`HFTokenizerFiles`).
    decode: policy ids -> text, special tokens dropped.
    questions: policy prompt ids -> question text.
    delimiter: the policy's step delimiter.
  """
  check_format(prm_format)
  if prm_format == "reward_head":
    return None
  question_of = prm_inputs.QuestionTable(dict(questions))
  if prm_format == "qwen_math_prm":
    return prm_inputs.ChatSeparatorInput(
        render=files.render_chat, encode_offsets=_encode_offsets(files),
        decode=decode, question_of=question_of,
        separator_id=files.token_id("<extra_0>", "the PRM's step separator"),
        delimiter=delimiter)
  if prm_format == "skywork_prm":
    step_ids = files.encode("\n")
    return prm_inputs.StepTokenInput(
        encode=files.encode, decode=decode, question_of=question_of,
        step_token_id=step_ids[-1],
        bos=files.special_tokens.get("bos_token", ""), delimiter=delimiter)
  if prm_format == "math_shepherd":
    encode = lambda text: files.tokenizer.encode(text).ids
    return prm_inputs.TagTextInput(
        encode=encode, decode=decode, question_of=question_of,
        tag_id=files.token_id(_plain_ids(files, "ки", 1)[0], "the step tag"),
        delimiter=delimiter)
  return prm_inputs.ChatTurnsInput(
      render=files.render_chat, encode_offsets=_encode_offsets(files),
      decode=decode, question_of=question_of,
      reply_id=files.token_id("+", "the PRM's '+' reply"),
      delimiter=delimiter)


def step_tags(prm_format: str, files: Any) -> tuple[int, int] | None:
  """(good, bad) ids scored from the LM head, or None for a reward head."""
  check_format(prm_format)
  if prm_format == "math_shepherd":  # as its card: encode('+ -')[1:]
    good, bad = _plain_ids(files, "+ -", 2)
    return (files.token_id(good, "the '+' tag"),
            files.token_id(bad, "the '-' tag"))
  if prm_format != "rlhflow_prm":
    return None
  return (files.token_id("+", "the PRM's '+' tag"),
          files.token_id("-", "the PRM's '-' tag"))


def _plain_ids(files: Any, text: str, count: int) -> list[str]:
  """The token texts of `text` (no special tokens); exactly `count`."""
  tokens = files.tokenizer.encode(text, add_special_tokens=False).tokens
  if len(tokens) != count:
    raise ValueError(f"{files.directory}: {text!r} is {len(tokens)} tokens "
                     f"{tokens}, expected {count}; not a Math-Shepherd "
                     "tokenizer?")
  return tokens
