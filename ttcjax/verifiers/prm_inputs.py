"""Verifier inputs laid out as each public PRM was trained to read them.

A search hands the verifier `(prompt_ids, solution_ids, step_ends)`: the
policy's prompt, its solution and where each step ends
(`ttcjax.search.base.BuildInput`). PRMs trained elsewhere read another
layout, with the score at a place of their own:

| builder | checkpoint | layout | score read at | score means |
| --- | --- | --- | --- | --- |
| `ChatSeparatorInput` | Qwen2.5-Math-PRM | chat template: system, user = question, assistant = steps each followed by `<extra_0>` | each `<extra_0>` | P(class 1) of the 2-way head: `sigmoid` of the folded reward head |
| `ChatTurnsInput` | RLHFlow Llama3.1-8B-PRM | chat template: user = question + " " + step 1, assistant = "+", user = step 2, ... | the last token of each assistant header, which predicts "+" | P("+") over {"+", "-"}: `step_tag_score_fn` |
| `StepTokenInput` | Skywork-o1-Open-PRM | bos + question + "\\n", then each step's ids and the step token | each step token | `sigmoid` of the value head |
| `TagTextInput` | Math-Shepherd (Mistral-7B) | question + " " + each step followed by " ки\\n", the tokenizer's BOS added | each `ки` | P("+") over {"+", "-"}: `step_tag_score_fn` |

Each builder rebuilds the PRM's text from the question and the decoded
steps (the step delimiter removed from each step's end, as the reference
code's `split` does) and tokenizes it as the reference does: chat layouts as
one string, Skywork's piece by piece. The question comes from the policy
prompt through `question_of`, e.g. `QuestionTable` over the run's problems.
Every row gets exactly one score position per step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

QWEN_MATH_PRM_SYSTEM = ("Please reason step by step, and put your final "
                        "answer within \\boxed{}.")

Messages = list[dict[str, str]]
RenderFn = Callable[[Messages, bool], str]  # (messages, add_generation_prompt)
EncodeOffsetsFn = Callable[[str], tuple[Sequence[int],
                                        Sequence[tuple[int, int]]]]


class PrmInputError(ValueError):
  """A PRM input that cannot be laid out as its checkpoint expects."""


@dataclasses.dataclass(frozen=True, eq=False)
class QuestionTable:
  """`question_of`: the question text of each policy prompt (by its ids)."""
  questions: Mapping[tuple[int, ...], str]

  def __call__(self, prompt_ids: Sequence[int]) -> str:
    key = tuple(int(i) for i in prompt_ids)
    if key not in self.questions:
      raise PrmInputError(f"no question for a prompt of {len(key)} ids; "
                          "build the QuestionTable from the run's problems")
    return self.questions[key]


def step_texts(decode: Callable[[Sequence[int]], str],
               solution_ids: Sequence[int], step_ends: Sequence[int],
               delimiter: str) -> list[str]:
  """Each step's text, with one trailing `delimiter` removed."""
  out, start = [], 0
  for end in step_ends:
    text = decode(list(solution_ids[start:end]))
    if delimiter and text.endswith(delimiter):
      text = text[:-len(delimiter)]
    out.append(text)
    start = end
  return out


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
  """Index of the token whose text starts at character `char`."""
  for i, (start, end) in enumerate(offsets):
    if start == char and end > start:
      return i
    if start > char:
      break
  raise PrmInputError(f"no token starts at character {char}: the text "
                      "before it merged into it")


def _check_prefix(full: str, prefix: str, what: str) -> None:
  if not full.startswith(prefix):
    raise PrmInputError(f"the chat template does not render {what} as a "
                        "prefix of the whole conversation; this builder needs"
                        " a template that only appends turns")


@dataclasses.dataclass(frozen=True, eq=False)
class ChatSeparatorInput:
  """Qwen2.5-Math-PRM: steps joined by a separator in the assistant turn.

  Attributes:
    render: the PRM tokenizer's chat template (`HFTokenizerFiles.render_chat`).
    encode_offsets: text -> (ids, per-id character spans), special tokens
      in the text recognised and none added.
    decode: policy ids -> text.
    question_of: policy prompt ids -> question text.
    separator_id: id of `separator` in the PRM's vocabulary.
    separator: the step separator, '<extra_0>'.
    system: system prompt (None: no system turn).
    delimiter: the policy's step delimiter, removed from each step.
  """
  render: RenderFn
  encode_offsets: EncodeOffsetsFn
  decode: Callable[[Sequence[int]], str]
  question_of: Callable[[Sequence[int]], str]
  separator_id: int
  separator: str = "<extra_0>"
  system: str | None = QWEN_MATH_PRM_SYSTEM
  delimiter: str = "\n\n"

  def __call__(self, prompt_ids, solution_ids, step_ends):
    steps = step_texts(self.decode, solution_ids, step_ends, self.delimiter)
    messages = ([{"role": "system", "content": self.system}]
                if self.system is not None else [])
    messages.append({"role": "user", "content": self.question_of(prompt_ids)})
    prefix = self.render(messages, True)
    answer = "".join(step + self.separator for step in steps)
    full = self.render(messages + [{"role": "assistant", "content": answer}],
                       False)
    _check_prefix(full, prefix, "the question")
    if not full[len(prefix):].startswith(answer):
      raise PrmInputError("the chat template changed the assistant turn's "
                          "text (stripped it?): separators cannot be placed")
    ids, offsets = self.encode_offsets(full)
    positions, char = [], len(prefix)
    for step in steps:
      char += len(step)
      position = _token_at(offsets, char)
      if ids[position] != self.separator_id:
        raise PrmInputError(f"{self.separator!r} is not one token "
                            f"{self.separator_id} of the PRM's tokenizer")
      positions.append(position)
      char += len(self.separator)
    return list(ids), positions


