"""Test-time search strategies behind one interface, as plug-ins.

Each strategy is one module with a frozen config class registered by name
(`ttcjax.search.strategy`): best-of-N, PRM beam search, lookahead search,
DVTS, REBASE and sequential revisions (a policy with a `prompt_fn`; see
`search.revisions`). `make_config(name, **fields)` builds one;
`run_search(config, problems, budget, policy, verifier, task, key)` runs it
on callbacks (`PolicyFns`, `VerifierFns`, `TaskFns`) and returns a
`SearchResult` per problem with its candidates, chosen answer and exact
token counts. The search code never imports a model class.
`search.records` turns results into resumable per-problem JSON records.
"""

from ttcjax.search.base import (Candidate, IncrementalVerifier, PolicyFns,
                                RoundTrace, SearchProblem, SearchResult,
                                StepTagInput, TaskFns, VerifierFns,
                                concat_input, search_key)
from ttcjax.search.strategy import (SearchConfig, make_config, register,
                                    names as strategy_names)
from ttcjax.search.strategy import get as strategy_class
# The built-in strategies register on import, in this order.
from ttcjax.search.best_of_n import (AccuracyEstimate, BestOfNConfig,
                                     bootstrap_accuracy, subsample)
from ttcjax.search.beam import BeamConfig
from ttcjax.search.lookahead import LookaheadConfig
from ttcjax.search.dvts import DvtsConfig
from ttcjax.search.rebase import RebaseConfig
# Not the `revisions` function: it would hide the module (reach it through
# `run_search`, or import it from `ttcjax.search.revisions`).
from ttcjax.search.revisions import (RevisionsConfig, select_revisions,
                                     with_prompt_fn)
from ttcjax.search.run import run_search
from ttcjax.search.selection import choose, group_answers, select
from ttcjax.search.stepping import rollout_and_rollback
from ttcjax.search.tree import Group, Pruned, TreeConfig, WidthConfig

__all__ = [
    "AccuracyEstimate", "BeamConfig", "BestOfNConfig", "Candidate",
    "DvtsConfig", "Group", "IncrementalVerifier", "LookaheadConfig",
    "PolicyFns", "Pruned",
    "RebaseConfig", "RevisionsConfig", "RoundTrace", "SearchConfig",
    "SearchProblem", "SearchResult", "StepTagInput", "TaskFns", "TreeConfig",
    "VerifierFns", "WidthConfig", "bootstrap_accuracy", "choose",
    "concat_input", "group_answers", "make_config", "register",
    "rollout_and_rollback", "run_search", "search_key", "select",
    "select_revisions", "strategy_class", "strategy_names", "subsample",
    "with_prompt_fn",
]
