"""The larger-verifier lever: PRM from the policy vs from the ~14x model.

Runs a preset's stages up to `eval_prm` (`ttcjax.experiments.embedded_study`)
twice in one workdir: with `ArithStudyConfig.prm_init='policy'` (the
baseline, the paper's recipe), then `'large'` (only pretrain_large,
train_prm and eval_prm run again: the other stages are shared). Prints, for
each, the wall time of its run, the PRM's training FLOPs and its ROC AUC on
held-out samples, pooled and within a problem (mean over problems with both
a right and a wrong sample), and the ratio large / policy of the
within-problem AUC. Timings depend on the machine's load.

  python bench/larger_verifier.py --preset smoke --workdir /tmp/larger_prm

Measured once on smoke (2 shared cores, load ~19): policy-init PRM AUC
('last') 0.786 pooled, 0.500 within a problem; large-init 0.761 and 0.667;
8 test problems have both a right and a wrong sample, so the difference is
well inside the noise. PRM training 6.1e10 -> 6.8e11 FLOPs; the large run
added 16 min (pretrain_large 15:22, train_prm 0:44) to the 11:42 baseline.
"""

from __future__ import annotations

import argparse
import json
import time

from ttcjax.experiments import embedded, embedded_study, stages


def measure(preset: str, workdir: str, prm_init: str) -> dict:
  """Runs `preset` with `prm_init` up to eval_prm; returns its figures."""
  config = embedded.PRESETS[preset]().replace(prm_init=prm_init)
  began = time.time()
  embedded_study.run_study(
      embedded_study.full_study_stages(config, preset), workdir,
      only=["eval_prm"], on_change="rerun", log=print)
  metrics = stages.read_json(f"{workdir}/eval_prm/metrics.json")
  summary = stages.read_json(f"{workdir}/train_prm/train_summary.json")
  return {"prm_init": prm_init, "seconds": round(time.time() - began, 1),
          "prm_train_flops": summary["train_flops"],
          **{k: v for k, v in metrics.items()
             if k.startswith("auc") or k == "problems_with_both"}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="smoke",
                      choices=sorted(embedded_study.SWEEPS))
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  rows = [measure(args.preset, args.workdir, init)
          for init in ("policy", "large")]
  for row in rows:
    print(json.dumps(row))
  base, large = (r.get("auc_last_within") for r in rows)
  ratio = (large / base) if base and large is not None else None
  print(f"within-problem AUC ('last'): policy-init {base}, large-init "
        f"{large}, ratio {ratio}")


if __name__ == "__main__":
  main()
