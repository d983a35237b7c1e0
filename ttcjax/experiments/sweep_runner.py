"""The search/eval stage: checkpoints + problems -> records.jsonl.

`run(config, workdir)` restores the policy and PRM (or the revision model
and its ORM) from ttcjax checkpoints, draws the problems (the arithmetic
task by seed and count, or a MATH jsonl), plugs the real models into the
search callbacks (`sweep.Bundle`s), and runs the model-agnostic sweep loop
(`ttcjax.search.sweep.run_sweep`): every strategy x hyper-parameters x
budget of `config.strategies`, one record per (problem, strategy,
hyper-parameters, budget) appended to `<workdir>/records.jsonl`
(`ttcjax.search.records`). Records already there are skipped, so a killed
run resumes where it stopped, and a finished one reruns as a no-op.

On several processes (`jax.distributed`, started by the entry point), the
problem batches are dealt across processes and process 0 writes every
file; the records are those of one process (see `run`).

With `SearchRun.mesh`, each process's devices form a mesh: parameters are
restored straight into their shardings (embed dimension over `fsdp`,
heads over `model`), decode rows, caches and verifier rows are split over
`data` x `fsdp`, and the searches run under `partitioning.activate`, with
the layout `ttcjax.memory` budgets. `SearchRun.verifier_rows` bounds the
rows the PRM/ORM reads per forward pass. Neither changes a record beyond
float rounding. `SearchRun.incremental_verifier` (tree searches read the
PRM through a cache per row) does not either, except its cost: the
verifier tokens and FLOPs it really spent.

Run-level settings (checkpoints, sampler, token caps) are not part of a
record's key: start a new workdir when they change. The entry point writes
the operative gin config there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax

from ttcjax import checkpoint, memory, models, partitioning, tasks
from ttcjax.analysis import flops
from ttcjax.data import examples
from ttcjax.experiments import callbacks
from ttcjax.search import base, records, strategy, sweep
from ttcjax.search.revisions import RevisionPromptFn, with_prompt_fn
from ttcjax.search.sweep import (StrategySpec, batch_problems,  # re-exported
                                 chosen_for)
from ttcjax.search.tree import TreeConfig
from ttcjax.tasks import arithmetic, countdown
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.verifiers import hf_prms, oracle

VERIFIERS = ("prm", "oracle")
_ATTEMPT_OVERHEAD = 16  # "Attempt 4:\n" plus a newline, rounded up


def _check_path(value, where: str, required: bool) -> None:
  if value is None and not required:
    return
  if not isinstance(value, str) or not value:
    raise ValueError(f"{where} must be a path string, got {value!r} (bind it,"
                     f" e.g. --gin_bindings=\"{where}='/path'\")")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProblemSource:
  """Where the problems come from.

  Attributes:
    task: 'arithmetic' (`ttcjax.tasks.arithmetic`) or 'countdown'
      (`ttcjax.tasks.countdown`), drawn by seed and count, or 'math' (a
      MATH-style jsonl, `ttcjax.tasks.math.load_jsonl`). Answers are
      extracted, compared and graded by the task (`Task.grade_answer`).
    num_problems: problems to use (the first ones of a jsonl; None: all).
    seed: seed of a generated task (uids `arith-<seed>-<i>`,
      `countdown-<seed>-<i>`).
    path: the jsonl ('math').
    arithmetic: the arithmetic difficulty distribution.
    countdown: the Countdown difficulty distribution.
    prompt_template: the policy prompt, with `{problem}` replaced by the
      question or problem text (a plain replacement: other braces, as in
      `\\boxed{}`, stay); None: the text and a newline, as in training
      (`arithmetic.prompt`, `seqio_tasks.math_prompt`). Revision prompts
      always use the bare text (`examples.revision_prompt_ids`).
    chat_template: render the prompt with the chat template of
      `Checkpoints.tokenizer_dir` (its tokenizer_config.json): a system turn
      of `system_prompt` (if set), a user turn of the text, the assistant
      header. Excludes `prompt_template`.
    system_prompt: the system turn of `chat_template` prompts.
  """
  task: str = "arithmetic"
  num_problems: int | None = 16
  seed: int = 0
  path: str | None = None
  arithmetic: arithmetic.ArithmeticConfig = arithmetic.ArithmeticConfig()
  countdown: countdown.CountdownConfig = countdown.CountdownConfig()
  prompt_template: str | None = None
  chat_template: bool = False
  system_prompt: str | None = None

  def __post_init__(self):
    if self.chat_template and self.prompt_template is not None:
      raise ValueError("ProblemSource: set chat_template or prompt_template, "
                       "not both")
    if self.system_prompt is not None and not self.chat_template:
      raise ValueError("ProblemSource.system_prompt needs chat_template=True")
    if self.task not in tasks.registered():
      raise ValueError(f"ProblemSource.task must be one of "
                       f"{tasks.registered()}, got {self.task!r}")
    _check_path(self.path, "ProblemSource.path", False)
    try:
      self.make_task()
    except TypeError as e:  # e.g. a file-backed task without its path
      raise ValueError(f"ProblemSource(task={self.task!r}): {e}; bind "
                       f"ProblemSource.path (a file-backed task)") from None
    if self.num_problems is not None and self.num_problems < 0:
      raise ValueError(f"ProblemSource.num_problems must be >= 0, got "
                       f"{self.num_problems}")
    if self.prompt_template is not None and (
        "{problem}" not in self.prompt_template):
      raise ValueError(f"ProblemSource.prompt_template has no '{{problem}}':"
                       f" {self.prompt_template!r}")

  def prompt(self, text: str) -> str:
    """The policy prompt of a question / problem text."""
    if self.prompt_template is None:
      return text + "\n"
    return self.prompt_template.replace("{problem}", text)

  def make_task(self) -> tasks.Task:
    """The task, built from the registry with `path` (when set) and, for
    'arithmetic' and 'countdown', the field of that name as its `config`. (No field is added here for
    other tasks' options: this config is hashed into finished studies'
    stage hashes.)"""
    kwargs = {}
    if self.path is not None:
      kwargs["path"] = self.path
    if self.task in ("arithmetic", "countdown"):  # gin-facing config fields
      kwargs["config"] = getattr(self, self.task)
    return tasks.get(self.task, **kwargs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoints:
  """ttcjax checkpoint directories (`ttcjax.checkpoint.save`).

  Attributes:
    policy: base LM (best-of-N and tree searches).
    prm: PRM, a model with a reward head.
    revision: revision model ('revisions').
    orm: ORM of the revision model's attempts, with a reward head.
    tokenizer_dir: directory with a Hugging Face tokenizer.json; None: the
      byte tokenizer (`ttcjax.tokenizer.ByteTokenizer`).
    eos_token: end token of `tokenizer_dir`.
    step_delimiter: text that ends a reasoning step: every token whose text
      ends with it stops a step (one byte for the byte tokenizer).
    prm_format: the PRM's input layout and score
      (`ttcjax.verifiers.hf_prms.PRM_FORMATS`): 'reward_head' (ttcjax's
      own), 'qwen_math_prm', 'skywork_prm', 'rlhflow_prm' or
      'math_shepherd'.
    prm_tokenizer_dir: the PRM's tokenizer (None: `tokenizer_dir`).
    template_vars: variables for the chat templates, e.g.
      `{'date_string': '26 Jul 2024'}` pins Llama 3.x's date line.
  """
  policy: str | None = None
  prm: str | None = None
  revision: str | None = None
  orm: str | None = None
  tokenizer_dir: str | None = None
  eos_token: str = "<|endoftext|>"
  step_delimiter: str = "\n"
  prm_format: str = "reward_head"
  prm_tokenizer_dir: str | None = None
  template_vars: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "template_vars", dict(self.template_vars))
    for name in ("policy", "prm", "revision", "orm", "tokenizer_dir",
                 "prm_tokenizer_dir"):
      _check_path(getattr(self, name), f"Checkpoints.{name}", False)
    hf_prms.check_format(self.prm_format, "Checkpoints.prm_format")
    if self.prm_format != "reward_head" and self.tokenizer_dir is None:
      raise ValueError(f"Checkpoints.prm_format={self.prm_format!r} needs "
                       "Checkpoints.tokenizer_dir (a Hugging Face tokenizer)")
    if not self.step_delimiter or (self.tokenizer_dir is None and len(
        self.step_delimiter.encode("utf-8")) != 1):
      raise ValueError(f"Checkpoints.step_delimiter={self.step_delimiter!r}"
                       f" must be non-empty, and one byte for the byte "
                       f"tokenizer (tokenizer_dir=None)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchRun:
  """Everything one search/eval run needs.

  Attributes:
    problems: the problem source.
    checkpoints: model checkpoints.
    strategies: the sweeps to run, in order.
    max_new_tokens: tokens per solution (attempt), EOS included.
    temperature: proposal sampling temperature.
    problems_per_batch: problems per search batch; records are written
      (flush + fsync) after each.
    seed: base key of every search (`search.search_key`).
    prompt_len: fixed prompt width (None: the longest problem prompt,
      rounded up to 16).
    revision_prompt_len: fixed revision prompt width; oldest attempts are
      dropped to fit (None: the 0-attempt prompt plus 4 attempts of
      `max_new_tokens`).
    tree_cache_tokens: cache slots past the prompt for tree searches, which
      use one slot per decode iteration of all rows (None: 4 x
      `max_new_tokens`); rows that fill it end unfinished.
    mesh: the device mesh over this process's devices (each process runs
      its own batches): parameters sharded by the logical-axis rules,
      rows and caches over `data` x `fsdp` (with `model` > 1, over every
      axis: `memory.search_rules`). Rows per batch should divide over the
      batch axes, or they stay replicated. None: one device.
    verifier_rows: rows the PRM/ORM reads per forward pass
      (`verifiers.chunked_score_fn`), bounding its activation memory; None:
      every row of a scoring call at once.
    max_rows: most policy rows in one search batch (problems x N for
      best-of-N and the tree searches, problems x N / L chains for
      revisions): at large N, fewer problems go in a batch (at least one),
      so the KV cache stays within what `ttcjax.memory` budgets. Records do
      not depend on it. None: `problems_per_batch` at every budget.
    verifier_len: longest PRM input in tokens (None: the prompt width plus
      `max_new_tokens`, plus what `Checkpoints.prm_format`'s layout adds
      for 40 steps).
    verifier: 'prm' (the `Checkpoints.prm` model) or 'oracle' (the task's
      exact step checker, `ttcjax.verifiers.oracle`: a control, for tasks
      with one; PRM strategies only). Oracle records carry
      `"verifier": "oracle"`, its tokens in `verifier_tokens` and
      `flops_verifier` 0.
    incremental_verifier: tree searches (beam, lookahead, DVTS, REBASE)
      read the PRM through a key/value cache per row of
      `verifier_cache_len` slots (`ttcjax.search.incremental`): each
      problem's prompt layout once, then only each round's new tokens,
      instead of re-reading every prefix each round. Candidates, answers
      and records' keys are the same, scores equal to 1e-5; records count
      the tokens it read (`verifier_tokens`, and `flops_verifier` from
      them), and the memory check counts its cache
      (`preflight.check_memory`). A batch whose cache fills re-scores in
      full from then on. Best-of-N and revisions are unaffected. Needs
      `verifier='prm'`.
  """
  problems: ProblemSource
  checkpoints: Checkpoints
  strategies: Sequence[StrategySpec]
  max_new_tokens: int = 128
  temperature: float = 1.0
  problems_per_batch: int | None = 8
  seed: int = 0
  prompt_len: int | None = None
  revision_prompt_len: int | None = None
  tree_cache_tokens: int | None = None
  mesh: partitioning.MeshConfig | None = None
  verifier_rows: int | None = None
  max_rows: int | None = None
  verifier_len: int | None = None
  verifier: str = "prm"
  incremental_verifier: bool = False

  def __post_init__(self):
    object.__setattr__(self, "strategies", tuple(self.strategies))
    if not all(isinstance(s, StrategySpec) for s in self.strategies):
      raise ValueError(f"SearchRun.strategies must be StrategySpecs, got "
                       f"{self.strategies!r}")
    if self.max_new_tokens < 1:
      raise ValueError(f"SearchRun.max_new_tokens must be >= 1, got "
                       f"{self.max_new_tokens}")
    if self.mesh is not None and not isinstance(self.mesh,
                                                partitioning.MeshConfig):
      raise ValueError(f"SearchRun.mesh must be a MeshConfig or None, got "
                       f"{self.mesh!r} (bind search.SearchRun.mesh = "
                       f"@ttcjax.MeshConfig())")
    for name in ("verifier_rows", "max_rows", "verifier_len"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"SearchRun.{name} must be a positive int or None, "
                         f"got {value!r}")
    roles = {s.role for s in self.strategies}
    if self.verifier not in VERIFIERS:
      raise ValueError(f"SearchRun.verifier must be one of {VERIFIERS}, got "
                       f"{self.verifier!r}")
    oracle_run = self.verifier == "oracle"
    if oracle_run and ("revision" in roles or
                       not self.problems.make_task().has_step_checker):
      raise ValueError(f"SearchRun.verifier='oracle' needs a task with an "
                       f"exact step checker (task {self.problems.task!r}) "
                       f"and no 'revisions' strategy (strategies "
                       f"{sorted(s.strategy for s in self.strategies)})")
    if not isinstance(self.incremental_verifier, bool):
      raise ValueError(f"SearchRun.incremental_verifier must be a bool, got "
                       f"{self.incremental_verifier!r}")
    if self.incremental_verifier and oracle_run:
      raise ValueError("SearchRun.incremental_verifier=True needs "
                       "verifier='prm': the oracle is no model and keeps "
                       "no cache")
    if "prm" in roles:
      _check_path(self.checkpoints.policy, "Checkpoints.policy", True)
      _check_path(self.checkpoints.prm, "Checkpoints.prm", not oracle_run)
    if "revision" in roles:
      _check_path(self.checkpoints.revision, "Checkpoints.revision", True)
      _check_path(self.checkpoints.orm, "Checkpoints.orm", True)


# --- Problems, tokenizer, task ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Problem:
  uid: str
  question: str  # the bare question / problem text
  prompt: str  # the policy prompt
  reference: str
  extra: dict
  problem: Any  # the task's own problem (`Task.grade_answer` reads it)


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """What the stage needs of a tokenizer.

  Attributes:
    encode_text: an `examples.TextTokenizer` (prompt layouts).
    decode: ids -> text.
    eos_id: end of a solution.
    pad_id: prompt padding.
    stop_ids: ids that end a step (their text ends with a newline).
    files: the Hugging Face tokenizer files (chat template), or None.
  """
  encode_text: Any
  decode: Callable[[Sequence[int]], str]
  eos_id: int
  pad_id: int
  stop_ids: tuple[int, ...]
  files: Any = None


def load_problems(source: ProblemSource,
                  tok: Tokenizer | None = None) -> list[_Problem]:
  """The problems of `source`, with their reference answers and the
  task's difficulty features; `tok` renders `source.chat_template`
  prompts."""
  prompt = source.prompt
  if source.chat_template:
    if tok is None or tok.files is None:
      raise ValueError("ProblemSource.chat_template=True needs "
                       "Checkpoints.tokenizer_dir (a Hugging Face tokenizer)")
    system = ([{"role": "system", "content": source.system_prompt}]
              if source.system_prompt is not None else [])
    prompt = lambda text: tok.files.render_chat(
        system + [{"role": "user", "content": text}], True)
  task = source.make_task()
  out = []
  for p in task.problems(source.num_problems, source.seed):
    text = task.question(p)
    out.append(_Problem(p.uid, text, prompt(text), p.answer,
                        {"reference": p.answer,
                         **task.difficulty_features(p)}, p))
  return out


def oracle_verifier(source: ProblemSource, problems: Sequence[_Problem],
                    tok: Tokenizer, max_len: int) -> base.VerifierFns:
  """The task's exact step checker as the verifier of `problems`
  (`ttcjax.verifiers.oracle`), keyed by their prompt ids."""
  task = source.make_task()
  by_prompt = {tuple(examples.prompt_ids(tok.encode_text, p.prompt)):
               p.problem for p in problems}
  return oracle.verifier_fns(task.oracle_values, by_prompt,
                             decode=tok.decode, stop_ids=tok.stop_ids,
                             max_len=max_len, pad_id=tok.pad_id)


def make_tokenizer(ckpts: Checkpoints) -> Tokenizer:
  """The byte tokenizer, or `ckpts.tokenizer_dir`'s Hugging Face one."""
  if ckpts.tokenizer_dir is None:
    tok = ByteTokenizer()
    return Tokenizer(tok, tok.decode, tok.eos_id, tok.pad_id,
                     tok.token_ids_ending_with(ckpts.step_delimiter))
  # pylint: disable-next=g-import-not-at-top
  from ttcjax.models import hf_import, hf_tokenizer
  files = hf_tokenizer.load(ckpts.tokenizer_dir, ckpts.template_vars)
  raw = files.tokenizer
  eos = raw.token_to_id(ckpts.eos_token)
  if eos is None:
    raise ValueError(f"Checkpoints.eos_token={ckpts.eos_token!r} is not in "
                     f"{ckpts.tokenizer_dir}/tokenizer.json")
  tok = examples.HFTokenizer(raw, eos_id=eos)
  stops = tuple(int(i) for i in hf_import.step_delimiter_ids(
      raw, ckpts.step_delimiter))
  return Tokenizer(tok, tok.decode, eos, tok.pad_id, stops, files)


