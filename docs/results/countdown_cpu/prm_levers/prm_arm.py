"""One PRM arm of the countdown_cpu lever study: trains a PRM as the
`train_prm` stage does (`embedded.train_role` on `labeling.prm_example_from_ids`
of the given MC-label files; countdown_cpu's PRM training with STEPS steps at
learning rate LR), starting from INIT's model plus a fresh reward head, then
scores a workdir's held-out `eval_policy` samples as the `eval_prm` stage
does and writes `OUT/scores.json` and `OUT/metrics.json`.

usage: prm_arm.py OUT STEPS LR INIT_MODEL_STAGE_DIR EVAL_POLICY_DIR LABELS...
  e.g. prm_arm.py out 2000 1e-3 WD/pretrain_policy WD/eval_policy \\
           WD2048/mc_labels/labels.json
"""
import dataclasses
import pathlib
import sys
import types

import jax

from ttcjax import checkpoint, training
from ttcjax.data import examples
from ttcjax.experiments import embedded, evaluate, stages
from ttcjax.verifiers import labeling


def main(out, steps, lr, init, eval_policy, *label_files):
  out, config = pathlib.Path(out), embedded.countdown_cpu()
  role = dataclasses.replace(config.prm, train=dataclasses.replace(
      config.prm.train, total_steps=int(steps), learning_rate=float(lr),
      checkpoint_every=int(steps), eval_every=int(steps),
      warmup_steps=min(config.prm.train.warmup_steps, int(steps))))
  exs = []
  for path in label_files:
    for r in embedded.load_rows(path):
      try:
        exs.append(labeling.prm_example_from_ids(
            r["prompt_ids"], r["steps"], r["step_labels"], role.row_len,
            embedded.TOKENIZER.bos_id))
      except examples.ExampleTooLongError:
        pass  # as the train_prm stage does
  (out / "work").mkdir(parents=True, exist_ok=True)
  model_config, params = checkpoint.restore(pathlib.Path(init) / "model")
  params = training.add_reward_head(params, model_config,
                                    jax.random.key(config.prm.train.seed))
  ctx = types.SimpleNamespace(name="prm_arm", work=out / "work", out=out,
                              log=print)
  embedded.train_role(ctx, model_config.replace(reward_head=True), role, exs,
                      params, "PRM")
  rows = embedded.load_rows(pathlib.Path(eval_policy) / "samples.json")
  _, verifier = evaluate.verifier_fns(
      out / "model", config.prompt_len + config.max_new_tokens)
  flat = [(r["prompt_ids"], s) for r in rows for s in r["samples"]]
  scores = evaluate.score_samples(
      verifier, [p for p, _ in flat], [s for _, s in flat], 256,
      embedded.step_ids(config.make_task()))
  per, at = [], 0
  for r in rows:
    per.append(scores[at:at + len(r["samples"])])
    at += len(r["samples"])
  embedded.save_rows(out / "scores.json", per)
  stages.atomic_write_json(out / "metrics.json",
                           evaluate.prm_metrics(rows, per))


if __name__ == "__main__":
  main(*sys.argv[1:])
