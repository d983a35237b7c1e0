"""Within-problem ROC AUC of a PRM's last-step score, with a 95% bootstrap
CI over problems (1000 resamples, seed 0), from the held-out samples of a
countdown_cpu workdir's `eval_policy` stage and a `scores.json` of per
problem, per sample step scores (an `eval_prm` stage's, or `prm_arm.py`'s).

usage: within_ci.py EVAL_POLICY_SAMPLES SCORES_JSON
"""
import json
import sys

import numpy as np

from ttcjax.experiments import evaluate
from ttcjax.experiments.metrics import roc_auc


def main(samples_path, scores_path):
  rows = json.load(open(samples_path))
  scores = json.load(open(scores_path))
  within = []
  for r, per in zip(rows, scores):
    last = [evaluate._aggregate(s, "last") if s else 0.0 for s in per]  # pylint: disable=protected-access
    a = roc_auc(last, r["correct"])
    if not np.isnan(a):
      within.append(a)
  within = np.asarray(within)
  rng = np.random.default_rng(0)
  means = [within[rng.integers(0, len(within), len(within))].mean()
           for _ in range(1000)]
  lo, hi = np.percentile(means, [2.5, 97.5])
  print(json.dumps({"auc_last_within": float(within.mean()),
                    "ci95": [float(lo), float(hi)],
                    "problems_with_both": int(len(within))}))


if __name__ == "__main__":
  main(*sys.argv[1:])