def task_fns(source: ProblemSource, tok: Tokenizer) -> base.TaskFns:
  """The task's answer extraction over decoded ids, and answer equivalence."""
  task = source.make_task()
  return base.TaskFns(
      answer_fn=lambda ids: task.extract_answer(tok.decode(ids)),
      equiv_fn=task.is_equiv)


# --- Models as callbacks -----------------------------------------------------


def _round_up(n: int, multiple: int = 16) -> int:
  return multiple * math.ceil(n / multiple)


def placement_rules(model: int) -> partitioning.Rules:
  """The rules a mesh with `model` tensor-parallel shards runs under: the
  defaults, or `memory.search_rules()` when `model` > 1 (few kv heads:
  rows over every axis)."""
  return (memory.search_rules() if model > 1
          else partitioning.logical_axis_rules())


def prompt_width(run_config: SearchRun,
                 prompts: Sequence[Sequence[int]]) -> int:
  """The policy's padded prompt width: `SearchRun.prompt_len`, or the
  longest of `prompts` rounded up to 16."""
  return run_config.prompt_len or _round_up(max(map(len, prompts)))


def tree_cache_len(run_config: SearchRun, width: int) -> int:
  """Cache slots of a tree search's policy: the prompt width plus
  `SearchRun.tree_cache_tokens` (None: 4 x `max_new_tokens`)."""
  return width + (run_config.tree_cache_tokens or
                  4 * run_config.max_new_tokens)


