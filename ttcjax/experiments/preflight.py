"""Checks a study or a search runs before any work: checkpoints that fit
the task's vocabulary, a tree-search cache that fits the task's solutions,
and tree-search batches whose memory fits the device (`check_memory`).

Tree searches (beam, lookahead, DVTS) decode all rows of a batch with one
shared cache index, so every round takes as many cache slots as the batch's
longest step; once `SearchRun.tree_cache_tokens` slots are used, every row
still going is cut, marked unfinished and counted wrong. Best-of-N has no
such limit, so a too-small cache makes tree search lose silently. Where the
task's reference solutions are known (the arithmetic task: drawn by seed),
the worst case is predictable: rounds (the most steps of a solution, at most
`max_rounds`) x the longest step in tokens (at most `max_new_tokens`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

from absl import logging
import jax

from ttcjax import checkpoint, memory
from ttcjax.data import examples
from ttcjax.experiments import sweep_runner
from ttcjax.search import strategy, sweep
from ttcjax.search.tree import TreeConfig
from ttcjax.tasks import arithmetic

_ROLES = {"policy": False, "prm": True, "revision": False, "orm": True}


def _roles_used(run: sweep_runner.SearchRun) -> list[str]:
  names = {s.strategy for s in run.strategies}
  out = []
  if names - {"revisions"}:
    out += ["policy"] if run.verifier == "oracle" else ["policy", "prm"]
  if "revisions" in names:
    out += ["revision", "orm"]
  return out


def tokenizer_vocab(ckpts: sweep_runner.Checkpoints) -> tuple[int, str]:
  """The vocabulary size of the run's tokenizer and its name."""
  if ckpts.tokenizer_dir is None:
    from ttcjax.tokenizer import ByteTokenizer  # pylint: disable=g-import-not-at-top
    return ByteTokenizer().vocab_size, "the byte tokenizer"
  from ttcjax.models import hf_import  # pylint: disable=g-import-not-at-top
  raw = hf_import.load_tokenizer(ckpts.tokenizer_dir)
  return raw.get_vocab_size(), f"{ckpts.tokenizer_dir}/tokenizer.json"


def check_vocab(run: sweep_runner.SearchRun) -> None:
  """Every checkpoint the run restores embeds every id of its tokenizer and
  has (PRM, ORM) or lacks (policy, revision model) a reward head.

  Raises:
    ValueError: naming the `Checkpoints` field to change.
  """
  vocab, what = tokenizer_vocab(run.checkpoints)
  for role in _roles_used(run):
    path = getattr(run.checkpoints, role)
    config = checkpoint.load_config(path)
    if config.vocab_size < vocab:
      raise ValueError(
          f"Checkpoints.{role}={path!r} has vocab_size {config.vocab_size}, "
          f"below the {vocab} ids of {what}: it was not trained on this "
          f"task's vocabulary. Point Checkpoints.{role} at a checkpoint of "
          f"this vocabulary, or Checkpoints.tokenizer_dir at its tokenizer")
    if config.reward_head != _ROLES[role]:
      need = "needs" if _ROLES[role] else "must not have"
      raise ValueError(f"Checkpoints.{role}={path!r}: the {role} {need} a "
                       f"reward head (reward_head={config.reward_head})")


def solution_shape(run: sweep_runner.SearchRun) -> tuple[int, int] | None:
  """(most steps, longest step in tokens) of the reference solutions of the
  run's problems; None where the task has no drawn references."""
  source = run.problems
  if source.task != "arithmetic" or not source.num_problems:
    return None
  problems = arithmetic.generate(source.arithmetic, source.num_problems,
                                 source.seed)
  steps = [arithmetic.split_steps(p.solution) for p in problems]
  if run.checkpoints.tokenizer_dir is None:
    length = lambda text: len(text.encode("utf-8"))
  else:
    tok = sweep_runner.make_tokenizer(run.checkpoints)
    length = lambda text: len(tok.encode_text.encode(text))
  return (max(len(s) for s in steps),
          max(length(step) for s in steps for step in s))


