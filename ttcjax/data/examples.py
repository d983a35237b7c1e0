"""Training examples for the LM, the PRM/ORM and the revision model, in numpy.

Everything here is pure Python and numpy (no TensorFlow): the study pipeline
calls it on a CPU, and the seqio tasks in `seqio_tasks` call the very same
functions inside `tf.numpy_function`, so both paths lay tokens out identically.

One example is a dict of 1-D arrays of one length `n` (unpadded); `collate`
pads a list of them into the batch contract the trainer consumes:

  tokens:         [b, L] int32    ids, right-padded with 0.
  token_mask:     [b, L] bool     True on real tokens.
  loss_weights:   [b, L] float32  weight of predicting tokens[:, i] from
                                  tokens[:, :i]; 1 on the target (its EOS
                                  included), 0 on prompt and padding, and 0 at
                                  position 0 always.
  reward_targets: [b, L] float32  PRM: soft label at the last token of each
                                  step; ORM: label at the last token.
  reward_weights: [b, L] float32  1 where reward_targets holds a label.

Layout choices, kept identical at inference through `prompt_ids` and
`revision_prompt_ids`:

* A sequence starts with the tokenizer's BOS when it has one
  (`ByteTokenizer`: id 2; HF tokenizers: whatever `bos_id` says, often none).
* Text segments (prompt, target, each step) are encoded separately and the ids
  concatenated. For the byte tokenizer that equals encoding the joined text;
  for BPE tokenizers it matches generation, where the prompt is encoded alone
  and every step ends at a token that ends with the delimiter.
* LM and revision targets end with EOS; PRM/ORM sequences do not: a verifier
  reads `prompt_ids + solution ids` of a candidate, without the end token.
* Too long: the prompt (context) loses tokens from its left, after the BOS,
  which is kept; revision prompts first drop their oldest attempts. When the
  part that carries the loss does not fit on its own, `ExampleTooLongError`
  is raised (the seqio tasks drop such examples).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np

FEATURES = ("tokens", "token_mask", "loss_weights", "reward_targets",
            "reward_weights")
DTYPES = {"tokens": np.int32, "token_mask": np.bool_,
          "loss_weights": np.float32, "reward_targets": np.float32,
          "reward_weights": np.float32}

ATTEMPT_HEADER = "Attempt {index}:\n"
REVISION_HEADER = "Revised solution:\n"
MAX_CONTEXT = 4
MAX_EDIT_CHARS = 2000

Example = dict[str, np.ndarray]


class TextTokenizer(Protocol):
  """What examples need from a tokenizer.

  `ttcjax.tokenizer.ByteTokenizer`, `HFTokenizer` and the seqio vocabularies of
  `ttcjax.data.vocabularies` all qualify. `bos_id` is optional (None or absent:
  no BOS).
  """

  @property
  def eos_id(self) -> int:
    ...

  def encode(self, text: str) -> Sequence[int]:
    ...


@dataclasses.dataclass(frozen=True, eq=False)
class HFTokenizer:
  """A `tokenizers.Tokenizer` seen as a `TextTokenizer`, without TensorFlow.

  Attributes:
    tokenizer: the loaded `tokenizers.Tokenizer` (e.g. from
      `ttcjax.models.hf_import.load_tokenizer`).
    eos_id: id that ends a target.
    bos_id: id that starts every sequence, or None.
    pad_id: id that padding uses; stripped on decode.
  """

  tokenizer: Any
  eos_id: int
  bos_id: Optional[int] = None
  pad_id: int = 0

  def encode(self, text: str) -> list[int]:
    # Special tokens (a Llama BOS, say) are added by `prompt_ids`, never here.
    return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    """Decodes up to the first EOS, dropping padding and special tokens."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    while ids and ids[-1] == self.pad_id:
      ids.pop()
    return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_text_tokenizer(tokenizer_dir: Optional[str], eos_token: str, *,
                        where: str) -> Any:
  """The one tokenizer loader: the byte tokenizer when `tokenizer_dir` is
  None, else its Hugging Face tokenizer.json as an `HFTokenizer` whose end
  id is `eos_token`'s.

  Args:
    tokenizer_dir: a directory with tokenizer.json, or None.
    eos_token: the end token's text.
    where: the config field that holds `eos_token`, for errors (e.g.
      'DataConfig.eos_token').

  Raises:
    ValueError: `eos_token` is not in the tokenizer.
  """
  if tokenizer_dir is None:
    from ttcjax.tokenizer import ByteTokenizer  # pylint: disable=g-import-not-at-top
    return ByteTokenizer()
  from ttcjax.models import hf_import  # pylint: disable=g-import-not-at-top
  raw = hf_import.load_tokenizer(tokenizer_dir)
  eos_id = raw.token_to_id(eos_token)
  if eos_id is None:
    raise ValueError(f"{where}={eos_token!r} is not in "
                     f"{tokenizer_dir}/tokenizer.json")
  return HFTokenizer(raw, eos_id=eos_id)


