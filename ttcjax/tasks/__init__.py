"""Problem sources and graders: pure Python, never imports jax.

``arithmetic`` is the synthetic step-by-step task with exact grading;
``math`` loads MATH-style problems and judges ``\\boxed{}`` answers.
"""

from ttcjax.tasks import arithmetic
from ttcjax.tasks import math

__all__ = ["arithmetic", "math"]
