"""Question difficulty: quantile bins from oracle or predicted difficulty.

Snell et al. 2024 (Sec. 3.2) bin test questions into five quantiles of
difficulty, bin 1 the easiest:

- oracle: the base model's pass@1 over S samples per question, from the
  ground truth (`oracle_bins`);
- predicted: the mean final verifier (PRM) score of the same S samples, no
  ground truth needed (`predicted_bins`). Predicting it is not free: S
  generations plus S verifier passes per question, a cost the paper leaves
  out; `difficulty_cost` counts it.

Binning is by rank, so bins are balanced (sizes differ by at most one):
problems are sorted easiest first, by the difficulty value and then by the
tie-break key, and the problem of rank `r` (0-based, of `n`) goes to bin
`1 + floor(r * n_bins / n)`. Problems with equal difficulty are ordered by
uid (`tie_break='uid'`, the default) or by the SHA-256 of the uid
(`'hash'`, for uids that encode difficulty), so a tie group that straddles a
bin edge is split the same way on every run.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

TIE_BREAKS = ("uid", "hash")


def _tie_key(uid: str, tie_break: str) -> str:
  if tie_break == "uid":
    return uid
  if tie_break == "hash":
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()
  raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got "
                   f"{tie_break!r}")


def _means(samples: Mapping[str, Sequence[float]], what: str
           ) -> dict[str, float]:
  out = {}
  for uid, values in samples.items():
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
      raise ValueError(f"{what} of problem {uid!r} must be a non-empty list "
                       f"of finite numbers, got {values.tolist()}")
    out[str(uid)] = float(values.mean())
  if not out:
    raise ValueError(f"{what}: no problems")
  return out


def pass_at_1(correct: Mapping[str, Sequence[bool]]) -> dict[str, float]:
  """Oracle difficulty: fraction of correct samples per problem.

  Args:
    correct: uid -> correctness of each of its S samples.

  Returns:
    uid -> pass@1 in [0, 1] (higher is easier).
  """
  return _means(correct, "oracle samples")


def mean_final_score(scores: Mapping[str, Sequence[float]]
                     ) -> dict[str, float]:
  """Predicted difficulty: mean final verifier score per problem.

  Args:
    scores: uid -> final PRM score of each of its S samples.

  Returns:
    uid -> mean score (higher is easier).
  """
  return _means(scores, "PRM scores")


def quantile_bins(values: Mapping[str, float], n_bins: int = 5,
                  tie_break: str = "uid") -> dict[str, int]:
  """Rank-based quantile bins, bin 1 = highest value (easiest).

  Args:
    values: uid -> difficulty value, higher meaning easier (pass@1, score).
    n_bins: bins.
    tie_break: 'uid' or 'hash' (module docstring).

  Returns:
    uid -> bin in 1..n_bins.
  """
  if n_bins < 1:
    raise ValueError(f"n_bins must be >= 1, got {n_bins}")
  n = len(values)
  if n < n_bins:
    raise ValueError(f"{n} problems cannot fill {n_bins} bins")
  order = sorted(values, key=lambda u: (-float(values[u]),
                                        _tie_key(u, tie_break)))
  return {uid: 1 + (rank * n_bins) // n for rank, uid in enumerate(order)}


def oracle_bins(correct: Mapping[str, Sequence[bool]], n_bins: int = 5,
                tie_break: str = "uid") -> dict[str, int]:
  """Bins of oracle difficulty (pass@1 over the S samples)."""
  return quantile_bins(pass_at_1(correct), n_bins, tie_break)


def predicted_bins(scores: Mapping[str, Sequence[float]], n_bins: int = 5,
                   tie_break: str = "uid") -> dict[str, int]:
  """Bins of predicted difficulty (mean final PRM score over S samples)."""
  return quantile_bins(mean_final_score(scores), n_bins, tie_break)


def bin_summary(values: Mapping[str, float], bins: Mapping[str, int],
                n_bins: int) -> dict[str, dict[str, Any]]:
  """Per bin: size and the min / mean / max difficulty value in it."""
  out = {}
  for b in range(1, n_bins + 1):
    vals = np.array([values[u] for u in sorted(bins) if bins[u] == b])
    out[str(b)] = {"n": int(vals.size),
                   "min": float(vals.min()) if vals.size else None,
                   "mean": float(vals.mean()) if vals.size else None,
                   "max": float(vals.max()) if vals.size else None}
  return out


def _ranks(x: np.ndarray) -> np.ndarray:
  """Average ranks (ties share their mean rank)."""
  order = np.argsort(x, kind="stable")
  ranks = np.empty(x.size)
  ranks[order] = np.arange(x.size, dtype=np.float64)
  for value in np.unique(x):
    same = x == value
    ranks[same] = ranks[same].mean()
  return ranks


def agreement(bins_a: Mapping[str, int], bins_b: Mapping[str, int],
              values_a: Mapping[str, float], values_b: Mapping[str, float],
              n_bins: int) -> dict[str, Any]:
  """How well predicted bins track oracle bins (on their common uids).

  Returns:
    `same_bin` and `within_one_bin` fractions, `confusion[a-1][b-1]`
    counts (rows: bins_a), and the Spearman correlation of the values.
  """
  uids = sorted(set(bins_a) & set(bins_b))
  if not uids:
    raise ValueError("agreement: the two binnings share no uid")
  a = np.array([bins_a[u] for u in uids])
  b = np.array([bins_b[u] for u in uids])
  confusion = np.zeros((n_bins, n_bins), dtype=int)
  np.add.at(confusion, (a - 1, b - 1), 1)
  ra = _ranks(np.array([values_a[u] for u in uids], np.float64))
  rb = _ranks(np.array([values_b[u] for u in uids], np.float64))
  sa, sb = ra.std(), rb.std()
  spearman = (float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))
              if sa > 0 and sb > 0 else None)
  return {"n": len(uids), "same_bin": float(np.mean(a == b)),
          "within_one_bin": float(np.mean(np.abs(a - b) <= 1)),
          "confusion": confusion.tolist(), "spearman": spearman}


def samples_from_records(records: Iterable[Mapping[str, Any]], *,
                         strategy: str = "best_of_n", budget: int,
                         hparams: Mapping[str, Any] | None = None
                         ) -> tuple[dict[str, list[bool]],
                                    dict[str, list[float]]]:
  """Oracle correctness and PRM scores from best-of-N records' candidates.

  The S candidates of a best-of-N run (records from `ttcjax.search.records`
  carry each candidate's `correct` and aggregated `score`; with
  `aggregation='last'` that is the final PRM score) serve as the samples of
  both difficulty measures.

  Args:
    records: search records (dicts).
    strategy: the strategy whose candidates to use.
    budget: S, the record budget.
    hparams: items a record's hparams must contain (e.g. one selection, so
      each problem is read once).

  Returns:
    `(correct, scores)`: uid -> per-candidate lists.
  """
  correct, scores = {}, {}
  for r in records:
    if r.get("strategy") != strategy or int(r.get("budget", -1)) != budget:
      continue
    hp = r.get("hparams", {})
    if any(hp.get(k) != v for k, v in (hparams or {}).items()):
      continue
    uid = str(r["uid"])
    cands = r.get("candidates")
    if not cands:
      raise ValueError(f"record of {uid!r} ({strategy}, N={budget}) has no "
                       "candidates")
    c = [bool(x.get("correct", False)) for x in cands]
    s = [float(x["score"]) for x in cands]
    if uid in correct and (correct[uid], scores[uid]) != (c, s):
      raise ValueError(f"problem {uid!r} has two different {strategy} N="
                       f"{budget} records; narrow `hparams`")
    correct[uid], scores[uid] = c, s
  if not correct:
    raise ValueError(f"no {strategy} records with budget {budget} and "
                     f"hparams {dict(hparams or {})}")
  return correct, scores


def difficulty_cost(samples: Mapping[str, int] | Sequence[int], *,
                    policy_flops_per_sample: float | None = None,
                    verifier_flops_per_sample: float | None = None
                    ) -> dict[str, Any]:
  """What predicting difficulty costs: S samples, each generated and scored.

  Args:
    samples: samples per problem (uid -> S, or a list of S).
    policy_flops_per_sample: FLOPs to generate one sample (prompt included).
    verifier_flops_per_sample: FLOPs for the verifier to score one.

  Returns:
    Per problem (mean) and total over problems: generations, policy FLOPs,
    verifier FLOPs and their sum (None where a FLOPs input is None).
  """
  counts = np.asarray(list(samples.values()) if isinstance(samples, Mapping)
                      else list(samples), np.float64)
  if counts.size == 0 or np.any(counts < 0):
    raise ValueError(f"samples must be non-negative counts, got "
                     f"{counts.tolist()}")
  n, total = int(counts.size), float(counts.sum())

  def flops(per_sample):
    return None if per_sample is None else float(per_sample) * total

  policy = flops(policy_flops_per_sample)
  verifier = flops(verifier_flops_per_sample)
  both = None if policy is None or verifier is None else policy + verifier
  per = lambda x: None if x is None else x / n  # pylint: disable=g-long-lambda
  return {
      "problems": n, "samples_per_problem": total / n,
      "generations_total": total,
      "policy_flops_per_sample": policy_flops_per_sample,
      "verifier_flops_per_sample": verifier_flops_per_sample,
      "policy_flops_per_problem": per(policy),
      "verifier_flops_per_problem": per(verifier),
      "flops_per_problem": per(both),
      "policy_flops_total": policy, "verifier_flops_total": verifier,
      "flops_total": both,
  }
