"""seqio Tasks for LM, PRM, ORM and revision training, and contract batches.

Every task reads raw records from its source, then one preprocessor calls the
matching `ttcjax.data.examples` function inside `tf.numpy_function`, so a task
yields exactly what the numpy path builds, one unpadded example each:

  tokens [n] int32, token_mask [n] bool, loss_weights / reward_targets /
  reward_weights [n] float32.

The sequence length is `sequence_length["tokens"]` (prompts are cut from the
left to fit; an example whose target alone is too long is dropped). Batches
for the trainer come from `to_numpy_batches` (or `task_batches`), or from
`seqio.get_dataset(..., feature_converter=ContractFeatureConverter())`.

Tasks (`register_tasks`; names end with `suffix`):

  ttcjax_arithmetic_sft  `ttcjax.tasks.arithmetic` problems, generated per
                         split from (seed, count); LM on the solution.
  ttcjax_<name>_sft      the same for any other generated task given
                         (`generated_tasks`, e.g. 'countdown'): LM on
                         `task.prompt(problem)` then the solution.
  ttcjax_math_sft        MATH jsonl (`ttcjax.tasks.math.load_jsonl` format);
                         LM on `solution` after `math_prompt(problem)`.
  ttcjax_prm             jsonl `{"prompt", "steps": [..], "step_labels": [..]}`.
  ttcjax_orm             jsonl `{"prompt", "solution", "label"}`.
  ttcjax_revision        jsonl `{"question", "previous_attempts": [..],
                         "target"}` (`examples.build_revision_trajectories`).

jsonl files are read in Python (`tf.data.Dataset.from_generator`), and a
malformed line fails with `path:line`. The sources cannot shard at the file
level: shard the returned dataset, or cache the task, for multi-host training.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from ttcjax import tasks as tasks_lib
from ttcjax.data import examples
from ttcjax.data import vocabularies
from ttcjax.tasks import arithmetic
from ttcjax.tasks import math as math_task

PathLike = str | os.PathLike
Splits = Mapping[str, PathLike]

# split -> (seed, number of problems). Seeds below 1000 are left to the study's
# evaluation problems (TFDS configs use 1000 + 3 * seed + split, too).
DEFAULT_ARITHMETIC_SPLITS = {"train": (1000, 100_000),
                             "validation": (1001, 1000)}

_TF_DTYPES = {"tokens": tf.int32, "token_mask": tf.bool,
              "loss_weights": tf.float32, "reward_targets": tf.float32,
              "reward_weights": tf.float32}
_RAW = {
    "lm": {"prompt": tf.string, "target": tf.string},
    "prm": {"prompt": tf.string, "steps": (tf.string, [None]),
            "step_labels": (tf.float32, [None])},
    "orm": {"prompt": tf.string, "solution": tf.string, "label": tf.float32},
    "revision": {"question": tf.string,
                 "previous_attempts": (tf.string, [None]),
                 "target": tf.string},
}


def math_prompt(problem: math_task.MathProblem) -> str:
  """The MATH prompt: the problem and a newline, like `arithmetic.prompt`."""
  return problem.problem + "\n"


def contract_features(vocabulary: seqio.Vocabulary
                      ) -> dict[str, seqio.Feature]:
  """The contract's features; only `tokens` has a vocabulary."""
  features = {"tokens": seqio.Feature(vocabulary, add_eos=False,
                                      dtype=tf.int32)}
  for key in examples.FEATURES[1:]:
    features[key] = seqio.ContinuousFeature(dtype=_TF_DTYPES[key], rank=1)
  return features


