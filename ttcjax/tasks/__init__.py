"""Problem sources and graders: pure Python, never imports jax.

``arithmetic`` is the synthetic step-by-step task with exact grading;
``countdown`` (reach a target from given numbers, one operation per step) is
the embedded task with a generator-verifier gap and an exact value function;
``math`` loads MATH-style problems and judges ``\\boxed{}`` answers.
All implement the `Task` interface of ``base`` and are in its registry
(``tasks.get("arithmetic")``).
"""

from ttcjax.tasks import base
from ttcjax.tasks import arithmetic
from ttcjax.tasks import countdown
from ttcjax.tasks import math
from ttcjax.tasks.base import Task, get, register, registered, task_class

__all__ = ["Task", "arithmetic", "base", "countdown", "get", "math", "register", "registered",
           "task_class"]