def verifier_cache_len(run_config: SearchRun, width: int) -> int:
  """Cache slots per row of the incremental verifier
  (`SearchRun.incremental_verifier`): the policy's tree cache
  (`tree_cache_len`) plus what `Checkpoints.prm_format`'s layout adds for
  40 steps (as `prm_verifier_len`). Each call takes as many slots for all
  rows as its widest row, rounded up to a power of two, so a batch may
  fill it before the policy's cache; it then re-scores in full."""
  fmt = run_config.checkpoints.prm_format
  extra = hf_prms.FIXED_TOKENS[fmt] + 40 * hf_prms.TOKENS_PER_STEP[fmt]
  return tree_cache_len(run_config, width) + extra


def prm_verifier_len(run_config: SearchRun, width: int) -> int:
  """Tokens per PRM input: `SearchRun.verifier_len`, or the prompt width
  plus `max_new_tokens` plus what `Checkpoints.prm_format`'s layout adds
  for 40 steps."""
  fmt = run_config.checkpoints.prm_format
  extra = hf_prms.FIXED_TOKENS[fmt] + 40 * hf_prms.TOKENS_PER_STEP[fmt]
  return run_config.verifier_len or width + run_config.max_new_tokens + extra


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a run's arrays live: a mesh and its rules, or one device.

  Attributes:
    mesh: the mesh; None: the first local device, no row placement.
    rules: logical-axis rules on `mesh`.
  """
  mesh: jax.sharding.Mesh | None = None
  rules: partitioning.Rules | None = None

  @classmethod
  def of(cls, config: partitioning.MeshConfig | None) -> Placement:
    """`config`'s mesh over this process's devices, with the rules
    `ttcjax.memory` budgets: the defaults, or `memory.search_rules()` when
    `model` > 1 (few kv heads: rows over every axis)."""
    if config is None:
      return cls()
    mesh = partitioning.make_mesh(config, jax.local_devices())
    return cls(mesh, placement_rules(mesh.shape["model"]))

  def param_shardings(self, config: models.ModelConfig) -> Any:
    """Shardings to restore `config`'s parameters into (None: one device)."""
    if self.mesh is None:
      return None
    return partitioning.param_shardings(config, self.mesh, self.rules)

  @property
  def shard(self) -> Callable[[Any], Any] | None:
    """`PolicyFns.shard` / `VerifierFns.shard`: rows over the batch axes."""
    if self.mesh is None:
      return None
    return functools.partial(partitioning.shard_rows, mesh=self.mesh,
                             rules=self.rules)

  def active(self) -> contextlib.AbstractContextManager:
    """The mesh and rules made current (activation constraints apply).

    Only around the searches: while a mesh is current, `param_shardings`
    (flax's `nn.unbox` on shape structs) fails.
    """
    if self.mesh is None:
      return contextlib.nullcontext()
    return partitioning.activate(self.mesh, self.rules)