@dataclasses.dataclass(frozen=True, eq=False)
class ChatTurnsInput:
  """RLHFlow's PRMs: one user turn per step, each answered "+".

  The score of step k is read at the last token before its "+" reply (the
  end of the assistant header), where the model predicts "+" or "-".

  Attributes:
    render, encode_offsets, decode, question_of: as `ChatSeparatorInput`.
    reply_id: id of `reply` in the PRM's vocabulary.
    reply: the assistant's reply to each step, '+'.
    delimiter: the policy's step delimiter, removed from each step.
  """
  render: RenderFn
  encode_offsets: EncodeOffsetsFn
  decode: Callable[[Sequence[int]], str]
  question_of: Callable[[Sequence[int]], str]
  reply_id: int
  reply: str = "+"
  delimiter: str = "\n\n"

  def __call__(self, prompt_ids, solution_ids, step_ends):
    steps = step_texts(self.decode, solution_ids, step_ends, self.delimiter)
    question = self.question_of(prompt_ids)
    messages, prefixes = [], []
    for k, step in enumerate(steps):
      text = f"{question} {step}" if k == 0 else step
      messages.append({"role": "user", "content": text})
      prefixes.append(self.render(messages, True))
      messages.append({"role": "assistant", "content": self.reply})
    full = self.render(messages, False)
    ids, offsets = self.encode_offsets(full)
    positions = []
    for k, prefix in enumerate(prefixes):
      _check_prefix(full, prefix, f"the conversation up to step {k + 1}")
      if not full.startswith(self.reply, len(prefix)):
        raise PrmInputError(f"the chat template does not put the reply "
                            f"{self.reply!r} right after the assistant header")
      position = _token_at(offsets, len(prefix))
      if ids[position] != self.reply_id or position == 0:
        raise PrmInputError(f"the reply {self.reply!r} is not one token "
                            f"{self.reply_id} after the assistant header")
      positions.append(position - 1)
    return list(ids), positions


@dataclasses.dataclass(frozen=True, eq=False)
class StepTokenInput:
  """Skywork-o1-Open-PRM: `bos + question + "\\n"`, then each step's ids
  followed by the step token, each piece tokenized apart.

  Attributes:
    encode: text -> ids, none added.
    decode: policy ids -> text.
    question_of: policy prompt ids -> question text.
    step_token_id: the id read after each step (Skywork: that of '\\n').
    bos: the text put before the question (the tokenizer's bos_token).
    delimiter: the policy's step delimiter, removed from each step.
  """
  encode: Callable[[str], Sequence[int]]
  decode: Callable[[Sequence[int]], str]
  question_of: Callable[[Sequence[int]], str]
  step_token_id: int
  bos: str = ""
  delimiter: str = "\n"

  def __call__(self, prompt_ids, solution_ids, step_ends):
    ids = list(self.encode(self.bos + self.question_of(prompt_ids) + "\n"))
    positions = []
    for step in step_texts(self.decode, solution_ids, step_ends,
                           self.delimiter):
      ids += list(self.encode(step)) if step else []
      ids.append(self.step_token_id)
      positions.append(len(ids) - 1)
    return ids, positions


@dataclasses.dataclass(frozen=True, eq=False)
class TagTextInput:
  """Math-Shepherd: `question + " "` then each step followed by
  `" " + tag + "\\n"`, tokenized whole with the tokenizer's own special
  tokens (a BOS); the score is read at each tag token.

  Attributes:
    encode: text -> ids, the tokenizer's special tokens added.
    decode: policy ids -> text.
    question_of: policy prompt ids -> question text.
    tag_id: id of `tag` in the PRM's vocabulary.
    tag: the step tag, 'ки'.
    delimiter: the policy's step delimiter, removed from each step.
  """
  encode: Callable[[str], Sequence[int]]
  decode: Callable[[Sequence[int]], str]
  question_of: Callable[[Sequence[int]], str]
  tag_id: int
  tag: str = "ки"
  delimiter: str = "\n\n"

  def __call__(self, prompt_ids, solution_ids, step_ends):
    steps = step_texts(self.decode, solution_ids, step_ends, self.delimiter)
    text = self.question_of(prompt_ids) + " " + "".join(
        f"{step} {self.tag}\n" for step in steps)
    ids = list(self.encode(text))
    positions = [i for i, t in enumerate(ids) if t == self.tag_id]
    if len(positions) != len(steps):
      raise PrmInputError(
          f"{len(positions)} tag tokens {self.tag_id} for {len(steps)} steps:"
          f" the tag {self.tag!r} merged with its neighbours or appears in a"
          " step")
    return ids, positions