class ExampleTooLongError(ValueError):
  """The part of an example that carries the loss does not fit in max_len."""


def _bos_id(tokenizer: TextTokenizer) -> Optional[int]:
  try:
    return getattr(tokenizer, "bos_id", None)
  except NotImplementedError:  # seqio.Vocabulary's default
    return None


def _encode(tokenizer: TextTokenizer, text: str) -> list[int]:
  return [int(i) for i in tokenizer.encode(text)]


def prompt_ids(tokenizer: TextTokenizer, prompt: str) -> list[int]:
  """`[bos] + encode(prompt)`: how every example, and inference, starts."""
  bos = _bos_id(tokenizer)
  return ([bos] if bos is not None else []) + _encode(tokenizer, prompt)


def _fit_prompt(tokenizer: TextTokenizer, ids: list[int], n_rest: int,
                max_len: Optional[int], what: str) -> list[int]:
  """Cuts prompt ids from the left (keeping the BOS) so n_rest more fit."""
  if max_len is None or len(ids) + n_rest <= max_len:
    return ids
  n_bos = int(_bos_id(tokenizer) is not None)
  room = max_len - n_rest - n_bos
  if room < 0:
    raise ExampleTooLongError(
        f"{what}: {n_rest} tokens (+{n_bos} BOS) do not fit in "
        f"max_len={max_len}")
  return ids[:n_bos] + ids[len(ids) - room:]


def _example(tokens: list[int], target_start: Optional[int] = None,
             label_positions: Sequence[int] = (),
             labels: Sequence[float] = ()) -> Example:
  n = len(tokens)
  loss_weights = np.zeros(n, np.float32)
  if target_start is not None:
    loss_weights[target_start:] = 1.0
    loss_weights[:1] = 0.0  # Nothing precedes position 0.
  reward_targets = np.zeros(n, np.float32)
  reward_weights = np.zeros(n, np.float32)
  positions = np.asarray(label_positions, np.int64)
  reward_targets[positions] = np.asarray(labels, np.float32)
  reward_weights[positions] = 1.0
  return {"tokens": np.asarray(tokens, np.int32),
          "token_mask": np.ones(n, np.bool_),
          "loss_weights": loss_weights,
          "reward_targets": reward_targets,
          "reward_weights": reward_weights}


def _check_label(label: float, where: str) -> float:
  label = float(label)
  if not (math.isfinite(label) and 0.0 <= label <= 1.0):
    raise ValueError(f"{where}: label must be in [0, 1], got {label!r}")
  return label


def lm_example(tokenizer: TextTokenizer, prompt: str, target: str,
               max_len: Optional[int] = None) -> Example:
  """An LM example: `[bos] + prompt + target + [eos]`, loss on target and EOS.

  Args:
    tokenizer: see `TextTokenizer`.
    prompt: conditioning text (no loss).
    target: text to learn; may be empty (then only EOS is learned).
    max_len: longest allowed sequence, or None for no limit. The prompt is cut
      from its left to fit.

  Returns:
    One unpadded example (see the module docstring).

  Raises:
    ExampleTooLongError: the BOS, target and EOS alone exceed max_len.
  """
  target_ids = _encode(tokenizer, target) + [int(tokenizer.eos_id)]
  ids = _fit_prompt(tokenizer, prompt_ids(tokenizer, prompt), len(target_ids),
                    max_len, "lm_example target")
  return _example(ids + target_ids, target_start=len(ids))


