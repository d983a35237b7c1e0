"""Test-time search strategies behind one interface.

`run_search(config, problems, budget, policy, verifier, task, key)` runs
best-of-N, PRM beam search, lookahead search, DVTS or sequential revisions
(a `RevisionPolicyFns` policy; see `search.revisions`) on callbacks
(`PolicyFns`, `VerifierFns`, `TaskFns`) and returns a `SearchResult` per
problem with its candidates, chosen answer and exact token counts. The search
code never imports a model class. `search.records` turns results into
resumable per-problem JSON records.
"""

from ttcjax.search.base import (Candidate, PolicyFns, RoundTrace,
                                SearchConfig, SearchProblem, SearchResult,
                                StepTagInput, TaskFns, VerifierFns,
                                concat_input, search_key)
from ttcjax.search.beam import beam_search, lookahead_search
from ttcjax.search.best_of_n import (AccuracyEstimate, best_of_n,
                                     bootstrap_accuracy, subsample)
from ttcjax.search.dvts import dvts
from ttcjax.search.stepping import rollout_and_rollback
# Not the `revisions` function: it would hide the module (reach it through
# `run_search`, or import it from `ttcjax.search.revisions`).
from ttcjax.search.revisions import (RevisionPolicyFns, select_revisions,
                                     with_prompt_fn)
from ttcjax.search.run import run_search
from ttcjax.search.selection import choose, group_answers, select

__all__ = [
    "AccuracyEstimate", "Candidate", "PolicyFns", "RevisionPolicyFns",
    "RoundTrace", "SearchConfig", "SearchProblem", "SearchResult",
    "StepTagInput", "TaskFns", "VerifierFns", "beam_search", "best_of_n",
    "bootstrap_accuracy", "choose", "concat_input", "dvts", "group_answers",
    "lookahead_search", "rollout_and_rollback", "run_search",
    "search_key", "select", "select_revisions", "subsample",
    "with_prompt_fn",
]