def check_tree_cache(run: sweep_runner.SearchRun) -> dict[str, int] | None:
  """The tree searches' cache and the solutions' token cap fit the task's
  reference solutions (module docstring).

  Returns:
    `{'rounds', 'step_tokens', 'needed', 'cache'}`, or None without tree
    searches or drawn references.

  Raises:
    ValueError: naming `SearchRun.tree_cache_tokens`.
  """
  shape = solution_shape(run)
  if shape is None:
    return None
  most_steps, step_tokens = shape
  # Every strategy of the tree engine (beam, lookahead, DVTS, REBASE and
  # any registered later), not a list of names.
  tree = [c for s in run.strategies for c in s.configs(None)
          if isinstance(c, TreeConfig)]
  if not tree:
    return None
  rounds = min(most_steps, max(c.max_rounds for c in tree))
  step_tokens = min(step_tokens, run.max_new_tokens)
  needed = rounds * step_tokens
  cache = run.tree_cache_tokens or 4 * run.max_new_tokens
  if needed > cache:
    raise ValueError(
        f"the tree searches' cache would run out: {rounds} rounds x "
        f"{step_tokens}-token steps (the longest reference step of these "
        f"problems) need {needed} slots past the prompt, the cache has "
        f"{cache}; rows still going then end unfinished and count wrong. "
        f"Raise SearchRun.tree_cache_tokens (or max_new_tokens, whose 4x "
        f"is its default) to at least {needed}")
  return {"rounds": rounds, "step_tokens": step_tokens, "needed": needed,
          "cache": cache}


def check_runs(runs: Sequence[sweep_runner.SearchRun], *,
               checkpoints: bool = True) -> None:
  """All checks of `runs` (`checkpoints=False`: not the checkpoints, which a
  study that trains them has not written yet, nor the memory, which needs
  their model configs)."""
  for run in runs:
    check_tree_cache(run)
    if checkpoints:
      check_vocab(run)
      check_memory(run)



# --- Memory of the tree searches' batches ------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryCheck:
  """One tree-search setting of a run, its batch and its memory.

  Attributes:
    setting: the strategy, its grid values and N, as the error names them.
    problems: problems per batch (`sweep.batch_problems`).
    rows: policy rows per batch (problems x `TreeConfig.rows(N)`).
    estimate: per-device bytes (`memory.estimate`).
    fitting_problems: most problems per batch that fit (<= `problems`; 0:
      not even one).
  """
  setting: str
  problems: int
  rows: int
  estimate: memory.Estimate
  fitting_problems: int


def _gib(n: float) -> str:
  if n < memory.GiB / 10:
    return f"{n / 2**20:.1f} MiB"
  return f"{n / memory.GiB:.2f} GiB"


def _tree_shapes(run, problems, per_problem, width, policy, verifier,
                 lookahead) -> memory.SearchShapes:
  rows = problems * per_problem
  return memory.SearchShapes(
      policy=policy, verifier=verifier, rows=rows, prompt_rows=problems,
      prompt_len=width, cache_len=sweep_runner.tree_cache_len(run, width),
      verifier_len=sweep_runner.prm_verifier_len(run, width),
      verifier_rows=min(run.verifier_rows or rows, rows),
      max_gen=run.max_new_tokens, decode_states=2 if lookahead else 1,
      verifier_cache_len=(sweep_runner.verifier_cache_len(run, width)
                          if run.incremental_verifier and verifier is not None
                          else 0))