def reference_example(tokenizer: TextTokenizer, task: Any, problem: Any,
                      max_len: Optional[int] = None) -> Example:
  """The policy's example of a task's problem: `task.prompt(problem)`, then
  the problem's reference solution (`lm_example`).

  The one recipe for the policy's training data, used by the embedded study
  and `ttcjax.training.roles` alike.

  Args:
    tokenizer: see `TextTokenizer`.
    task: a `ttcjax.tasks.Task` (typed `Any`: this module imports no task).
    problem: one of `task.problems(...)`, with a non-empty `solution`.
    max_len: longest allowed sequence, or None (see `lm_example`).

  Returns:
    One unpadded LM example.

  Raises:
    ValueError: the problem has no reference solution.
    ExampleTooLongError: the BOS, solution and EOS alone exceed max_len.
  """
  if not problem.solution:
    raise ValueError(f"task {task.name!r}, problem {problem.uid!r}: no "
                     "reference solution to train on")
  return lm_example(tokenizer, task.prompt(problem), problem.solution, max_len)


def prm_example(tokenizer: TextTokenizer, prompt: str, steps: Sequence[str],
                step_labels: Sequence[float],
                max_len: Optional[int] = None) -> Example:
  """A PRM example: `[bos] + prompt + steps`, one soft label per step.

  The steps are joined exactly as given (each usually ends with the "\\n"
  delimiter, e.g. from `ttcjax.tasks.arithmetic.split_steps`), and step i's
  label sits on its last token: its delimiter, or the final token of a step
  without one. No EOS, no LM loss.

  Args:
    tokenizer: see `TextTokenizer`.
    prompt: the problem as the policy saw it.
    steps: the solution's steps, each non-empty.
    step_labels: one label in [0, 1] per step (e.g. Monte-Carlo values).
    max_len: longest allowed sequence, or None; the prompt is cut from the left.

  Returns:
    One unpadded example.

  Raises:
    ValueError: lengths differ, no steps, an empty step or a label outside
      [0, 1].
    ExampleTooLongError: the BOS and steps alone exceed max_len.
  """
  if len(steps) != len(step_labels):
    raise ValueError(f"prm_example: {len(steps)} steps but "
                     f"{len(step_labels)} step_labels")
  if not steps:
    raise ValueError("prm_example: no steps")
  labels = [_check_label(x, f"prm_example step {i}")
            for i, x in enumerate(step_labels)]
  step_ids = [_encode(tokenizer, s) for s in steps]
  for i, ids in enumerate(step_ids):
    if not ids:
      raise ValueError(f"prm_example: step {i} encodes to no tokens: "
                       f"{steps[i]!r}")
  n_steps = sum(len(ids) for ids in step_ids)
  ids = _fit_prompt(tokenizer, prompt_ids(tokenizer, prompt), n_steps, max_len,
                    "prm_example steps")
  ends = len(ids) + np.cumsum([len(s) for s in step_ids]) - 1
  tokens = ids + [t for s in step_ids for t in s]
  return _example(tokens, label_positions=ends, labels=labels)


def orm_example(tokenizer: TextTokenizer, context: str, solution: str,
                label: float, max_len: Optional[int] = None) -> Example:
  """An ORM example: `[bos] + context + solution`, the label on its last token.

  Args:
    tokenizer: see `TextTokenizer`.
    context: the prompt (for a revision ORM, the revision prompt).
    solution: the judged solution; non-empty.
    label: 1 for correct, 0 for wrong (soft labels allowed).
    max_len: longest allowed sequence, or None; the context is cut from the
      left.

  Returns:
    One unpadded example.
  """
  label = _check_label(label, "orm_example")
  solution_ids = _encode(tokenizer, solution)
  if not solution_ids:
    raise ValueError("orm_example: the solution encodes to no tokens")
  ids = _fit_prompt(tokenizer, prompt_ids(tokenizer, context),
                    len(solution_ids), max_len, "orm_example solution")
  tokens = ids + solution_ids
  return _example(tokens, label_positions=[len(tokens) - 1], labels=[label])


def _line(text: str) -> str:
  return text if text.endswith("\n") else text + "\n"


def revision_prompt(question: str, attempts: Sequence[str],
                    max_context: int = MAX_CONTEXT) -> str:
  """The revision model's prompt: question, the last attempts, a header.

  ```
  Compute: 37+8*4-12
  Attempt 1:
  <older wrong attempt>
  Attempt 2:
  <latest wrong attempt>
  Revised solution:
  ```

  Every part ends with a newline (one is added where missing); attempts are
  numbered from 1 among those kept.

  Args:
    question: the problem text.
    attempts: previous attempts, oldest first.
    max_context: keep at most this many of the latest attempts.

  Returns:
    The prompt text; the revised solution follows it.
  """
  kept = list(attempts)[-max_context:] if max_context > 0 else []
  parts = [_line(question)]
  for index, attempt in enumerate(kept, start=1):
    parts += [ATTEMPT_HEADER.format(index=index), _line(attempt)]
  return "".join(parts + [REVISION_HEADER])


