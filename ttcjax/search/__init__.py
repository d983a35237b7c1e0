"""Test-time search strategies behind one interface.

`run_search(config, problems, budget, policy, verifier, task, key)` runs
best-of-N, PRM beam search, lookahead search or DVTS on callbacks
(`PolicyFns`, `VerifierFns`, `TaskFns`) and returns a `SearchResult` per
problem with its candidates, chosen answer and exact token counts. The search
code never imports a model class.
"""

from ttcjax.search.base import (Candidate, PolicyFns, RoundTrace,
                                SearchConfig, SearchProblem, SearchResult,
                                StepTagInput, TaskFns, VerifierFns,
                                concat_input, search_key)
from ttcjax.search.beam import beam_search, lookahead_search
from ttcjax.search.best_of_n import (AccuracyEstimate, best_of_n,
                                     bootstrap_accuracy, subsample)
from ttcjax.search.dvts import dvts
from ttcjax.search.lookahead import rollout_and_rollback
from ttcjax.search.run import run_search
from ttcjax.search.selection import choose, group_answers, select

__all__ = [
    "AccuracyEstimate", "Candidate", "PolicyFns", "RoundTrace",
    "SearchConfig", "SearchProblem", "SearchResult", "StepTagInput",
    "TaskFns", "VerifierFns", "beam_search", "best_of_n",
    "bootstrap_accuracy", "choose", "concat_input", "dvts", "group_answers",
    "lookahead_search", "rollout_and_rollback", "run_search", "search_key",
    "select", "subsample",
]