def _signature(kind: str) -> dict[str, tf.TensorSpec]:
  spec = {}
  for key, value in _RAW[kind].items():
    dtype, shape = value if isinstance(value, tuple) else (value, [])
    spec[key] = tf.TensorSpec(shape, dtype)
  return spec


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _build_fn(kind: str, tokenizer: examples.TextTokenizer,
              max_len: Optional[int]) -> Callable[..., tuple]:
  """A numpy function: raw fields of `kind` -> contract arrays, keep bit."""

  def build(*fields):
    f = dict(zip(_RAW[kind], fields))
    try:
      if kind == "lm":
        ex = examples.lm_example(tokenizer, _text(f["prompt"]),
                                 _text(f["target"]), max_len)
      elif kind == "prm":
        ex = examples.prm_example(tokenizer, _text(f["prompt"]),
                                  [_text(s) for s in f["steps"]],
                                  f["step_labels"].tolist(), max_len)
      elif kind == "orm":
        ex = examples.orm_example(tokenizer, _text(f["prompt"]),
                                  _text(f["solution"]), float(f["label"]),
                                  max_len)
      else:
        ex = examples.revision_example(
            tokenizer, _text(f["question"]),
            [_text(a) for a in f["previous_attempts"]], _text(f["target"]),
            max_len)
      keep = True
    except examples.ExampleTooLongError:
      ex = {k: np.zeros(0, examples.DTYPES[k]) for k in examples.FEATURES}
      keep = False
    return tuple(ex[k] for k in examples.FEATURES) + (np.bool_(keep),)

  return build


def _preprocessor(kind: str) -> Callable[..., tf.data.Dataset]:
  """A seqio preprocessor turning raw `kind` records into contract examples."""

  def preprocess(dataset: tf.data.Dataset,
                 sequence_length: Optional[Mapping[str, int]],
                 output_features: Mapping[str, seqio.Feature]
                 ) -> tf.data.Dataset:
    max_len = (sequence_length or {}).get("tokens")
    build = _build_fn(kind, output_features["tokens"].vocabulary, max_len)
    tout = [_TF_DTYPES[k] for k in examples.FEATURES] + [tf.bool]

    def to_example(raw):
      *arrays, keep = tf.numpy_function(
          build, [raw[k] for k in _RAW[kind]], tout, stateful=False)
      out = {}
      for key, array in zip(examples.FEATURES, arrays):
        array.set_shape([None])
        out[key] = array
      keep.set_shape([])
      return out, keep

    def kept(unused_example, keep):
      return keep

    def example_only(example, unused_keep):
      return example

    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.filter(kept).map(example_only)

  preprocess.__name__ = f"build_{kind}_examples"
  return preprocess


def _generator_dataset(kind: str, records: Callable[[], Iterator[dict]]
                       ) -> tf.data.Dataset:
  return tf.data.Dataset.from_generator(records,
                                        output_signature=_signature(kind))


def _read_jsonl(path: PathLike, parse: Callable[[dict, str], dict]
                ) -> Iterator[dict]:
  path = os.fspath(path)
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object")
      yield parse(row, where)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(row: dict, key: str, where: str, ok: Callable[[Any], bool],
         what: str):
  value = row.get(key)
  if not ok(value):
    raise ValueError(f"{where}: field {key!r} must be {what}, got "
                     f"{repr(value)[:80]}")
  return value


def _string(row: dict, key: str, where: str) -> str:
  return _get(row, key, where, lambda v: isinstance(v, str), "a string")


def _strings(row: dict, key: str, where: str) -> np.ndarray:
  value = _get(row, key, where, lambda v: isinstance(v, list) and all(
      isinstance(x, str) for x in v), "a list of strings")
  return np.array(value, dtype=object).reshape(len(value))


def _parse_prm(row: dict, where: str) -> dict:
  steps = _strings(row, "steps", where)
  labels = _get(row, "step_labels", where,
                lambda v: isinstance(v, list) and all(map(_is_number, v)),
                "a list of numbers")
  if len(steps) != len(labels) or not len(steps):
    raise ValueError(f"{where}: needs as many 'step_labels' as 'steps' (>= 1), "
                     f"got {len(labels)} and {len(steps)}")
  return {"prompt": _string(row, "prompt", where), "steps": steps,
          "step_labels": np.array(labels, np.float32)}


def _parse_orm(row: dict, where: str) -> dict:
  key = "context" if "context" in row else "prompt"
  return {"prompt": _string(row, key, where),
          "solution": _string(row, "solution", where),
          "label": np.float32(_get(row, "label", where, _is_number,
                                   "a number"))}