def revision_prompt_ids(tokenizer: TextTokenizer, question: str,
                        attempts: Sequence[str],
                        max_prompt_len: Optional[int] = None,
                        max_context: int = MAX_CONTEXT) -> list[int]:
  """Prompt ids for the revision model, dropping the oldest attempts to fit.

  Used for training (`revision_example`) and at inference, so both see the
  same context. With no attempt left and still too long, the prompt is cut
  from its left like any prompt.

  Args:
    tokenizer: see `TextTokenizer`.
    question: the problem text.
    attempts: previous attempts, oldest first.
    max_prompt_len: most prompt tokens (BOS included), or None.
    max_context: keep at most this many of the latest attempts.

  Returns:
    `[bos] + encode(revision_prompt(question, kept))`.
  """
  kept = list(attempts)[-max_context:] if max_context > 0 else []
  while True:
    ids = prompt_ids(tokenizer, revision_prompt(question, kept, max_context))
    if max_prompt_len is None or len(ids) <= max_prompt_len or not kept:
      break
    kept = kept[1:]
  if max_prompt_len is None:
    return ids
  return _fit_prompt(tokenizer, ids, 0, max_prompt_len, "revision prompt")


def revision_example(tokenizer: TextTokenizer, question: str,
                     previous_attempts: Sequence[str], target_solution: str,
                     max_len: Optional[int] = None,
                     max_context: int = MAX_CONTEXT) -> Example:
  """An LM example for the revision model: revision prompt, then the target.

  Args:
    tokenizer: see `TextTokenizer`.
    question: the problem text.
    previous_attempts: wrong attempts, oldest first; the last `max_context`
      are kept, and the oldest of those dropped while the example is too long.
    target_solution: the correct solution to learn (EOS appended).
    max_len: longest allowed sequence, or None.
    max_context: most attempts in context.

  Returns:
    One unpadded example (loss on the target and EOS).

  Raises:
    ExampleTooLongError: the BOS, target and EOS alone exceed max_len.
  """
  target_ids = _encode(tokenizer, target_solution) + [int(tokenizer.eos_id)]
  max_prompt = None if max_len is None else max_len - len(target_ids)
  n_bos = int(_bos_id(tokenizer) is not None)
  if max_prompt is not None and max_prompt < n_bos:
    raise ExampleTooLongError(
        f"revision_example target: {len(target_ids)} tokens do not fit in "
        f"max_len={max_len}")
  ids = revision_prompt_ids(tokenizer, question, previous_attempts, max_prompt,
                            max_context)
  return _example(ids + target_ids, target_start=len(ids))


def collate(examples: Sequence[Mapping[str, np.ndarray]],
            max_len: Optional[int] = None) -> dict[str, np.ndarray]:
  """Right-pads examples into one batch of the contract's five arrays.

  Args:
    examples: unpadded examples (missing features count as zeros).
    max_len: the batch length L; None means the longest example (required
      when `examples` is empty).

  Returns:
    `{feature: [len(examples), L]}` with the dtypes of `DTYPES`.

  Raises:
    ValueError: an example is longer than max_len, or its arrays disagree in
      length.
  """
  lengths = []
  for i, ex in enumerate(examples):
    n = len(ex["tokens"])
    for key in FEATURES:
      if key in ex and len(ex[key]) != n:
        raise ValueError(f"collate: example {i} has {len(ex[key])} {key} but "
                         f"{n} tokens")
    lengths.append(n)
  if max_len is None:
    if not examples:
      raise ValueError("collate: max_len is required for an empty batch")
    max_len = max(lengths)
  batch = {k: np.zeros((len(examples), max_len), DTYPES[k]) for k in FEATURES}
  for i, (ex, n) in enumerate(zip(examples, lengths)):
    if n > max_len:
      raise ValueError(f"collate: example {i} has {n} tokens > max_len="
                       f"{max_len}")
    for key in FEATURES:
      if key == "token_mask" and key not in ex:
        batch[key][i, :n] = True
      elif key in ex:
        batch[key][i, :n] = ex[key]
  return batch


