"""Analysis of a study: FLOPs accounting, difficulty bins, compute-optimal
choice, FLOPs-matched comparison, controls (cut candidates, verifier AUCs:
`controls`, `verifier_quality`), the report (`results` builds the results
dict, `report` writes it).

Reads search records; never runs a model.
"""

from ttcjax.analysis.flops import (FlopsCount, attention_flops, decode_flops,
                                flops_matched_budget, forward_flops,
                                generation_flops, inference_flops,
                                inference_flops_2nd, matmul_flops_per_token,
                                prefill_flops, pretrain_flops_6nd, score_flops,
                                search_flops, train_step_flops, xla_flops)
from ttcjax.analysis.report import (RESULTS_SCHEMA, AnalysisConfig, analyze,
                                 write_report)

__all__ = [
    "FlopsCount", "attention_flops", "decode_flops", "flops_matched_budget",
    "forward_flops", "generation_flops", "inference_flops",
    "inference_flops_2nd", "matmul_flops_per_token", "prefill_flops",
    "pretrain_flops_6nd", "score_flops", "search_flops", "train_step_flops",
    "xla_flops", "AnalysisConfig", "RESULTS_SCHEMA", "analyze", "write_report",
]