def check_memory(run: sweep_runner.SearchRun, *,
                 device: memory.Device | None = None,
                 num_devices: int | None = None
                 ) -> list[MemoryCheck] | None:
  """Every tree-search setting (beam, lookahead, DVTS, REBASE: each grid
  point x budget) of `run` fits the device's memory, by `ttcjax.memory`.

  For each setting, the batch the sweep would run (`problems_per_batch`
  problems, fewer under `SearchRun.max_rows`, x N rows) is costed per
  device on the run's mesh with the rules it runs under
  (`sweep_runner.placement_rules`): both models' parameters, the policy's
  cache of the prompt width plus `tree_cache_tokens` slots for every row,
  the decode state (twice for lookahead: a roll-out keeps the candidates'
  rows to restore them; its tokens go into the same cache, which is rolled
  back), with `SearchRun.incremental_verifier` the PRM's own cache of
  `sweep_runner.verifier_cache_len` slots for every row, and the largest
  activation peak (prefill, decode step, verifier call of `verifier_rows`
  rows, or of every row into its cache). Nothing is compiled or restored:
  the checkpoints' model configs and the problems' prompt lengths are
  read.

  A setting fails when it needs more than the device's memory less
  `memory.estimate`'s 15% headroom; passing does not promise the run fits
  (the headroom stands for XLA's transient buffers, which are not
  counted).

  Args:
    run: the run; its checkpoints must exist.
    device: the chip; None: `memory.local_device()`, the memory this
      process's accelerator lets XLA allocate (on a GPU,
      XLA_PYTHON_CLIENT_MEM_FRACTION of the card), and where it reports no
      limit (CPU), the check is skipped and returns None.
    num_devices: devices the mesh spans (None: this process's).

  Returns:
    A `MemoryCheck` per setting, or None without tree searches or a
    device memory limit.

  Raises:
    ValueError: naming the setting that fits least, its rows and cache,
      the mesh, the bytes it needs and the device has, and the
      `problems_per_batch` / `max_rows` that fit.
  """
  specs = [s for s in run.strategies if s.role == "prm" and
           issubclass(strategy.get(s.strategy), TreeConfig)]
  if not specs:
    return None
  note = ""
  if device is None:
    device = memory.local_device()
    if device is None:
      logging.info("memory check skipped: the device reports no memory "
                   "limit")
      return None
    if jax.default_backend() == "gpu":
      note = ("; on a GPU the limit is XLA_PYTHON_CLIENT_MEM_FRACTION of the"
              " card (default 0.75): raising it adds room")
  count = num_devices or len(jax.local_devices())
  sizes = run.mesh.shape(count) if run.mesh else (1, 1, 1)
  mesh = memory.AbstractMesh.of(*sizes)
  rules = sweep_runner.placement_rules(mesh.shape["model"])
  tok = sweep_runner.make_tokenizer(run.checkpoints)
  problems = sweep_runner.load_problems(run.problems, tok)
  prompts = [examples.prompt_ids(tok.encode_text, p.prompt)
             for p in problems] or [[0]]
  width = sweep_runner.prompt_width(run, prompts)
  policy = checkpoint.load_config(run.checkpoints.policy)
  verifier = (None if run.verifier == "oracle" else
              checkpoint.load_config(run.checkpoints.prm))
  size = min(run.problems_per_batch or len(problems), max(len(problems), 1))

  checks = []
  for spec in specs:
    for config, budget in itertools.product(spec.configs(size),
                                            spec.budgets):
      try:
        per_problem = config.rows(budget)
      except ValueError:  # the sweep skips it too
        continue

      def cost(problems, config=config, per_problem=per_problem):
        shapes = _tree_shapes(run, problems, per_problem, width, policy,
                              verifier, config.rollout_steps() > 0)
        return memory.estimate(shapes, mesh, device, rules)

      per_batch = sweep.batch_problems(size, config, budget, run.max_rows)
      est, lo = cost(per_batch), per_batch
      if not est.fits:  # the most problems that fit (0: none), bisected
        lo, hi = 0, per_batch
        while hi - lo > 1:
          mid = (lo + hi) // 2
          lo, hi = (mid, hi) if cost(mid).fits else (lo, mid)
      grid = "".join(f" {k}={getattr(config, k)!r}"
                     for k in sorted(spec.grid))
      checks.append(MemoryCheck(f"{spec.strategy}{grid} N={budget}",
                                per_batch, per_batch * per_problem, est, lo))
  failed = [c for c in checks if not c.estimate.fits]
  if failed:
    raise ValueError(_memory_error(
        min(failed, key=lambda c: (c.fitting_problems, -c.estimate.total)),
        len(failed), run, width, mesh, device) + note)
  return checks


def _memory_error(worst: MemoryCheck, failed: int,
                  run: sweep_runner.SearchRun, width: int,
                  mesh: memory.AbstractMesh, device: memory.Device) -> str:
  est, per_problem = worst.estimate, worst.rows // worst.problems
  cache = sweep_runner.tree_cache_len(run, width)
  others = (f" ({failed - 1} more tree-search settings do not fit either)"
            if failed > 1 else "")
  prm_cache = (f" and the PRM's {sweep_runner.verifier_cache_len(run, width)}"
               f"-slot cache (SearchRun.incremental_verifier)"
               if run.incremental_verifier else "")
  if worst.fitting_problems:
    fix = (f"lower SearchRun.problems_per_batch to "
           f"{worst.fitting_problems}, or set SearchRun.max_rows = "
           f"{worst.fitting_problems * per_problem}")
  else:
    fix = (f"not even one problem ({per_problem} rows) fits: spread the "
           f"run over more devices (SearchRun.mesh), shorten the cache "
           f"(SearchRun.tree_cache_tokens, max_new_tokens), lower "
           f"SearchRun.verifier_rows, or drop N from the budgets")
  if prm_cache:
    fix += ", or turn SearchRun.incremental_verifier off"
  return (
      f"{worst.setting} does not fit in memory: {worst.problems} problems "
      f"a batch (SearchRun.problems_per_batch={run.problems_per_batch}, "
      f"max_rows={run.max_rows}) x {per_problem} rows = {worst.rows} rows "
      f"with a {cache}-slot cache ({width} prompt + tree_cache_tokens "
      f"{cache - width}){prm_cache} need {_gib(est.total)} per device on "
      f"mesh {mesh} of {device.name} (params {_gib(est.params)}, cache "
      f"{_gib(est.cache)}, decode state {_gib(est.state)}, {est.phase} peak "
      f"{_gib(est.activations)}); the device has {_gib(est.capacity)}, "
      f"{_gib(est.usable)} after the {est.headroom:.0%} headroom"
      f"{others}. To fit, {fix}")
