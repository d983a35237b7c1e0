"""Training: losses, optax chain, sharded train step, checkpoints, metrics.

Knows nothing about tasks: it trains on batches that follow one contract.

Batch contract
--------------
A batch is a dict of numpy arrays; rows are examples, right-padded to a
common length L:

* `tokens [b, L] int32`: token ids (padding ids are never read as targets).
* `token_mask [b, L] bool`: True on real tokens.
* `loss_weights [b, L] float32` (objective 'lm'): weight of predicting
  `tokens[:, i]` from `tokens[:, :i]`; 0 on the prompt and on padding, and
  always 0 at position 0 (nothing predicts it).
* `reward_targets [b, L] float32`, `reward_weights [b, L] float32`
  (objective 'reward'): the reward head's soft label at each position and its
  weight. PRM: Monte-Carlo labels in [0, 1] at step-end positions, weight 1
  there and 0 elsewhere; ORM: the outcome label at the last real token only.
* `segment_ids [b, L] int32`, `positions [b, L] int32` (optional, both or
  neither): packed rows (`ttcjax.data.packing.pack`), several examples per
  row; attention and the LM loss stay within a segment, and positions
  restart at 0 for each. Absent: one example per row.

Other keys are ignored. All train batches should share one shape (each new
shape compiles a new step), with b divisible by the mesh's data * fsdp (else
the batch is replicated). Batches are global: on a multi-host mesh every
process must return the same batch for a step (it is placed with
`jax.device_put`).

Sources
-------
A `BatchSource` has `get(step) -> batch`, deterministic in `step`; a run
resumed from a checkpoint at step k simply continues with `get(k)`.
`ArraySource` serves in-memory arrays in per-epoch shuffled order.

Entry point
-----------
`train(model_config, train_config, train_source, eval_source, workdir)`
returns `(params, history)` and writes `workdir/final` (a `ttcjax.checkpoint`
that later stages load with `ttcjax.checkpoint.restore`).

This package imports neither TensorFlow nor clu; they load only when a run
writes TensorBoard summaries (`TrainConfig.write_tensorboard`).
"""

from ttcjax.training.checkpoints import Progress, TrainCheckpoints
from ttcjax.training.config import TrainConfig
from ttcjax.training.losses import (lm_loss, loss_fn, reward_loss,
                                    weighted_cross_entropy,
                                    weighted_sigmoid_bce)
from ttcjax.training.metrics import create_writer
from ttcjax.training.optimizers import (decay_mask, learning_rate_schedule,
                                        make_optimizer)
from ttcjax.training.sources import ArraySource, BatchSource, check_batch
from ttcjax.training.train_state import (TrainState, abstract_state,
                                         add_reward_head, check_params,
                                         state_shardings)
from ttcjax.training.trainer import batch_keys, evaluate, train

__all__ = [
    "ArraySource", "BatchSource", "Progress", "TrainCheckpoints",
    "TrainConfig", "TrainState", "abstract_state", "add_reward_head",
    "batch_keys", "check_batch", "check_params", "create_writer",
    "decay_mask", "evaluate", "learning_rate_schedule", "lm_loss", "loss_fn",
    "make_optimizer", "reward_loss", "state_shardings", "train",
    "weighted_cross_entropy", "weighted_sigmoid_bce",
]
