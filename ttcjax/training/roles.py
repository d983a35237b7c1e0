"""Training runs for the four model roles of the study.

A `TrainRun` says which model to train for which role, on which data:

  policy    LM on the reference solutions of a generated task
            (`DataConfig.task`: 'arithmetic', 'countdown'; `ttcjax.tasks`).
  prm       reward head on Monte-Carlo step labels, jsonl
            `{"prompt": str, "steps": [str], "step_labels": [float]}`
            (or token ids: `{"prompt_ids", "steps": [[int]], ...}`).
  revision  LM on revision trajectories, jsonl
            `{"question": str, "attempts": [str], "target": str}`
            (`"previous_attempts"` is accepted for `"attempts"`).
  orm       reward head on outcome labels, jsonl
            `{"context": str, "solution": str, "label": float}`
            (`"prompt"` for `"context"`; or `"question"` and `"attempts"`
            for a revision ORM's history).

See `record_example` for the exact formats.

`train(run, workdir)` builds the batch sources (pure numpy through
`ttcjax.data.examples` by default; `DataConfig.source='seqio'` goes through
the seqio tasks of `ttcjax.data.seqio_tasks`, which need TensorFlow), loads
`init_checkpoint` (adding a fresh reward head for prm/orm), and calls
`ttcjax.training.train`. `ttcjax.main.configure.train_from_gin` does the
same from gin files, after writing the operative config into the workdir.

Nothing here imports gin or TensorFlow at module level.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Sequence

from absl import logging
from etils import epath
import jax
import numpy as np

from ttcjax import checkpoint, partitioning, tasks, tokenizer, training
from ttcjax.data import examples, packing
from ttcjax.models.config import ModelConfig, as_dtype
from ttcjax.tasks import arithmetic
from ttcjax.verifiers import labeling, revision_data

ROLES = ("policy", "prm", "revision", "orm")
REWARD_ROLES = ("prm", "orm")
SOURCES = ("numpy", "seqio")
BYTE_VOCAB = tokenizer.ByteTokenizer().vocab_size
_MAX_BYTE_VOCAB = 1024  # byte models may pad their vocabulary up to this
# Fields a checkpoint may differ in from the run's model: they change neither
# the parameter tree nor the function (param_dtype is cast on load).
_FREE_FIELDS = ("param_dtype", "dtype", "max_len", "reward_head")
# The policy's seqio task is `ttcjax_<DataConfig.task>_sft`.
_SEQIO_TASKS = {"prm": "ttcjax_prm", "orm": "ttcjax_orm",
                "revision": "ttcjax_revision"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Where a run's examples come from and how they are batched.

  Attributes:
    batch_size: rows per train and eval batch; divide it by data * fsdp.
    max_len: longest sequence; None means the model's max_len. Batches are
      padded to the longest example (rounded up to 8), at most this.
    pack: pack several examples into each row of `max_len` tokens
      (`ttcjax.data.packing.pack`, in file order), each its own segment:
      attention, positions and loss never cross an example, so a packed
      run computes what one example per row does, with less padding.
      'numpy' source only.
    source: 'numpy' (examples built in Python) or 'seqio' (the registered
      seqio tasks; imports TensorFlow).
    shuffle_seed: order of the training examples.
    task: the policy's problems (role 'policy'): a task of
      `ttcjax.tasks.registered()` with generated reference solutions
      (`Task.reference_solutions`: 'arithmetic', 'countdown'). An example is
      `task.prompt(problem)` then the problem's solution
      (`ttcjax.data.examples.reference_example`).
    task_config: the task's config, built as `tasks.get(task,
      config=task_config)` (an `ArithmeticConfig`, a `CountdownConfig`);
      None is the task's default.
    arithmetic: an alias kept for older gin files: `arithmetic=c` is
      `task='arithmetic', task_config=c` (the config is rewritten so, and
      compares equal).
    train_examples: problems to train on.
    train_seed: their seed (seeds below 1000 are the study's eval problems).
    eval_examples: problems to evaluate on; 0 disables eval.
    eval_seed: their seed.
    train_file: jsonl of the role's records (roles prm, revision, orm).
    eval_file: jsonl of eval records, or None for no eval.
    tokenizer_dir: directory with the model's `tokenizer.json`; None uses the
      byte tokenizer (byte-level models only).
    eos_token: the end token of `tokenizer_dir`'s tokenizer.
  """

  batch_size: int = 32
  max_len: int | None = None
  pack: bool = False
  source: str = "numpy"
  shuffle_seed: int = 0
  task: str = "arithmetic"
  task_config: Any = None
  arithmetic: arithmetic.ArithmeticConfig | None = None
  train_examples: int = 20_000
  train_seed: int = 1000
  eval_examples: int = 256
  eval_seed: int = 1001
  train_file: str | None = None
  eval_file: str | None = None
  tokenizer_dir: str | None = None
  eos_token: str = "<|endoftext|>"

  def __post_init__(self):
    for name in ("batch_size", "train_examples"):
      if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
        _fail("DataConfig", name, self, "a positive int")
    if not _is_int(self.eval_examples) or self.eval_examples < 0:
      _fail("DataConfig", "eval_examples", self, "an int >= 0")
    if self.max_len is not None and (not _is_int(self.max_len) or
                                     self.max_len <= 1):
      _fail("DataConfig", "max_len", self, "None or an int > 1")
    if self.source not in SOURCES:
      _fail("DataConfig", "source", self, f"one of {SOURCES}")
    if self.pack and self.source != "numpy":
      raise ValueError(f"DataConfig.pack=True needs DataConfig.source="
                       f"'numpy', got {self.source!r} (the seqio tasks do "
                       f"not pack)")
    if self.task not in tasks.registered():
      _fail("DataConfig", "task", self, f"one of {tasks.registered()}")
    if self.arithmetic is not None:
      if self.task != "arithmetic" or self.task_config is not None:
        raise ValueError(
            f"DataConfig.arithmetic is an alias of DataConfig.task_config "
            f"for task 'arithmetic': with DataConfig.task={self.task!r} and "
            f"task_config={self.task_config!r} set only DataConfig.task_config")
      object.__setattr__(self, "task_config", self.arithmetic)
      object.__setattr__(self, "arithmetic", None)

  def make_task(self) -> tasks.Task:
    """The policy's task: `tasks.get(task, config=task_config)`.

    Raises:
      ValueError: naming DataConfig.task when the task has no generated
        reference solutions, or DataConfig.task_config when it does not
        configure the task.
    """
    if not tasks.task_class(self.task).reference_solutions:
      generated = [n for n in tasks.registered()
                   if tasks.task_class(n).reference_solutions]
      raise ValueError(
          f"DataConfig.task={self.task!r} has no generated reference "
          f"solutions to train the policy on: set DataConfig.task to one of "
          f"{generated}, or use a trained policy instead of this run "
          f"(ttcjax.main.convert_hf)")
    kwargs = {} if self.task_config is None else {"config": self.task_config}
    try:
      return tasks.get(self.task, **kwargs)
    except TypeError as e:
      raise ValueError(f"DataConfig.task_config={self.task_config!r} does "
                       f"not configure task {self.task!r}: {e}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRun:
  """One training run: the role, the model, the optimiser, the data.

  Attributes:
    role: one of `ROLES`.
    model: the model's shape; `reward_head=True` exactly for prm and orm.
    train: optimisation; objective 'reward' for prm/orm, 'lm' otherwise.
    data: the examples.
    mesh: the device mesh over all devices.
    init_checkpoint: a `ttcjax.checkpoint` to start from (the policy's
      `final/` for prm, revision and orm); None starts from a random init.
      Its shape must equal `model` except in `_FREE_FIELDS`.
  """

  role: str
  model: ModelConfig
  train: training.TrainConfig
  data: DataConfig
  mesh: partitioning.MeshConfig = partitioning.MeshConfig()
  init_checkpoint: str | None = None

  def __post_init__(self):
    if self.role not in ROLES:
      _fail("TrainRun", "role", self, f"one of {ROLES}")
    for name, cls in (("model", ModelConfig), ("train", training.TrainConfig),
                      ("data", DataConfig),
                      ("mesh", partitioning.MeshConfig)):
      if not isinstance(getattr(self, name), cls):
        _fail("TrainRun", name, self, f"a {cls.__name__}")
    reward = self.role in REWARD_ROLES
    want = "reward" if reward else "lm"
    if self.train.objective != want or self.model.reward_head != reward:
      raise ValueError(
          f"TrainRun.role={self.role!r} needs TrainConfig.objective={want!r} "
          f"and ModelConfig.reward_head={reward}, got "
          f"{self.train.objective!r} and {self.model.reward_head} (the run "
          f"file gin_configs/runs/train_{self.role}.gin binds both)")
    if self.role == "policy":
      self.data.make_task()  # a task without solutions, or a wrong config
    if self.role != "policy" and not self.data.train_file:
      raise ValueError(f"TrainRun.role={self.role!r} needs "
                       "DataConfig.train_file (a jsonl)")
    if self.data.tokenizer_dir is None and not (
        BYTE_VOCAB <= self.model.vocab_size <= _MAX_BYTE_VOCAB):
      raise ValueError(
          f"ModelConfig.vocab_size={self.model.vocab_size} does not fit the "
          f"byte tokenizer ({BYTE_VOCAB} ids): set DataConfig.tokenizer_dir "
          "to the model's tokenizer")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _fail(cls: str, name: str, obj: Any, want: str):
  raise ValueError(f"{cls}.{name} must be {want}, got "
                   f"{getattr(obj, name)!r}")


# ---------------------------------------------------------------- tokenizers


def make_tokenizer(data: DataConfig) -> examples.TextTokenizer:
  """The byte tokenizer, or the HF tokenizer of `data.tokenizer_dir`."""
  return examples.load_text_tokenizer(data.tokenizer_dir, data.eos_token,
                                      where="DataConfig.eos_token")


# ------------------------------------------------------------------ records


def read_jsonl(path: str) -> Iterator[tuple[str, dict]]:
  """Yields `("path:line", record)` for every non-empty line of a jsonl."""
  with epath.Path(path).open() as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
      yield where, record


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list_of(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
  return lambda v: isinstance(v, list) and all(map(ok, v))


_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "strs": (_list_of(lambda v: isinstance(v, str)), "a list of strings"),
    "num": (_is_num, "a number"),
    "nums": (_list_of(_is_num), "a list of numbers"),
    "ids": (_list_of(_is_int), "a list of ints"),
    "idss": (_list_of(_list_of(_is_int)), "a list of lists of ints"),
}


def _get(record: dict, where: str, kind: str, *keys: str):
  """`record[key]` for the first of `keys` present, checked to be `kind`."""
  key = next((k for k in keys if k in record), keys[0])
  ok, what = _KINDS[kind]
  if not ok(record.get(key)):
    raise ValueError(f"{where}: field {key!r} must be {what}, got "
                     f"{repr(record.get(key))[:80]}")
  return record[key]


def _record_example(role: str, r: dict, tok: examples.TextTokenizer,
                    max_len: int | None, w: str) -> examples.Example:
  if role == "prm" and "prompt_ids" in r:
    return labeling.prm_example_from_ids(
        _get(r, w, "ids", "prompt_ids"), _get(r, w, "idss", "steps"),
        _get(r, w, "nums", "step_labels"), max_len,
        bos_id=getattr(tok, "bos_id", None))
  if role == "prm":
    return examples.prm_example(tok, _get(r, w, "str", "prompt"),
                                _get(r, w, "strs", "steps"),
                                _get(r, w, "nums", "step_labels"), max_len)
  attempts = lambda: _get(r, w, "strs", "attempts", "previous_attempts")
  if role == "orm" and "question" in r:
    return revision_data.orm_example_with_history(
        tok, _get(r, w, "str", "question"), attempts(),
        _get(r, w, "str", "solution"), _get(r, w, "num", "label"), max_len)
  if role == "orm":
    return examples.orm_example(tok, _get(r, w, "str", "context", "prompt"),
                                _get(r, w, "str", "solution"),
                                _get(r, w, "num", "label"), max_len)
  if role == "revision":
    return examples.revision_example(tok, _get(r, w, "str", "question"),
                                     attempts(), _get(r, w, "str", "target"),
                                     max_len)
  raise ValueError(f"role {role!r} has no jsonl records")


def record_example(role: str, record: dict, tok: examples.TextTokenizer,
                   max_len: int | None, where: str) -> examples.Example:
  """One jsonl record of `role` as an unpadded example.

  Formats (extra fields are ignored):

    prm       {"prompt": str, "steps": [str], "step_labels": [float]}, or
              {"prompt_ids": [int], "steps": [[int]], "step_labels": [float]}
              (`ttcjax.verifiers.labeling.LabeledSolution`, ids as sampled)
    revision  {"question": str, "attempts": [str], "target": str}
    orm       {"context": str, "solution": str, "label": float}, or
              {"question": str, "attempts": [str], "solution": str,
               "label": float} (a revision ORM: the revision prompt as context)

  Raises:
    ValueError: naming `where` (path:line) and the bad field.
    ExampleTooLongError: the part carrying the loss exceeds max_len.
  """
  try:
    return _record_example(role, record, tok, max_len, where)
  except examples.ExampleTooLongError:
    raise
  except ValueError as e:
    if str(e).startswith(where):
      raise
    raise ValueError(f"{where}: {e}") from None


def _examples(run: TrainRun, tok, split: str) -> list[examples.Example]:
  """The unpadded examples of a split ('train' or 'eval'), too-long dropped."""
  data, max_len = run.data, _max_len(run)
  built, dropped = [], 0
  if run.role == "policy":
    count, seed = ((data.train_examples, data.train_seed) if split == "train"
                   else (data.eval_examples, data.eval_seed))
    task = data.make_task()
    for problem in task.problems(count, seed):
      try:
        built.append(examples.reference_example(tok, task, problem, max_len))
      except examples.ExampleTooLongError:
        dropped += 1
    where = f"{data.task} {split} (seed {seed})"
  else:
    where = data.train_file if split == "train" else data.eval_file
    for line, record in read_jsonl(where):
      try:
        built.append(record_example(run.role, record, tok, max_len, line))
      except examples.ExampleTooLongError:
        dropped += 1
  if dropped:
    logging.warning("%s: dropped %d examples longer than max_len=%d", where,
                    dropped, max_len)
  if not built:
    raise ValueError(f"{where}: no {run.role} examples (of {dropped} read) "
                     f"fit in max_len={max_len}")
  return built


def _max_len(run: TrainRun) -> int:
  return run.data.max_len or run.model.max_len


def _collate(built: Sequence[examples.Example], max_len: int,
             pack: bool = False) -> dict[str, np.ndarray]:
  """One example per row (padded to the longest, rounded up to 8), or
  packed rows of `max_len` (`DataConfig.pack`)."""
  if pack:
    return packing.pack(built, max_len)
  longest = max(len(ex["tokens"]) for ex in built)
  return examples.collate(built, min(max_len, -(-longest // 8) * 8))


# ------------------------------------------------------------------ sources


class SequentialSource:
  """Eval batches: rows in order, the last batch filled with weightless rows.

  `get(i)` is rows `[i * b, (i + 1) * b)`; positions past the end repeat
  earlier rows with zero loss and reward weights, so they count for nothing
  in `training.evaluate`'s weighted means.
  """

  def __init__(self, arrays: dict[str, np.ndarray], batch_size: int):
    self.arrays, self.batch_size = arrays, batch_size
    self.num_rows = len(arrays["tokens"])

  def get(self, step: int) -> dict[str, np.ndarray]:
    positions = step * self.batch_size + np.arange(self.batch_size)
    batch = {k: a[positions % self.num_rows] for k, a in self.arrays.items()}
    real = (positions < self.num_rows)[:, None]
    for key in ("loss_weights", "reward_weights"):
      if key in batch:
        batch[key] = np.where(real, batch[key], 0).astype(batch[key].dtype)
    return batch


class IteratorSource:
  """A deterministic iterator of batches as a step-addressed source.

  `get(step)` consumes the iterator in order; asking for an earlier step
  (or starting at step k, as a resumed run does) restarts it and skips.
  """

  def __init__(self, make_iterator: Callable[[], Iterator[dict]]):
    self._make, self._iterator, self._next = make_iterator, None, 0

  def get(self, step: int) -> dict[str, np.ndarray]:
    if self._iterator is None or step < self._next:
      self._iterator, self._next = self._make(), 0
    while self._next < step:
      next(self._iterator)
      self._next += 1
    self._next += 1
    return next(self._iterator)


def _has_eval(run: TrainRun) -> bool:
  if run.role == "policy":
    return run.data.eval_examples > 0
  return bool(run.data.eval_file)


def numpy_sources(run: TrainRun, tok) -> tuple[Any, Any]:
  """`(train, eval or None)` sources built in numpy."""
  data = run.data
  train = training.ArraySource(_collate(_examples(run, tok, "train"),
                                        _max_len(run), data.pack),
                               data.batch_size, seed=data.shuffle_seed)
  if not _has_eval(run):
    return train, None
  return train, SequentialSource(
      _collate(_examples(run, tok, "eval"), _max_len(run), data.pack),
      data.batch_size)


def seqio_sources(run: TrainRun, tok) -> tuple[Any, Any]:
  """`(train, eval or None)` sources over the registered seqio tasks."""
  from ttcjax.data import seqio_tasks, vocabularies  # pylint: disable=g-import-not-at-top
  data, max_len = run.data, _max_len(run)
  if data.tokenizer_dir is None:
    vocabulary = vocabularies.ByteVocabulary()
  else:
    vocabulary = vocabularies.HFVocabulary(tok.tokenizer, eos_id=tok.eos_id,
                                           pad_id=tok.pad_id)
  files = {"train": data.train_file}
  if data.eval_file:
    files["validation"] = data.eval_file
  splits = {"train": (data.train_seed, data.train_examples)}
  if data.eval_examples:
    splits["validation"] = (data.eval_seed, data.eval_examples)
  if run.role == "policy":
    task = data.make_task()
    seqio_tasks.register_tasks(vocabulary=vocabulary, generated_tasks=(task,),
                               arithmetic_splits=splits)
    name = f"ttcjax_{task.name}_sft"
  else:
    seqio_tasks.register_tasks(vocabulary=vocabulary,
                               **{f"{run.role}_files": files})
    name = _SEQIO_TASKS[run.role]
  train = IteratorSource(lambda: seqio_tasks.task_batches(
      name, "train", data.batch_size, max_len, shuffle=True,
      seed=data.shuffle_seed, num_epochs=None, drop_remainder=True))
  if not _has_eval(run):
    return train, None
  batches = list(seqio_tasks.task_batches(
      name, "validation", data.batch_size, max_len, num_epochs=1))
  if not batches:
    raise ValueError(f"seqio task {name!r}: no validation examples fit in "
                     f"max_len={max_len}")
  arrays = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  return train, SequentialSource(arrays, data.batch_size)


# ------------------------------------------------------------ initial params


def check_compatible(stored: ModelConfig, model: ModelConfig,
                     where: str) -> None:
  """Raises unless a checkpoint's config matches the run's model."""
  diffs = [f"{f.name}: checkpoint {getattr(stored, f.name)!r}, run "
           f"{getattr(model, f.name)!r}"
           for f in dataclasses.fields(ModelConfig)
           if f.name not in _FREE_FIELDS
           and getattr(stored, f.name) != getattr(model, f.name)]
  if diffs:
    raise ValueError(f"{where}: the checkpoint's ModelConfig differs from the "
                     f"run's ({'; '.join(diffs)}); use the model gin file that "
                     "matches it")


def init_params(run: TrainRun, mesh) -> Any:
  """Params of `run.init_checkpoint`, shaped for `run.model`, or None.

  Restores straight into the mesh's shardings, casts to the run's
  param_dtype, and adds a fresh reward head (seeded by `TrainConfig.seed`)
  or drops one, as the role needs.
  """
  if run.init_checkpoint is None:
    return None
  stored = checkpoint.load_config(run.init_checkpoint)
  check_compatible(stored, run.model, run.init_checkpoint)
  _, params = checkpoint.restore(
      run.init_checkpoint,
      shardings=partitioning.param_shardings(stored, mesh))
  dtype = as_dtype(run.model.param_dtype)
  params = jax.tree.map(lambda x: x.astype(dtype), params)
  if run.model.reward_head and "reward_head" not in params:
    params = training.add_reward_head(
        params, run.model, jax.random.key(run.train.seed))
  elif not run.model.reward_head and "reward_head" in params:
    params = {k: v for k, v in params.items() if k != "reward_head"}
  return params


def _resuming(workdir) -> bool:
  """Whether `training.train` will resume (and so ignore init params)."""
  path = epath.Path(workdir) / "checkpoints"
  return path.is_dir() and any(p.name.isdigit() for p in path.iterdir())


# --------------------------------------------------------------- entry points


def train(run: TrainRun, workdir: str | os.PathLike
          ) -> tuple[Any, list[dict[str, Any]]]:
  """Trains `run` into `workdir` (see `ttcjax.training.train`).

  Returns:
    `(params, history)` of `ttcjax.training.train`; `workdir/final` holds
    the params.
  """
  mesh = partitioning.make_mesh(run.mesh)
  tok = make_tokenizer(run.data)
  make_sources = numpy_sources if run.data.source == "numpy" else seqio_sources
  train_source, eval_source = make_sources(run, tok)
  params = None if _resuming(workdir) else init_params(run, mesh)
  logging.info("training %s: %s (%d params) on mesh %s", run.role, run.model,
               run.model.num_params(), dict(mesh.shape))
  return training.train(run.model, run.train, train_source, eval_source,
                        workdir, mesh=mesh, init_params=params)


GIN_CONFIGURABLES = {"DataConfig": DataConfig, "TrainRun": TrainRun}
