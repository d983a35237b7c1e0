"""The `Task` interface and the task registry.

A task is everything the pipeline needs to know about a problem domain, and
nothing about models: where problems come from, how a problem becomes a
prompt, where a solution's steps end, how the final answer is read and judged,
and (optionally) an exact checker for single steps. Search, labelling,
training and the study take a `Task` and never branch on its name.

Adding a task is one file: subclass `Task`, decorate it with `@register`, and
import the module in `ttcjax/tasks/__init__.py`::

    @base.register
    class MyTask(base.Task):
      name = "my_task"
      step_delimiter = "\\n"

      def problems(self, num, seed): ...
      def prompt(self, problem): ...
      def extract_answer(self, text): ...
      def is_equiv(self, predicted, target): ...

A problem is any frozen object with at least ``uid: str``, ``answer: str``
and ``solution: str`` (``""`` when the task ships no reference solution).

Everything here is pure Python: no jax, no numpy.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Optional

_REGISTRY: dict[str, type["Task"]] = {}


class Task(abc.ABC):
  """A problem domain, as the pipeline sees it.

  Class attributes:
    name: the registry name (``"arithmetic"``, ``"math"``, ...).
    step_delimiter: the text that ends every step of a solution, the final
      answer step included (``"\\n"`` for the embedded tasks, ``"\\n\\n"``
      for MATH).
    reference_solutions: whether `problems` draws problems from its seed,
      each with a non-empty reference ``solution`` (the generated tasks):
      what a policy is trained on (`ttcjax.training.roles.DataConfig.task`).
  """

  name: ClassVar[str] = ""
  step_delimiter: ClassVar[str] = "\n"
  reference_solutions: ClassVar[bool] = False

  @abc.abstractmethod
  def problems(self, num: Optional[int], seed: int) -> list[Any]:
    """Returns ``num`` problems (all of a file-backed source when None).

    Generated tasks draw them deterministically from ``seed``; file-backed
    tasks return the first ``num`` in file order and ignore ``seed``.
    """

  @abc.abstractmethod
  def prompt(self, problem: Any) -> str:
    """The model input for ``problem``; the first step follows it directly."""

  def question(self, problem: Any) -> str:
    """The bare problem text, without the prompt's layout (prompt templates
    and revision prompts wrap it). Default: `prompt` without its trailing
    newline."""
    text = self.prompt(problem)
    return text[:-1] if text.endswith("\n") else text

  @abc.abstractmethod
  def extract_answer(self, text: Optional[str]) -> Optional[str]:
    """The final answer written in a model output, or None when there is none."""

  @abc.abstractmethod
  def is_equiv(self, predicted: Optional[str], target: str) -> bool:
    """Whether an extracted answer equals the reference answer ``target``."""

  def grade(self, text: Optional[str], problem: Any) -> bool:
    """Whether a whole model output reaches ``problem``'s answer."""
    return self.is_equiv(self.extract_answer(text), problem.answer)

  def grade_answer(self, answer: Optional[str], problem: Any) -> bool:
    """Whether an extracted answer solves ``problem``.

    Search records and Monte-Carlo labels grade what `extract_answer`
    returned, not the whole text; for every text,
    ``grade_answer(extract_answer(text), problem) == grade(text, problem)``.
    The default compares with the reference answer (`is_equiv`); a task whose
    answer is a derivation (Countdown) checks it against the problem.
    """
    return answer is not None and self.is_equiv(answer, problem.answer)

  def max_prompt_chars(self) -> Optional[int]:
    """The longest `prompt` a generated task can return, or None (unbounded).

    The embedded study pads prompts to one width derived from it.
    """
    return None

  def split_steps(self, text: str) -> list[str]:
    """Splits a solution into steps, each keeping its trailing delimiter.

    ``"".join(task.split_steps(text)) == text`` always holds.
    """
    parts = text.split(self.step_delimiter)
    out = [p + self.step_delimiter for p in parts[:-1]]
    return out + [parts[-1]] if parts[-1] else out

  def check_steps(self, problem: Any, text: str) -> Optional[list[bool]]:
    """Exact per-step verdicts for ``text`` (one per `split_steps` step).

    The default is None: the task has no exact step checker. Tasks that have
    one (the embedded ones) override it; the study's oracle-verifier control
    scores steps with it.
    """
    del problem, text
    return None

  def oracle_values(self, problem: Any, text: str) -> Optional[list[bool]]:
    """What the oracle verifier scores: per step, whether the solution up
    to and including it can still be right (one per `split_steps` step).

    The default is `check_steps` (every step so far valid), which is the
    ideal value wherever a valid prefix can always be completed (the
    arithmetic task). A task where a valid step can lead into a dead end
    (Countdown) overrides it with its ideal value function, so the oracle
    control is a perfect value-based PRM there too.
    """
    return self.check_steps(problem, text)

  @property
  def has_step_checker(self) -> bool:
    """Whether `check_steps` is implemented."""
    return type(self).check_steps is not Task.check_steps

  def drill(self, problem: Any, seed: int) -> Optional[tuple[str, str]]:
    """A practice example made from ``problem`` without its goal, or None.

    ``(prompt, text)`` that a base LM's pretraining may mix with the
    reference solutions, to teach the task's step mechanics where the
    references let a model shortcut them (Countdown: random legal play from
    the problem's numbers, since a reference's last result is always the
    stated target). Deterministic in ``(problem, seed)``. The default is None:
    the task has no drills.
    """
    del problem, seed
    return None

  @property
  def has_drills(self) -> bool:
    """Whether `drill` is implemented."""
    return type(self).drill is not Task.drill

  def difficulty_features(self, problem: Any) -> dict[str, Any]:
    """Task-native difficulty descriptors of ``problem`` (for reports only)."""
    del problem
    return {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator: registers a `Task` subclass under ``cls.name``."""
  if not (isinstance(cls, type) and issubclass(cls, Task)):
    raise TypeError(f"register takes a Task subclass, got {cls!r}")
  if not cls.name:
    raise ValueError(f"{cls.__qualname__}.name must be a non-empty string")
  if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
    raise ValueError(f"task {cls.name!r} is registered twice "
                     f"({_REGISTRY[cls.name].__qualname__}, {cls.__qualname__})")
  _REGISTRY[cls.name] = cls
  return cls


def registered() -> tuple[str, ...]:
  """The registered task names, sorted."""
  return tuple(sorted(_REGISTRY))


def task_class(name: str) -> type[Task]:
  """The class registered as ``name``, for what it says before it is built
  (`Task.reference_solutions`).

  Raises:
    ValueError: naming the registered tasks when ``name`` is not one.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; registered tasks: "
                     f"{', '.join(registered())}")
  return _REGISTRY[name]


def get(name: str, **kwargs) -> Task:
  """Builds the task registered as ``name`` with its keyword config.

  Raises:
    ValueError: naming the registered tasks when ``name`` is not one.
  """
  return task_class(name)(**kwargs)