def _restore(path: str, what: str, reward_head: bool,
             placement: Placement = Placement()):
  """A checkpoint's config and params, read into `placement`'s shardings."""
  config = checkpoint.load_config(path)
  if reward_head and not config.reward_head:
    raise ValueError(f"{path}: the {what} checkpoint has no reward head "
                     f"(ModelConfig.reward_head=False)")
  return checkpoint.restore(path, placement.param_shardings(config))


def policy_fns(config: models.ModelConfig, params: Any, tok: Tokenizer, *,
               max_gen: int, prompt_len: int, cache_len: int,
               temperature: float,
               shard: Callable[[Any], Any] | None = None) -> base.PolicyFns:
  """A model checkpoint as `PolicyFns` with `tok`'s ids (newline-ending ids
  end a step); `shard` places decode rows and caches (`Placement.shard`)."""
  return callbacks.policy_fns(
      config, params, eos_id=tok.eos_id, stop_ids=tok.stop_ids,
      pad_id=tok.pad_id, detokenize=tok.decode, max_gen=max_gen,
      prompt_len=prompt_len, cache_len=cache_len, temperature=temperature,
      shard=shard)


def verifier_fns(config: models.ModelConfig, params: Any, tok: Tokenizer,
                 max_len: int, *, rows: int | None = None,
                 shard: Callable[[Any], Any] | None = None,
                 build_input: base.BuildInput | None = None,
                 tags: tuple[int, int] | None = None,
                 cache_len: int | None = None) -> base.VerifierFns:
  """A reward-head checkpoint as `VerifierFns` (prompt + solution input,
  or `build_input`'s layout; with `tags`, scored from the LM head),
  scoring `rows` rows per forward pass (None: all); `shard` places them.
  With `cache_len`, tree searches read it incrementally through a cache of
  at most that many slots per row (`callbacks.incremental_verifier`)."""
  return base.VerifierFns(score_fn=callbacks.reward_score_fn(config, rows, tags),
                          params=params, max_len=max_len, pad_id=tok.pad_id,
                          build_input=build_input or base.concat_input,
                          shard=shard,
                          incremental=(None if cache_len is None else
                                       callbacks.incremental_verifier(
                                           config, cache_len, tags, rows)))