def _parse_revision(row: dict, where: str) -> dict:
  key = "attempts" if "attempts" in row else "previous_attempts"
  return {"question": _string(row, "question", where),
          "previous_attempts": _strings(row, key, where),
          "target": _string(row, "target", where)}


def _jsonl_source(kind: str, files: Splits,
                  parse: Callable[[dict, str], dict]) -> seqio.DataSource:
  files = {split: os.fspath(path) for split, path in files.items()}

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
    del shuffle_files, seed  # One file a split; the Task shuffles examples.
    return _generator_dataset(kind, lambda: _read_jsonl(files[split], parse))

  return seqio.FunctionDataSource(dataset_fn, splits=list(files))


def _math_source(files: Splits,
                 prompt_fn: Callable[[math_task.MathProblem], str]
                 ) -> seqio.DataSource:
  files = {split: os.fspath(path) for split, path in files.items()}

  def records(split):
    for problem in math_task.load_jsonl(files[split]):
      if problem.solution.strip():  # Answer-only rows teach nothing here.
        yield {"prompt": prompt_fn(problem), "target": problem.solution}

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
    del shuffle_files, seed
    return _generator_dataset("lm", lambda: records(split))

  return seqio.FunctionDataSource(dataset_fn, splits=list(files))


def _generated_source(task: tasks_lib.Task,
                      splits: Mapping[str, tuple[int, int]]
                      ) -> seqio.DataSource:
  """A generated task's problems: prompt, then the reference solution (the
  fields `examples.reference_example` reads)."""
  splits = dict(splits)

  def records(split):
    seed, count = splits[split]
    for problem in task.problems(count, seed):
      yield {"prompt": task.prompt(problem), "target": problem.solution}

  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
    del shuffle_files, seed  # Problems come from their own per-split seeds.
    return _generator_dataset("lm", lambda: records(split))

  return seqio.FunctionDataSource(
      dataset_fn, splits=list(splits),
      num_input_examples={s: c for s, (_, c) in splits.items()})


def _register(name: str, source: seqio.DataSource, kind: str,
              vocabulary: seqio.Vocabulary) -> seqio.Task:
  # Registering again replaces the task, so tests and notebooks may re-run.
  seqio.TaskRegistry.remove(name)
  task = seqio.Task(name, source=source,
                    output_features=contract_features(vocabulary),
                    preprocessors=[_preprocessor(kind)])
  seqio.TaskRegistry.add_provider(name, task)
  return task


def register_tasks(
    *,
    vocabulary: Optional[seqio.Vocabulary] = None,
    arithmetic_config: Optional[arithmetic.ArithmeticConfig] = None,
    arithmetic_splits: Optional[Mapping[str, tuple[int, int]]] = None,
    generated_tasks: Sequence[tasks_lib.Task] = (),
    math_files: Optional[Splits] = None,
    prm_files: Optional[Splits] = None,
    orm_files: Optional[Splits] = None,
    revision_files: Optional[Splits] = None,
    math_prompt_fn: Callable[[math_task.MathProblem], str] = math_prompt,
    suffix: str = "",
) -> list[str]:
  """Registers the ttcjax seqio tasks (idempotent: re-registering replaces).

  Args:
    vocabulary: `vocabularies.ByteVocabulary()` (default) or an
      `HFVocabulary`.
    arithmetic_config: difficulty of the arithmetic task (default config
      when None).
    arithmetic_splits: split -> (seed, count) of every generated task;
      `DEFAULT_ARITHMETIC_SPLITS` when None.
    generated_tasks: more tasks with generated reference solutions
      (`Task.reference_solutions`), each registered as
      `ttcjax_<task.name>_sft`; an 'arithmetic' task here replaces the one
      of `arithmetic_config`.
    math_files: split -> MATH jsonl; the MATH task is registered when given.
    prm_files: split -> PRM jsonl.
    orm_files: split -> ORM jsonl.
    revision_files: split -> revision trajectory jsonl.
    math_prompt_fn: prompt of a MATH problem.
    suffix: appended to every task name (e.g. "_qwen").

  Returns:
    The registered task names.
  """
  if vocabulary is None:
    vocabulary = vocabularies.ByteVocabulary()
  splits = arithmetic_splits or DEFAULT_ARITHMETIC_SPLITS
  generated = {"arithmetic": arithmetic.ArithmeticTask(
      arithmetic_config or arithmetic.ArithmeticConfig())}
  for task in generated_tasks:
    if not task.reference_solutions:
      raise ValueError(f"register_tasks: generated_tasks holds task "
                       f"{task.name!r}, which has no generated reference "
                       f"solutions (give MATH as math_files)")
    generated[task.name] = task
  tasks = [(f"ttcjax_{name}_sft", "lm", _generated_source(task, splits))
           for name, task in generated.items()]
  if math_files:
    tasks.append(("ttcjax_math_sft", "lm",
                  _math_source(math_files, math_prompt_fn)))
  for name, kind, files, parse in (
      ("ttcjax_prm", "prm", prm_files, _parse_prm),
      ("ttcjax_orm", "orm", orm_files, _parse_orm),
      ("ttcjax_revision", "revision", revision_files, _parse_revision)):
    if files:
      tasks.append((name, kind, _jsonl_source(kind, files, parse)))
  names = []
  for name, kind, source in tasks:
    _register(name + suffix, source, kind, vocabulary)
    names.append(name + suffix)
  return names


