"""The embedded study's training stages, from a byte-level policy to the
PRM, the revision model and its ORM (Snell et al. 2024, Secs. 5-6).

The study runs on any generated task of `ttcjax.tasks` (`ArithStudyConfig
.task`: 'arithmetic' by default, 'countdown'): problems, prompts, answer
extraction and grading all go through the `Task` interface, so nothing here
knows which task it trains on. A task's answer is whatever its
`extract_answer` returns (a number for arithmetic, a canonical derivation
for Countdown) and is graded with `Task.grade_answer`.

  pretrain_policy  LM on reference solutions of `pretrain_problems`
  sample_train     N samples per problem of `label_problems` (paper: 16)
  mc_labels        Monte-Carlo step labels, K roll-outs a step (paper: 16)
  train_prm        policy + fresh reward head, soft-label BCE on the labels
  revision_data    `revision_samples` per problem (paper: 64) of
                   `revision_problems`
  train_revision   revision trajectories from those samples
                   (`ttcjax.verifiers.revision_data`), then an LM from the
                   policy on them
  train_orm        balanced revision-ORM data from the same samples, then
                   policy + fresh reward head on it (each training stage
                   builds its own data, so changing one's data leaves the
                   other finished)

Evaluation stages live in `ttcjax.experiments.evaluate`;
`ttcjax.experiments.study_stages` joins both lists.

Problems are drawn by seed: training seeds are >= 1000 (as `ttcjax.data`'s
own splits), the test seed < 1000, and every split has its own seed, so no
split shares a problem stream with another. Keys of sampling stages are
`fold_in(key(seed), stable_hash(stage name))`, then folded per problem uid
by `ttcjax.verifiers.labeling`, so results do not depend on chunk sizes.

Training rows are packed: consecutive examples share rows of
`RoleTraining.row_len` tokens, so a CPU step spends little on padding, each
as its own segment (`ttcjax.data.packing`): attention and loss never cross
an example and positions restart at 0, so a PRM learns what it reads at
search time. Every training stage hashes `packing.VERSION`. Each training
stage resumes from the trainer's checkpoints in its work directory.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from ttcjax import checkpoint, decoding, models, tasks, training
from ttcjax.data import examples, packing
from ttcjax.keys import stable_hash
from ttcjax.experiments import callbacks, metrics, stages
from ttcjax.search.base import PolicyFns, TaskFns
from ttcjax.analysis import flops
from ttcjax.tasks import arithmetic, countdown
from ttcjax.tokenizer import ByteTokenizer
from ttcjax.verifiers import labeling, revision_data

TOKENIZER = ByteTokenizer()
NEWLINE_IDS = TOKENIZER.token_ids_ending_with("\n")
MIN_TRAIN_SEED = 1000
# ArithStudyConfig.prm_init -> the stage whose model the PRM starts from.
PRM_INITS = {"policy": "pretrain_policy", "large": "pretrain_large"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoleTraining:
  """How one model role is trained.

  Attributes:
    train: optimisation ('lm' for policy/revision, 'reward' for PRM/ORM).
    batch_size: packed rows per step.
    row_len: tokens per packed row; every example must fit in one.
  """
  train: training.TrainConfig
  batch_size: int = 16
  row_len: int = 256

  def __post_init__(self):
    if self.batch_size < 1 or self.row_len < 2:
      raise ValueError(f"RoleTraining: batch_size={self.batch_size} and "
                       f"row_len={self.row_len} must be >= 1 and >= 2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArithStudyConfig:
  """Everything the embedded study's stages depend on.

  Attributes:
    seed: base seed of every sampling key.
    task: the registered task (`ttcjax.tasks.registered()`) the study runs
      on: a generated one with a bounded prompt ('arithmetic', 'countdown').
    task_config: its problem distribution (difficulty knobs), passed as
      `tasks.get(task, config=task_config)`: an `ArithmeticConfig` or a
      `CountdownConfig`.
    policy: the policy's shape; the PRM, revision model and ORM share it.
    temperature: sampling temperature of every sample and roll-out.
    max_new_tokens: cap on a solution's tokens, EOS included.
    decode_rows: rows (problems x samples) per decode call.
    chunk_problems: problems per resumable chunk of a sampling loop.
    include_reference: add each problem's reference solution to its samples
      for MC labels and revision/ORM data. Off in the paper's recipe; on
      where a barely trained policy must still yield data (tests).
    pretrain_problems, pretrain_seed: the policy's training problems.
    pretrain: the policy's training.
    pretrain_drills: the first this many pretraining problems also yield a
      drill (`Task.drill`: for Countdown, random legal play from the
      problem's numbers, no target), mixed in after each one's reference;
      0: references only. For the policy and the ~14x model alike.
    label_problems, label_seed: problems whose samples the PRM learns from.
    samples_per_problem: samples per labelled problem (paper: 16).
    rollouts: Monte-Carlo roll-outs per step (paper: 16).
    prm: the PRM's training.
    prm_init: what the PRM starts from: 'policy' (the policy's weights and
      shape, as in the paper) or 'large' (the `pretrain_large` stage's LM,
      ~14x the policy's parameters, trained on the same data: a larger
      verifier). Its training FLOPs (train_summary.json) and the search's
      verification FLOPs (records, from the checkpoint's shape) are the
      large shape's. 'large' runs in the full study only
      (`ttcjax.experiments.embedded_study.full_study_stages`), which then
      trains pretrain_large before the PRM.
    revision_problems, revision_seed: problems for revision/ORM data.
    revision_samples: samples per revision problem (paper: 64).
    revision_max_len: longest revision/ORM example (oldest attempts drop).
    revision_context: most previous attempts in a revision prompt, in the
      revision/ORM data and in the evaluated chains (paper: 4).
    revision_targets_per_problem: at most this many correct samples of a
      problem (drawn at random) become revision targets; None: all (the
      paper). Easy problems have most correct samples, so without a cap the
      revision data is mostly one-step solutions and the model learns to
      stop early on long problems.
    revision_reference_targets: copies of each revision problem's reference
      solution added to its correct samples for revision trajectories (each
      copy draws its own wrong attempts). 0 in the paper; with a tiny policy
      most problems have no correct sample, and the references teach the
      revision format on every problem.
    revision_keep_correct: probability that a revision trajectory also
      yields an example whose last attempt is its (correct) target, so the
      model learns to keep right answers (0: the paper's data).
    revision: the revision model's training.
    orm: the revision ORM's training.
    test_problems, test_seed: held-out problems (seed < 1000).
    eval_samples: samples per test problem for pass@1.
    revision_eval_problems: the first test problems used for revisions.
    revision_chains: parallel revision chains per problem.
    revision_attempts: attempts per chain (sequential revisions).
  """
  seed: int = 0
  task: str = "arithmetic"
  task_config: Any = arithmetic.ArithmeticConfig()
  policy: models.ModelConfig
  temperature: float = 1.0
  max_new_tokens: int = 96
  decode_rows: int = 256
  chunk_problems: int = 32
  include_reference: bool = False
  pretrain_problems: int
  pretrain_seed: int = 1000
  pretrain: RoleTraining
  pretrain_drills: int = 0
  label_problems: int
  label_seed: int = 1001
  samples_per_problem: int = 16
  rollouts: int = 16
  prm: RoleTraining
  prm_init: str = "policy"
  revision_problems: int
  revision_seed: int = 1002
  revision_samples: int = 64
  revision_max_len: int = 512
  revision_context: int = 4
  revision_targets_per_problem: int | None = None
  revision_reference_targets: int = 0
  revision_keep_correct: float = 0.0
  revision: RoleTraining
  orm: RoleTraining
  test_problems: int
  test_seed: int = 0
  eval_samples: int = 16
  revision_eval_problems: int
  revision_chains: int = 4
  revision_attempts: int = 4

  def __post_init__(self):
    task = self.make_task()  # a wrong name or config fails here
    if task.max_prompt_chars() is None:
      raise ValueError(f"ArithStudyConfig.task={self.task!r}: the embedded "
                       f"study needs a generated task with bounded prompts")
    if len(task.step_delimiter.encode()) != 1:
      raise ValueError(f"ArithStudyConfig.task={self.task!r}: its step "
                       f"delimiter {task.step_delimiter!r} must be one byte")
    train_seeds = (self.pretrain_seed, self.label_seed, self.revision_seed)
    if min(train_seeds) < MIN_TRAIN_SEED or len(set(train_seeds)) < 3:
      raise ValueError(f"ArithStudyConfig: training seeds {train_seeds} must "
                       f"be distinct and >= {MIN_TRAIN_SEED}")
    if not 0 <= self.test_seed < MIN_TRAIN_SEED:
      raise ValueError(f"ArithStudyConfig.test_seed={self.test_seed} must be "
                       f"in [0, {MIN_TRAIN_SEED}) (disjoint from training)")
    for name in ("pretrain_problems", "label_problems", "revision_problems",
                 "test_problems", "revision_eval_problems",
                 "samples_per_problem", "rollouts", "revision_samples",
                 "eval_samples", "revision_chains", "revision_attempts",
                 "max_new_tokens", "decode_rows", "chunk_problems"):
      if getattr(self, name) < 1:
        raise ValueError(f"ArithStudyConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}")
    if not 0 <= self.pretrain_drills <= self.pretrain_problems:
      raise ValueError(f"ArithStudyConfig.pretrain_drills must be in [0, "
                       f"pretrain_problems={self.pretrain_problems}], got "
                       f"{self.pretrain_drills}")
    if self.pretrain_drills and not task.has_drills:
      raise ValueError(f"ArithStudyConfig.pretrain_drills="
                       f"{self.pretrain_drills}: task {self.task!r} has no "
                       f"drills (Task.drill); set it to 0")
    if self.prm_init not in PRM_INITS:
      raise ValueError(f"ArithStudyConfig.prm_init must be one of "
                       f"{tuple(PRM_INITS)}, got {self.prm_init!r}")
    if self.revision_context < 0:
      raise ValueError("ArithStudyConfig.revision_context must be >= 0")
    if self.revision_eval_problems > self.test_problems:
      raise ValueError("ArithStudyConfig.revision_eval_problems must be <= "
                       "test_problems")
    if self.policy.reward_head or self.policy.vocab_size < (
        TOKENIZER.vocab_size):
      raise ValueError("ArithStudyConfig.policy: a byte-level LM needs "
                       f"reward_head=False and vocab_size >= "
                       f"{TOKENIZER.vocab_size}")
    for name, objective in (("pretrain", "lm"), ("prm", "reward"),
                            ("revision", "lm"), ("orm", "reward")):
      if getattr(self, name).train.objective != objective:
        raise ValueError(f"ArithStudyConfig.{name}.train.objective must be "
                         f"{objective!r}")
    if self.revision_max_len > self.revision.row_len or (
        self.revision_max_len > self.orm.row_len):
      raise ValueError("ArithStudyConfig.revision_max_len must fit the "
                       "revision and ORM row_len")

  def replace(self, **changes) -> "ArithStudyConfig":
    return dataclasses.replace(self, **changes)

  def make_task(self) -> tasks.Task:
    """The task, built from `task` and `task_config` (one per config)."""
    return _make_task(self.task, self.task_config)

  def problems(self, count: int, seed: int) -> list[Any]:
    """`count` problems of the task drawn with `seed`."""
    return self.make_task().problems(count, seed)

  @property
  def prompt_len(self) -> int:
    """Fixed width of policy prompts: BOS and the task's longest prompt
    (question and newline), rounded up to 8."""
    return 8 * math.ceil((1 + self.make_task().max_prompt_chars()) / 8)


@functools.lru_cache(maxsize=None)
def _make_task(name: str, config: Any) -> tasks.Task:
  try:
    return tasks.get(name, config=config)
  except TypeError as e:
    raise ValueError(f"ArithStudyConfig.task_config={config!r} does not "
                     f"configure task {name!r}: {e}") from None


def task_fields(config: ArithStudyConfig) -> dict[str, Any]:
  """What a stage's hash records of the task. The arithmetic task keeps
  the field it had before tasks were pluggable, so finished arithmetic
  studies keep their stage hashes."""
  if config.task == "arithmetic":
    return {"arithmetic": config.task_config}
  return {"task": config.task, "task_config": config.task_config}


def pretrain_drills_field(config: ArithStudyConfig) -> dict[str, int]:
  """The pretraining stages' hash entry for drills: only when set, so
  studies without them keep their hashes."""
  return {"drills": config.pretrain_drills} if config.pretrain_drills else {}


def _train(objective: str, steps: int, lr: float, seed: int,
           warmup: int | None = None) -> training.TrainConfig:
  return training.TrainConfig(
      objective=objective, learning_rate=lr, total_steps=steps,
      warmup_steps=min(steps, warmup if warmup is not None else steps // 10),
      weight_decay=0.01, log_every=max(1, min(50, steps)),
      eval_every=steps, checkpoint_every=max(1, min(100, steps)),
      keep_checkpoints=1, seed=seed, write_tensorboard=False)


def _model(d: int, layers: int, ff: int, heads: int) -> models.ModelConfig:
  # One key/value head: XLA:CPU decodes multi-head attention (kv_heads =
  # heads) many times slower than grouped attention at these sizes.
  return models.ModelConfig(
      vocab_size=TOKENIZER.vocab_size, d_model=d, n_layers=layers,
      n_heads=heads, n_kv_heads=1, d_ff=ff, max_len=1024)


def arith_cpu() -> ArithStudyConfig:
  """The full micro-scale study, sized for a 2-core CPU (policy training
  about 4-5 minutes; with the ~14x model and the sweep of
  `ttcjax.experiments.embedded_study.SWEEPS['arith_cpu']`, 1-2 hours)."""
  return ArithStudyConfig(
      task_config=arithmetic.ArithmeticConfig(max_ops=3, max_digits=2),
      policy=_model(96, 3, 256, 3),
      max_new_tokens=96,
      pretrain_problems=40_000,
      pretrain=RoleTraining(train=_train("lm", 700, 3e-3, 0, warmup=50),
                            batch_size=16, row_len=256),
      label_problems=128, samples_per_problem=16, rollouts=16,
      prm=RoleTraining(train=_train("reward", 300, 1e-3, 1),
                       batch_size=16, row_len=256),
      revision_problems=512, revision_samples=64,
      revision_targets_per_problem=8, revision_reference_targets=8,
      revision_context=1, revision_max_len=256,
      revision=RoleTraining(train=_train("lm", 500, 1e-3, 2),
                            batch_size=16, row_len=256),
      orm=RoleTraining(train=_train("reward", 300, 5e-4, 3),
                       batch_size=16, row_len=256),
      test_problems=256, eval_samples=16, revision_eval_problems=128,
      revision_chains=4, revision_attempts=4)


def smoke() -> ArithStudyConfig:
  """Every stage at small counts: the whole pipeline in a few minutes on a
  2-core CPU. Checks the wiring, not the study's numbers."""
  return ArithStudyConfig(
      task_config=arithmetic.ArithmeticConfig(max_ops=2, max_digits=2),
      policy=_model(64, 2, 128, 2),
      max_new_tokens=64, decode_rows=128, chunk_problems=16,
      pretrain_problems=6_000,
      pretrain=RoleTraining(train=_train("lm", 500, 3e-3, 0, warmup=30),
                            batch_size=16, row_len=256),
      label_problems=16, samples_per_problem=4, rollouts=4,
      prm=RoleTraining(train=_train("reward", 40, 1e-3, 1),
                       batch_size=8, row_len=256),
      revision_problems=16, revision_samples=8, revision_max_len=320,
      revision_targets_per_problem=4,
      revision=RoleTraining(train=_train("lm", 40, 1e-3, 2),
                            batch_size=4, row_len=320),
      orm=RoleTraining(train=_train("reward", 40, 1e-3, 3),
                       batch_size=4, row_len=320),
      test_problems=32, eval_samples=4, revision_eval_problems=8,
      revision_chains=2, revision_attempts=4)


def micro() -> ArithStudyConfig:
  """Smallest counts that still run every stage (tests). Training saves a
  resume checkpoint after every step, so that a test can kill it between
  checkpoints (tests/experiments/test_study_resume.py)."""
  role = lambda objective, seed: RoleTraining(
      train=dataclasses.replace(_train(objective, 3, 1e-3, seed),
                                checkpoint_every=1),
      batch_size=2, row_len=160)
  return ArithStudyConfig(
      task_config=arithmetic.ArithmeticConfig(max_ops=1, max_digits=1),
      policy=_model(32, 1, 64, 1),
      max_new_tokens=24, decode_rows=8, chunk_problems=2,
      include_reference=True,
      pretrain_problems=64, pretrain=role("lm", 0),
      label_problems=3, samples_per_problem=2, rollouts=2, prm=role("reward",
                                                                    1),
      revision_problems=3, revision_samples=2, revision_max_len=160,
      revision=role("lm", 2), orm=role("reward", 3),
      test_problems=4, eval_samples=2, revision_eval_problems=2,
      revision_chains=1, revision_attempts=2)


# Countdown (`ttcjax.tasks.countdown`): reach a target from 3-4 numbers, one
# operation a step. A solution is at most ~75 bytes (3 lines of <= 23 and
# '#### T') after a <= 26-byte prompt, so prompts pad to 32 and 80 new tokens
# cover every reference; checking a step is one small operation, finding a
# path is a search (a random policy solves ~4%), and the MC label of a step
# estimates whether the numbers left can still reach the target (a value).
COUNTDOWN_SMOKE = countdown.CountdownConfig(max_number=10, max_target=50,
                                            max_value=200)


def countdown_smoke() -> ArithStudyConfig:
  """The Countdown study at `make study` size: every stage, small counts.

  The policy needs its 1,600 steps: on 64 test problems x 8 samples, 800
  steps gave pass@1 0.8% (29% of steps valid), 800 more (lr 1.5e-3) 7.0%
  (55% valid; 3 numbers 12%, 4 numbers 2%; a random policy solves ~6% and
  ~2%). 800 steps took 210 CPU-seconds."""
  return ArithStudyConfig(
      task="countdown", task_config=COUNTDOWN_SMOKE,
      policy=_model(64, 2, 128, 2),
      max_new_tokens=80, decode_rows=128, chunk_problems=16,
      pretrain_problems=8_000,
      pretrain=RoleTraining(train=_train("lm", 1600, 3e-3, 0, warmup=30),
                            batch_size=16, row_len=256),
      label_problems=48, samples_per_problem=8, rollouts=4,
      prm=RoleTraining(train=_train("reward", 150, 1e-3, 1),
                       batch_size=8, row_len=256),
      revision_problems=16, revision_samples=8, revision_max_len=256,
      revision_targets_per_problem=4, revision_reference_targets=2,
      revision_context=1,
      revision=RoleTraining(train=_train("lm", 60, 1e-3, 2),
                            batch_size=4, row_len=256),
      orm=RoleTraining(train=_train("reward", 60, 1e-3, 3),
                       batch_size=4, row_len=256),
      test_problems=32, eval_samples=8, revision_eval_problems=8,
      revision_chains=2, revision_attempts=4)


def countdown_cpu() -> ArithStudyConfig:
  """The full Countdown study for a 2-core CPU (the successor of
  `arith_cpu`; with the ~14x model and the sweep of
  `ttcjax.experiments.embedded_study.SWEEPS['countdown_cpu']`, <= 2 hours
  on 2 idle cores)."""
  return ArithStudyConfig(
      task="countdown", task_config=countdown.CountdownConfig(),
      policy=_model(96, 3, 256, 3),
      max_new_tokens=80,
      pretrain_problems=40_000,
      pretrain=RoleTraining(train=_train("lm", 1000, 3e-3, 0, warmup=50),
                            batch_size=16, row_len=256),
      # 2,048 labelled problems (32k samples), not 256: with the same
      # policy, labels and held-out samples, the PRM's within-problem AUC
      # went 0.569 -> 0.697 (256 problems x 400 steps -> 2,048 x 2,000;
      # 1,600 steps on 256 problems gave 0.556, so the problems did it).
      label_problems=2048, samples_per_problem=16, rollouts=8,
      prm=RoleTraining(train=_train("reward", 2000, 1e-3, 1),
                       batch_size=16, row_len=256),
      revision_problems=512, revision_samples=32,
      revision_targets_per_problem=8, revision_reference_targets=8,
      revision_context=1, revision_max_len=256,
      revision=RoleTraining(train=_train("lm", 500, 1e-3, 2),
                            batch_size=16, row_len=256),
      orm=RoleTraining(train=_train("reward", 300, 5e-4, 3),
                       batch_size=16, row_len=256),
      test_problems=256, eval_samples=16, revision_eval_problems=128,
      revision_chains=4, revision_attempts=4)


def countdown_micro() -> ArithStudyConfig:
  """`micro` on Countdown (2-3 numbers): wiring tests."""
  return micro().replace(
      task="countdown", task_config=countdown.CountdownConfig(
          min_numbers=2, max_numbers=3, max_number=6, min_target=2,
          max_target=20, max_value=60),
      max_new_tokens=48)


PRESETS = {"arith_cpu": arith_cpu, "smoke": smoke, "micro": micro,
           "countdown_smoke": countdown_smoke, "countdown_cpu": countdown_cpu,
           "countdown_micro": countdown_micro}


# --- Shared pieces (also used by `evaluate`) ---------------------------------


def stage_key(config: ArithStudyConfig, name: str) -> jax.Array:
  """The base key of a sampling stage."""
  return jax.random.fold_in(jax.random.key(config.seed), stable_hash(name))


def answer_fn(task: tasks.Task) -> Callable[[Sequence[int]], str | None]:
  """Generated ids -> the task's extracted answer (None when there is none)."""
  return lambda ids: task.extract_answer(TOKENIZER.decode(ids))


def task_fns(task: tasks.Task) -> TaskFns:
  """The search callbacks of `task` over byte ids: answer extraction and
  answer equivalence (what majority and weighted selection group by)."""
  return TaskFns(answer_fn=answer_fn(task), equiv_fn=task.is_equiv)


def grade_fn(task: tasks.Task, problem: Any) -> Callable[[str | None], bool]:
  """`answer -> correct` for `problem`, as search records grade."""
  return lambda answer: task.grade_answer(answer, problem)


def prompt_ids(task: tasks.Task, problem: Any) -> list[int]:
  return examples.prompt_ids(TOKENIZER, task.prompt(problem))


def step_ids(task: tasks.Task) -> tuple[int, ...]:
  """Byte ids that end a step of `task` (its one-byte delimiter)."""
  return tuple(TOKENIZER.token_ids_ending_with(task.step_delimiter))


def policy_fns(model_config: models.ModelConfig, params: Any, *,
               prompt_len: int, max_new_tokens: int, temperature: float,
               stop_ids: Sequence[int] = NEWLINE_IDS) -> PolicyFns:
  """A byte-level LM as `PolicyFns`; `stop_ids` (newlines) end steps."""
  return callbacks.policy_fns(
      model_config, params, eos_id=TOKENIZER.eos_id, stop_ids=tuple(stop_ids),
      pad_id=TOKENIZER.pad_id, detokenize=TOKENIZER.decode,
      max_gen=max_new_tokens, prompt_len=prompt_len,
      cache_len=prompt_len + max_new_tokens, temperature=temperature)


def load_policy(config: ArithStudyConfig, model_dir) -> PolicyFns:
  """`PolicyFns` of a checkpoint, with the study's prompt and token caps."""
  model_config, params = checkpoint.restore(model_dir)
  return policy_fns(model_config, params, prompt_len=config.prompt_len,
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    stop_ids=step_ids(config.make_task()))


def sample_rows(config: ArithStudyConfig, problems, policy: PolicyFns,
                num_samples: int, key: jax.Array) -> list[dict]:
  """`num_samples` graded samples per problem, one JSON-ready row each
  (with the task's difficulty features of the problem)."""
  task = config.make_task()
  label_problems = [labeling.LabelProblem(p.uid, prompt_ids(task, p),
                                          p.answer) for p in problems]
  per_call = max(1, min(config.decode_rows // num_samples,
                        config.chunk_problems))
  solutions, _ = labeling.sample_solutions(
      label_problems, policy, num_samples, key, problems_per_batch=per_call,
      sampler=policy.sampler)
  rows = []
  for p, lp, samples in zip(problems, label_problems, solutions):
    rows.append({
        "uid": p.uid, "question": task.prompt(p), "answer": p.answer,
        **task.difficulty_features(p),
        "prompt_ids": list(lp.prompt_ids),
        "samples": [list(s) for s in samples],
        "correct": [task.grade(TOKENIZER.decode(s), p) for s in samples]})
  return rows


def _with_reference(config: ArithStudyConfig, row: dict,
                    problem: Any) -> dict:
  if not config.include_reference:
    return row
  reference = TOKENIZER.encode(problem.solution) + [TOKENIZER.eos_id]
  return dict(row, samples=row["samples"] + [reference],
              correct=row["correct"] + [True])


def _sampling_stage(config: ArithStudyConfig, ctx: stages.StageContext,
                    problems, num_samples: int) -> list[dict]:
  policy = load_policy(config, ctx.input("pretrain_policy") / "model")
  key = stage_key(config, ctx.name)
  return ctx.map_chunks(
      "samples", problems, config.chunk_problems,
      lambda chunk: sample_rows(config, chunk, policy, num_samples, key))


def pack_examples(exs: Sequence[examples.Example],
                  row_len: int) -> dict[str, np.ndarray]:
  """Packs examples, in order, into rows of `row_len` tokens, each example
  its own segment (`ttcjax.data.packing.pack`).

  Args:
    exs: unpadded examples (`ttcjax.data.examples`).
    row_len: tokens per row.

  Returns:
    A packed contract batch `[rows, row_len]` (right-padded) with
    `segment_ids` and `positions`.
  """
  return packing.pack(exs, row_len)


def train_role(ctx: stages.StageContext, model_config: models.ModelConfig,
               role: RoleTraining, exs: Sequence[examples.Example],
               init_params: Any = None, what: str = "model") -> dict:
  """Packs `exs`, trains (resuming from `ctx.work`), saves `out/model`."""
  if not exs:
    raise ValueError(f"stage {ctx.name}: no training examples for the "
                     f"{what}; the data stats of this stage or of its inputs "
                     f"say why")
  batch = pack_examples(exs, role.row_len)
  source = training.ArraySource(batch, role.batch_size, seed=role.train.seed)
  began, cpu = time.perf_counter(), time.process_time()
  params, history = training.train(model_config, role.train, source, None,
                                   ctx.work / "train",
                                   init_params=init_params,
                                   on_log=_train_progress(ctx, role, what))
  seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
  checkpoint.save(ctx.out / "model", params, model_config,
                  step=role.train.total_steps)
  step_flops = flops.train_step_flops(model_config, role.batch_size,
                                      role.row_len)
  stages.atomic_write_json(ctx.out / "train_summary.json", {
      "examples": len(exs), "rows": int(batch["tokens"].shape[0]),
      "row_fill": float(batch["token_mask"].mean()),
      "steps": role.train.total_steps,
      "train_flops": step_flops * role.train.total_steps,
      # tokens_per_sec is run-time, not an artefact: it stays in the log.
      "history": [{k: v for k, v in r.items() if k != "tokens_per_sec"}
                  for r in history]})
  # CPU seconds (all threads) next to wall time: on a shared machine the
  # wall time mostly measures the other processes.
  return {"train_seconds": round(seconds, 2),
          "train_cpu_seconds": round(cpu, 2),
          "tokens_per_sec": [round(r["tokens_per_sec"]) for r in history]}


def _train_progress(ctx: stages.StageContext, role: RoleTraining,
                    what: str, lines: int = 10):
  """The trainer's `on_log`: a console line (`ctx.log`) about every
  `1/lines` of the steps, with the loss and the time left; the trainer's
  own lines go to the log file."""
  total = role.train.total_steps
  began, shown = time.perf_counter(), [0]

  def on_log(record: dict, seconds_per_step: float) -> None:
    step = record["step"]
    if step * lines // total <= shown[0] and step < total:
      return
    shown[0] = step * lines // total
    spent = stages.duration(time.perf_counter() - began)
    left = stages.duration((total - step) * seconds_per_step)
    ctx.log(f"  {ctx.name}/train {what}: step {step}/{total} loss "
            f"{record['loss']:.4f} ({spent} so far, ~{left} left)")
  return on_log


def _restore_with_head(ctx: stages.StageContext, seed: int,
                       source: str = "pretrain_policy"):
  """The params of `source`'s model (default the policy) plus a fresh
  reward head (seeded)."""
  model_config, params = checkpoint.restore(ctx.input(source) / "model")
  params = training.add_reward_head(params, model_config,
                                    jax.random.key(seed))
  return model_config.replace(reward_head=True), params


def save_rows(path, rows: list[dict]) -> None:
  stages.atomic_write_json(path, rows)


def load_rows(path) -> list[dict]:
  return stages.read_json(path)


# --- Stage functions ---------------------------------------------------------


def pretraining_examples(config: ArithStudyConfig) -> list[examples.Example]:
  """The policy's (and the ~14x model's) training examples: each
  pretraining problem's reference solution, followed, for the first
  `pretrain_drills` problems, by that problem's drill (`Task.drill`, drawn
  with `pretrain_seed`)."""
  task = config.make_task()
  problems = config.problems(config.pretrain_problems, config.pretrain_seed)
  exs = []
  for i, p in enumerate(problems):
    exs.append(examples.reference_example(TOKENIZER, task, p))
    if i < config.pretrain_drills:
      exs.append(examples.lm_example(TOKENIZER, *task.drill(
          p, config.pretrain_seed)))
  return exs


def _pretrain_policy(config: ArithStudyConfig, ctx: stages.StageContext):
  return train_role(ctx, config.policy, config.pretrain,
                    pretraining_examples(config), what="policy")


def _sample_train(config: ArithStudyConfig, ctx: stages.StageContext):
  problems = config.problems(config.label_problems, config.label_seed)
  rows = _sampling_stage(config, ctx, problems, config.samples_per_problem)
  save_rows(ctx.out / "samples.json", rows)


def _mc_labels(config: ArithStudyConfig, ctx: stages.StageContext):
  rows = load_rows(ctx.input("sample_train") / "samples.json")
  problems = {p.uid: p for p in config.problems(config.label_problems,
                                                 config.label_seed)}
  task = config.make_task()
  rows = [_with_reference(config, r, problems[r["uid"]]) for r in rows]
  policy = load_policy(config, ctx.input("pretrain_policy") / "model")
  key = stage_key(config, ctx.name)
  label_config = labeling.LabelConfig(
      rollouts=config.rollouts,
      prefixes_per_batch=max(1, config.decode_rows // config.rollouts),
      max_new_tokens=config.max_new_tokens,
      prefix_len=config.prompt_len + config.max_new_tokens,
      sampler=policy.sampler)

  def label_chunk(chunk):
    lps = [labeling.LabelProblem(r["uid"], r["prompt_ids"], r["answer"])
           for r in chunk]
    grader = labeling.task_grader(task, problems, answer_fn(task))
    records, stats = labeling.label_solutions(
        lps, [r["samples"] for r in chunk], grader, policy, label_config, key)
    return [{"records": [dataclasses.asdict(r) for r in records],
             "stats": stats}]

  chunks = ctx.map_chunks("labels", rows, config.chunk_problems, label_chunk)
  records = [r for c in chunks for r in c["records"]]
  stats = {k: sum(c["stats"][k] for c in chunks) for k in chunks[0]["stats"]}
  values_fn = metrics.ideal_values(task)
  if values_fn is not None:  # how value-like the MC labels are
    values = [values_fn(problems[r["uid"]], TOKENIZER.decode(
        [t for step in r["steps"] for t in step])) for r in records]
    stats["value"] = metrics.value_metrics(
        values, [r["step_labels"] for r in records])
  save_rows(ctx.out / "labels.json", records)
  stages.atomic_write_json(ctx.out / "stats.json", stats)


def _train_prm(config: ArithStudyConfig, ctx: stages.StageContext):
  records = load_rows(ctx.input("mc_labels") / "labels.json")
  exs = []
  for r in records:
    try:
      exs.append(labeling.prm_example_from_ids(
          r["prompt_ids"], r["steps"], r["step_labels"], config.prm.row_len,
          TOKENIZER.bos_id))
    except examples.ExampleTooLongError:
      continue
  model_config, params = _restore_with_head(ctx, config.prm.train.seed,
                                            PRM_INITS[config.prm_init])
  return train_role(ctx, model_config, config.prm, exs, params, "PRM")


def _revision_data(config: ArithStudyConfig, ctx: stages.StageContext):
  problems = config.problems(config.revision_problems, config.revision_seed)
  rows = _sampling_stage(config, ctx, problems, config.revision_samples)
  save_rows(ctx.out / "samples.json", rows)


def _revision_samples(config: ArithStudyConfig, ctx: stages.StageContext):
  """`(questions, uid -> [(text, correct)], uid -> reference text)` of the
  revision problems' samples (the reference added if `include_reference`)."""
  rows = load_rows(ctx.input("revision_data") / "samples.json")
  problems = {p.uid: p for p in config.problems(config.revision_problems,
                                                 config.revision_seed)}
  rows = [_with_reference(config, r, problems[r["uid"]]) for r in rows]
  questions = {r["uid"]: r["question"] for r in rows}
  samples = {r["uid"]: [(TOKENIZER.decode(s), ok) for s, ok in
                        zip(r["samples"], r["correct"])] for r in rows}
  return questions, samples, {u: p.solution for u, p in problems.items()}


def cap_correct(samples: dict[str, list[tuple[str, bool]]], cap: int | None,
                rng: np.random.Generator) -> dict[str, list[tuple[str, bool]]]:
  """Keeps every wrong sample and at most `cap` correct ones per problem
  (drawn at random, kept in order); problems in sorted uid order."""
  if cap is None:
    return samples
  out = {}
  for uid in sorted(samples):
    right = [i for i, (_, ok) in enumerate(samples[uid]) if ok]
    keep = set(right) if len(right) <= cap else set(
        rng.choice(right, size=cap, replace=False).tolist())
    out[uid] = [s for i, s in enumerate(samples[uid]) if not s[1] or i in keep]
  return out


def _train_revision(config: ArithStudyConfig, ctx: stages.StageContext):
  questions, samples, references = _revision_samples(config, ctx)
  rng = np.random.default_rng([config.seed, stable_hash(ctx.name)])
  samples = cap_correct(samples, config.revision_targets_per_problem, rng)
  copies = config.revision_reference_targets
  samples = {u: s + [(references[u], True)] * copies
             for u, s in samples.items()}
  exs, stats = revision_data.revision_lm_examples(
      TOKENIZER, questions, samples, rng, max_len=config.revision_max_len,
      max_context=config.revision_context,
      keep_correct=config.revision_keep_correct)
  stages.atomic_write_json(ctx.out / "data_stats.json", stats)
  model_config, params = checkpoint.restore(
      ctx.input("pretrain_policy") / "model")
  return train_role(ctx, model_config, config.revision, exs, params,
                    "revision model")


def _train_orm(config: ArithStudyConfig, ctx: stages.StageContext):
  questions, samples, _ = _revision_samples(config, ctx)
  rng = np.random.default_rng([config.seed, stable_hash(ctx.name)])
  candidates = revision_data.orm_candidates_from_samples(
      samples, rng, max_context=config.revision_context)
  exs, stats = revision_data.revision_orm_examples(
      TOKENIZER, questions, revision_data.balance(candidates, rng),
      max_len=config.revision_max_len, max_context=config.revision_context)
  stages.atomic_write_json(ctx.out / "data_stats.json",
                           dict(stats, n_unbalanced=len(candidates)))
  model_config, params = _restore_with_head(ctx, config.orm.train.seed)
  return train_role(ctx, model_config, config.orm, exs, params, "ORM")


def _sampling_config(c: ArithStudyConfig) -> dict:
  return {"seed": c.seed, "temperature": c.temperature,
          "max_new_tokens": c.max_new_tokens, "decode_rows": c.decode_rows,
          "chunk_problems": c.chunk_problems}


def scoped_stage(name: str, f: Callable[..., Any], config: Any,
                 make_config: Callable[[Any], Any],
                 inputs: Sequence[str] = (), cost: float = 1.0,
                 args: Sequence[Any] = ()) -> stages.Stage:
  """A stage whose function `f(view, *args, ctx)` and hashed config
  `make_config(view)` see `config` through one `stages.ConfigView`: once
  `stages.scope` seals it, `f` reads only the fields the hash covers (its
  own and its inputs')."""
  view = stages.ConfigView(config)
  return stages.Stage(name, functools.partial(f, view, *args),
                      make_config(view), tuple(inputs), cost)


def training_stages(config: ArithStudyConfig) -> list[stages.Stage]:
  """The training stages, in order (each hashes what it reads, and its
  function reads only that: `scoped_stage`)."""
  c = config
  st = functools.partial(scoped_stage, config=c)
  return [
      st("pretrain_policy", _pretrain_policy, make_config=lambda v: dict(
          **task_fields(v), policy=v.policy, seed=v.pretrain_seed,
          problems=v.pretrain_problems, training=v.pretrain,
          packing=packing.VERSION, **pretrain_drills_field(v)), cost=5),
      st("sample_train", _sample_train, make_config=lambda v: dict(
          _sampling_config(v), **task_fields(v), seed=v.label_seed,
          problems=v.label_problems, samples=v.samples_per_problem),
         inputs=("pretrain_policy",), cost=0.5),
      st("mc_labels", _mc_labels, make_config=lambda v: dict(
          _sampling_config(v), **task_fields(v), seed=v.label_seed,
          problems=v.label_problems, rollouts=v.rollouts,
          include_reference=v.include_reference),
         inputs=("pretrain_policy", "sample_train"), cost=5),
      st("train_prm", _train_prm, make_config=lambda v: dict(
          training=v.prm, packing=packing.VERSION,
          # Only when set: the default keeps the hashes it had.
          **({"prm_init": v.prm_init} if v.prm_init != "policy" else {})),
         inputs=(PRM_INITS[c.prm_init], "mc_labels"),
         cost=2 if c.prm_init == "policy" else 20),
      st("revision_data", _revision_data, make_config=lambda v: dict(
          _sampling_config(v), **task_fields(v), seed=v.revision_seed,
          problems=v.revision_problems, samples=v.revision_samples),
         inputs=("pretrain_policy",), cost=1),
      st("train_revision", _train_revision, make_config=lambda v: dict(
          training=v.revision, packing=packing.VERSION,
          max_len=v.revision_max_len,
          context=v.revision_context,
          targets_per_problem=v.revision_targets_per_problem,
          reference_targets=v.revision_reference_targets,
          include_reference=v.include_reference,
          # Only when set: finished studies made before the option keep
          # their hashes.
          **({"keep_correct": v.revision_keep_correct}
             if v.revision_keep_correct else {})),
         inputs=("pretrain_policy", "revision_data"), cost=2),
      st("train_orm", _train_orm, make_config=lambda v: dict(
          training=v.orm, packing=packing.VERSION,
          max_len=v.revision_max_len,
          context=v.revision_context,
          include_reference=v.include_reference),
         inputs=("pretrain_policy", "revision_data"), cost=2),
  ]