def prm_layout(ckpts: Checkpoints, tok: Tokenizer,
               problems: Sequence[_Problem],
               prompts: Sequence[Sequence[int]]):
  """`(build_input, tags)` of `ckpts.prm_format` (the tokens its layout
  adds: `prm_verifier_len`)."""
  if ckpts.prm_format == "reward_head":
    return None, None
  from ttcjax.models import hf_tokenizer  # pylint: disable=g-import-not-at-top
  files = (tok.files if ckpts.prm_tokenizer_dir is None else
           hf_tokenizer.load(ckpts.prm_tokenizer_dir, ckpts.template_vars))
  questions = {tuple(ids): p.question for ids, p in zip(prompts, problems)}
  build = hf_prms.input_builder(ckpts.prm_format, files, tok.decode,
                                questions, ckpts.step_delimiter)
  return build, hf_prms.step_tags(ckpts.prm_format, files)


def revision_prompt_fn(questions: Mapping[str, str], tok: Tokenizer,
                       max_prompt_len: int) -> RevisionPromptFn:
  """`examples.revision_prompt_ids` over decoded attempts: the layout the
  revision model was trained on (0 attempts: question + header)."""

  def prompt_fn(problem: base.SearchProblem, attempts):
    return examples.revision_prompt_ids(
        tok.encode_text, questions[problem.uid],
        [tok.decode(a) for a in attempts], max_prompt_len=max_prompt_len)

  return prompt_fn