class ContractFeatureConverter(seqio.FeatureConverter):
  """Pads a task's contract features to `task_feature_lengths["tokens"]`.

  For `seqio.get_dataset(name, {"tokens": L}, split, feature_converter=
  ContractFeatureConverter())`. Packing is not supported: the contract has no
  segment ids.
  """

  TASK_FEATURES = {
      "tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=v)
                    for k, v in _TF_DTYPES.items()}
  PACKING_FEATURE_DTYPES = None

  def __init__(self, pack: bool = False, **kwargs):
    if pack:
      raise ValueError("ContractFeatureConverter does not pack")
    super().__init__(pack=False, **kwargs)

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]
                        ) -> tf.data.Dataset:
    ds = ds.map(lambda ex: {k: ex[k] for k in examples.FEATURES})
    return seqio.utils.trim_and_pad_dataset(
        ds, self.get_model_feature_lengths(task_feature_lengths))

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> dict[str, int]:
    return {k: task_feature_lengths["tokens"] for k in examples.FEATURES}


def to_numpy_batches(dataset: tf.data.Dataset, batch_size: int, max_len: int,
                     drop_remainder: bool = False
                     ) -> Iterator[dict[str, np.ndarray]]:
  """Contract batches from a dataset of (padded or unpadded) examples.

  Args:
    dataset: examples with the five contract features, each at most
      `max_len` long (other features are ignored).
    batch_size: rows per batch.
    max_len: L, the padded length.
    drop_remainder: drop a last, smaller batch.

  Yields:
    `{feature: [batch_size, max_len]}` numpy arrays; padding is 0 / False,
    as `examples.collate` pads.
  """
  ds = dataset.map(lambda ex: {k: ex[k] for k in examples.FEATURES})
  ds = ds.padded_batch(batch_size,
                       padded_shapes={k: [max_len] for k in examples.FEATURES},
                       drop_remainder=drop_remainder)
  for batch in ds.as_numpy_iterator():
    yield {k: np.asarray(batch[k], examples.DTYPES[k])
           for k in examples.FEATURES}


def task_batches(name: str, split: str, batch_size: int, max_len: int, *,
                 shuffle: bool = False, seed: Optional[int] = None,
                 num_epochs: Optional[int] = 1, drop_remainder: bool = False
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Contract batches of a registered task (`num_epochs=None`: repeat)."""
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset({"tokens": max_len}, split=split, shuffle=shuffle,
                        seed=seed, num_epochs=num_epochs)
  return to_numpy_batches(ds, batch_size, max_len, drop_remainder)
