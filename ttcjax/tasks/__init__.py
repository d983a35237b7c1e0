"""Problem sources and graders: pure Python, never imports jax.

``arithmetic`` is the synthetic step-by-step task with exact grading;
``math`` loads MATH-style problems and judges ``\\boxed{}`` answers.
Both implement the `Task` interface of ``base`` and are in its registry
(``tasks.get("arithmetic")``).
"""

from ttcjax.tasks import base
from ttcjax.tasks import arithmetic
from ttcjax.tasks import math
from ttcjax.tasks.base import Task, get, register, registered

__all__ = ["Task", "arithmetic", "base", "get", "math", "register", "registered"]