def _setup(run_config: SearchRun, problems: Sequence[_Problem],
           tok: Tokenizer, placement: Placement = Placement()
           ) -> dict[str, sweep.Bundle]:
  """`{'prm': ..., 'revision': ...}` bundles for the strategies run, with
  params restored into `placement`."""
  roles = {s.role for s in run_config.strategies}
  trees = any(issubclass(strategy.get(s.strategy), TreeConfig)
              for s in run_config.strategies if s.role == "prm")
  ckpts, gen = run_config.checkpoints, run_config.max_new_tokens
  shard, rows = placement.shard, run_config.verifier_rows
  prompts = [examples.prompt_ids(tok.encode_text, p.prompt)
             for p in problems] or [[0]]
  out = {}
  if "prm" in roles:
    width = prompt_width(run_config, prompts)
    cfg, params = _restore(ckpts.policy, "policy", False, placement)
    if run_config.verifier == "oracle":
      prm_cfg, verifier = None, oracle_verifier(
          run_config.problems, problems, tok, width + gen)
    else:
      build, tags = prm_layout(ckpts, tok, problems, prompts)
      prm_cfg, prm_params = _restore(ckpts.prm, "PRM", tags is None,
                                     placement)
      incremental = trees and run_config.incremental_verifier
      verifier = verifier_fns(
          prm_cfg, prm_params, tok, prm_verifier_len(run_config, width),
          rows=rows, shard=shard, build_input=build, tags=tags,
          cache_len=(verifier_cache_len(run_config, width) if incremental
                     else None))
    cache = tree_cache_len(run_config, width) if trees else width + gen
    out["prm"] = sweep.Bundle(
        policy_fns(cfg, params, tok, max_gen=gen, prompt_len=width,
                   cache_len=cache, temperature=run_config.temperature,
                   shard=shard), verifier, cfg, prm_cfg,
        verifier_free=run_config.verifier == "oracle",
        flops_fn=flops.search_flops)
  if "revision" in roles:
    zero = max(len(examples.revision_prompt_ids(tok.encode_text, p.question,
                                                []))
               for p in problems) if problems else 1
    width = run_config.revision_prompt_len or _round_up(
        zero + 4 * (gen + _ATTEMPT_OVERHEAD))
    cfg, params = _restore(ckpts.revision, "revision", False, placement)
    orm_cfg, orm_params = _restore(ckpts.orm, "ORM", True, placement)
    plain = policy_fns(cfg, params, tok, max_gen=gen, prompt_len=width,
                       cache_len=width + gen,
                       temperature=run_config.temperature, shard=shard)
    policy = with_prompt_fn(plain, revision_prompt_fn(
        {p.uid: p.question for p in problems}, tok, width))
    out["revision"] = sweep.Bundle(
        policy, verifier_fns(orm_cfg, orm_params, tok, width + gen,
                             rows=rows, shard=shard), cfg, orm_cfg,
        flops_fn=flops.search_flops)
  return out