def _codepoints(text: str, max_chars: int) -> np.ndarray:
  return np.frombuffer(text[:max_chars].encode("utf-32-le"), np.uint32
                       ).astype(np.int64)


def edit_distances(source: str, others: Sequence[str],
                   max_chars: int = MAX_EDIT_CHARS) -> np.ndarray:
  """Levenshtein distances (unit insert/delete/substitute) in characters.

  All `others` are processed at once, one numpy step per character of
  `source`: within a DP row the insertion chain is a running minimum, so
  the cost is O(len(source)) numpy operations over a
  `[len(others), max len + 1]` array. Strings are cut to their first
  `max_chars` characters first, which bounds time and memory whatever the
  (untrusted) text.

  Args:
    source: one string.
    others: strings to compare against.
    max_chars: characters of each string that count.

  Returns:
    `[len(others)] int64` distances.
  """
  a = _codepoints(source, max_chars)
  bs = [_codepoints(b, max_chars) for b in others]
  if not bs:
    return np.zeros(0, np.int64)
  b_len = np.array([len(b) for b in bs], np.int64)
  width = int(b_len.max())
  grid = np.full((len(bs), width), -1, np.int64)  # -1 never equals a code point
  for i, b in enumerate(bs):
    grid[i, :len(b)] = b
  cols = np.arange(width + 1, dtype=np.int64)
  row = np.broadcast_to(cols, (len(bs), width + 1)).copy()
  for i, char in enumerate(a, start=1):
    best = np.empty_like(row)
    best[:, 0] = i
    best[:, 1:] = np.minimum(row[:, 1:] + 1, row[:, :-1] + (grid != char))
    # row[j] = min_k (best[k] + j - k): insertions, as a running minimum.
    row = np.minimum.accumulate(best - cols, axis=1) + cols
  return row[np.arange(len(bs)), b_len]


def edit_distance(a: str, b: str, max_chars: int = MAX_EDIT_CHARS) -> int:
  """Levenshtein distance between two strings (see `edit_distances`)."""
  return int(edit_distances(a, [b], max_chars)[0])


def build_revision_trajectories(
    samples_per_problem: Mapping[Any, Sequence[tuple[str, bool]]],
    rng: np.random.Generator,
    max_context: int = MAX_CONTEXT,
    max_k: int = 4,
) -> list[tuple[Any, list[str], str]]:
  """Revision training data from the policy's own samples (Snell et al. 6.1).

  For every correct sample of a problem (one trajectory each):

  1. draw `k ~ U{0, ..., max_k}`, then cap it at the number of wrong samples;
  2. the last attempt is the wrong sample closest to the correct one by
     character edit distance (ties: the earliest in the list), so the model
     learns to revise an answer that is nearly right into the right one;
  3. the other `k - 1` attempts are distinct other wrong samples drawn without
     replacement, in random order, placed before it;
  4. only the last `max_context` attempts are kept.

  Problems are visited in `sorted(uid, key=str)` order and samples in list
  order, and `k` is drawn even when there is no wrong sample, so the result
  depends only on the data and the rng's seed, not on dict order.

  Args:
    samples_per_problem: uid -> [(solution text, is correct)].
    rng: numpy generator (consumed).
    max_context: most attempts kept in context.
    max_k: most wrong attempts drawn before capping.

  Returns:
    `[(uid, previous_attempts oldest first, target correct solution)]`.
  """
  if max_k < 0 or max_context < 0:
    raise ValueError(f"max_k and max_context must be >= 0, got max_k={max_k}, "
                     f"max_context={max_context}")
  trajectories = []
  for uid in sorted(samples_per_problem, key=str):
    samples = samples_per_problem[uid]
    wrong = [text for text, ok in samples if not ok]
    for text, ok in samples:
      if not ok:
        continue
      k = min(int(rng.integers(0, max_k + 1)), len(wrong))
      context = []
      if k:
        closest = int(np.argmin(edit_distances(text, wrong)))
        others = [j for j in range(len(wrong)) if j != closest]
        picked = rng.choice(len(others), size=k - 1, replace=False)
        context = [wrong[others[j]] for j in picked] + [wrong[closest]]
      kept = context[-max_context:] if max_context else []
      trajectories.append((uid, kept, text))
  return trajectories
