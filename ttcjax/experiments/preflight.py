"""Checks a study runs before any work: checkpoints that fit the task's
vocabulary, and a tree-search cache that fits the task's solutions.

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

from typing import Sequence

from ttcjax import checkpoint
from ttcjax.experiments import sweep_runner
from ttcjax.tasks import arithmetic

TREE_STRATEGIES = ("beam", "lookahead", "dvts")
_ROLES = {"policy": False, "prm": True, "revision": False, "orm": True}


def _roles_used(run: sweep_runner.SearchRun) -> list[str]:
  names = {s.strategy for s in run.strategies}
  out = []
  if names - {"revisions"}:
    out += ["policy", "prm"]
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
  tree = [c for s in run.strategies if s.strategy in TREE_STRATEGIES
          for c in s.configs(None)]
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
  study that trains them has not written yet)."""
  for run in runs:
    check_tree_cache(run)
    if checkpoints:
      check_vocab(run)