# --- The run -----------------------------------------------------------------


def _grade_answer(task: tasks.Task, problem: Any, answer: str | None) -> bool:
  return bool(answer is not None and task.grade_answer(answer, problem))


def run(run_config: SearchRun, workdir: str,
        progress: Callable[[int, int], None] | None = None
        ) -> dict[str, int]:
  """Runs every sweep of `run_config`, appending to `<workdir>/records.jsonl`
  (`ttcjax.search.sweep.run_sweep`, which says how several processes share
  the work). Every process must call `run` with the same config.

  Args:
    run_config: what to run.
    workdir: output directory (created).
    progress: called after each round of batches with (generations done,
      generations to do) of this call's unfinished records.

  Returns:
    `{"written": records appended, "skipped": records already there}` (the
    whole run's, on every process).
  """
  tok = make_tokenizer(run_config.checkpoints)
  problems = load_problems(run_config.problems, tok)
  task = task_fns(run_config.problems, tok)
  grader = run_config.problems.make_task()
  marker = {"verifier": "oracle"} if run_config.verifier == "oracle" else {}
  sweep_problems = [sweep.Problem(
      base.SearchProblem(p.uid, examples.prompt_ids(tok.encode_text,
                                                    p.prompt)),
      p.reference, dict(p.extra, task=run_config.problems.task, **marker),
      grade=functools.partial(_grade_answer, grader, p.problem))
                    for p in problems]
  placement = Placement.of(run_config.mesh)
  if placement.mesh is not None:
    logging.info("mesh %s over %d devices", dict(placement.mesh.shape),
                 placement.mesh.size)
  return sweep.run_sweep(
      run_config.strategies, sweep_problems, task,
      lambda: _setup(run_config, problems, tok, placement),
      jax.random.key(run_config.seed),
      os.path.join(workdir, records.RECORDS_FILE),
      problems_per_batch=run_config.problems_per_batch,
      max_rows=run_config.max_rows, active=placement.active,
      progress=progress)
