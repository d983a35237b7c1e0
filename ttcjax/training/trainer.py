"""The training loop: sharded jitted steps, eval, early stopping, resume.

`train` is resumable and exact: the data of step s is `train_source.get(s)`,
the state (params, optimizer state, step) and the early-stopping bookkeeping
are checkpointed together, and the compiled step is deterministic, so a run
killed after a checkpoint and restarted reproduces the uninterrupted run's
losses and parameters bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttcjax import checkpoint, faults, models, partitioning, preemption
from ttcjax.data import packing
from ttcjax.training import metrics as metrics_lib
from ttcjax.training.checkpoints import Progress, TrainCheckpoints
from ttcjax.training.config import TrainConfig
from ttcjax.training.losses import OBJECTIVE_KEYS, SEGMENT_KEYS, loss_fn
from ttcjax.training.optimizers import learning_rate_schedule, make_optimizer
from ttcjax.training.sources import BatchSource, check_batch
from ttcjax.training.train_state import (TrainState, abstract_state,
                                         check_params, state_shardings)

Params = Any
_DTYPES = {"tokens": np.int32, "token_mask": np.bool_,
           "segment_ids": np.int32, "positions": np.int32}  # others: float32


def batch_keys(objective: str) -> tuple[str, ...]:
  """The batch entries the step of `objective` reads (the segment keys are
  filled in, one segment per row, for batches that are not packed)."""
  return ("tokens", "token_mask") + OBJECTIVE_KEYS[objective] + SEGMENT_KEYS


def _row_sharding(mesh: Mesh, rows: int) -> NamedSharding:
  return partitioning.row_sharding(
      jax.ShapeDtypeStruct((rows, 1), jnp.int32), mesh)


def _activated(fn, mesh: Mesh):
  """`fn` called under `partitioning.activate(mesh)`.

  Only the jitted calls run with the mesh active: while a mesh is set,
  flax's `nn.unbox` (which `param_shardings` and `ttcjax.checkpoint` apply
  to `abstract_params`) fails on shape structs.
  """

  @functools.wraps(fn)
  def wrapped(*args):
    with partitioning.activate(mesh):
      return fn(*args)

  return wrapped


@functools.cache
def _train_step_fn(model_config: models.ModelConfig, step_config: TrainConfig,
                   mesh: Mesh, rows: int):
  """The jitted `(state, batch) -> (state, metrics)`, donating `state`.

  Cached, so runs with the same shapes (a resumed run, a second run in one
  process) reuse one compiled program.
  """
  optimizer = make_optimizer(step_config)
  schedule = learning_rate_schedule(step_config)
  loss = loss_fn(step_config.objective)

  def step(state: TrainState, batch):
    grad_fn = jax.value_and_grad(lambda p: loss(model_config, p, batch),
                                 has_aux=True)
    (_, metrics), grads = grad_fn(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step),
               "tokens": jnp.sum(batch["token_mask"].astype(jnp.int32))}
    return TrainState(step=state.step + 1, params=params,
                      opt_state=opt_state), metrics

  shardings = state_shardings(model_config, optimizer, mesh)
  rows_sharding = _row_sharding(mesh, rows)
  batch_shardings = {k: rows_sharding
                     for k in batch_keys(step_config.objective)}
  return _activated(
      jax.jit(step, in_shardings=(shardings, batch_shardings),
              out_shardings=(shardings, NamedSharding(mesh, P())),
              donate_argnums=0), mesh)


@functools.cache
def _eval_step_fn(model_config: models.ModelConfig, objective: str,
                  mesh: Mesh, rows: int):
  """The jitted `(params, batch) -> metrics`."""
  loss = loss_fn(objective)
  rows_sharding = _row_sharding(mesh, rows)
  return _activated(jax.jit(
      lambda params, batch: loss(model_config, params, batch)[1],
      in_shardings=(partitioning.param_shardings(model_config, mesh),
                    {k: rows_sharding for k in batch_keys(objective)}),
      out_shardings=NamedSharding(mesh, P())), mesh)


def _device_batch(batch, objective: str, mesh: Mesh):
  """The entries `objective` reads, cast and placed rows over data/fsdp."""
  batch = packing.with_segments(batch)
  host = {k: np.asarray(batch[k], _DTYPES.get(k, np.float32))
          for k in batch_keys(objective)}
  sharding = _row_sharding(mesh, host["tokens"].shape[0])
  return jax.device_put(host, {k: sharding for k in host})


def _initial_state(model_config, train_config, optimizer, mesh, init_params):
  """Step 0: random params (seeded) or a copy of `init_params`, on the mesh."""
  shardings = state_shardings(model_config, optimizer, mesh)
  if init_params is None:
    # The lm1b recipe: initialise straight into the shardings.
    init = jax.jit(
        lambda key: TrainState.create(models.init_params(model_config, key),
                                      optimizer),
        out_shardings=shardings)
    return init(jax.random.key(train_config.seed))
  check_params(init_params, model_config)
  params = partitioning.shard_params(init_params, model_config, mesh)
  # A copy, so donating the state never deletes the caller's arrays.
  create = jax.jit(
      lambda p: TrainState.create(jax.tree.map(jnp.copy, p), optimizer),
      in_shardings=(shardings.params,), out_shardings=shardings)
  return create(params)


def evaluate(model_config: models.ModelConfig, objective: str, params: Params,
             source: BatchSource, num_batches: int,
             mesh: Mesh) -> dict[str, float]:
  """Weight-averaged loss and accuracy over `source.get(0 .. num_batches-1)`.

  Batches count by their weight sums, so this is the mean over every
  weighted token (or reward position) of the eval set.

  Returns:
    `{'eval_loss': float, 'eval_accuracy': float}`.
  """
  results = []
  for i in range(num_batches):
    batch = source.get(i)
    if i == 0:
      check_batch(batch, objective, "eval_source.get(0)")
    fn = _eval_step_fn(model_config, objective, mesh,
                       int(np.shape(batch["tokens"])[0]))
    results.append(fn(params, _device_batch(batch, objective, mesh)))
  results = jax.device_get(results)
  weights = np.array([r["weight_sum"] for r in results], np.float64)
  total = max(weights.sum(), 1e-30)
  return {f"eval_{k}": float(np.sum(weights * [r[k] for r in results]) /
                             total)
          for k in ("loss", "accuracy")}


def train(model_config: models.ModelConfig, train_config: TrainConfig,
          train_source: BatchSource, eval_source: BatchSource | None,
          workdir: epath.PathLike, mesh: Mesh | None = None,
          init_params: Params | None = None,
          on_log: Callable[[dict[str, Any], float], None] | None = None
          ) -> tuple[Params, list[dict[str, Any]]]:
  """Trains (or resumes training) a model and writes its final checkpoint.

  Writes into `workdir`: `checkpoints/<step>/` (resume points, the latest
  `keep_checkpoints`), `metrics.jsonl` (one record per logged step),
  TensorBoard events (if `write_tensorboard`), `best/` (params of the best
  eval, when early stopping is on) and `final/` (a `ttcjax.checkpoint` of
  the returned params, for the next stage).

  If `workdir/checkpoints` holds a checkpoint, training continues from the
  latest one (records after it in metrics.jsonl are dropped: the resumed run
  writes them again); a finished run only rewrites `final/`.

  Args:
    model_config: the model; `reward_head=True` for objective 'reward'.
    train_config: optimisation and loop settings.
    train_source: `get(step)` gives the batch of step (see the batch contract
      in `ttcjax.training`); batch rows should divide by data * fsdp.
    eval_source: `get(i)` for i < eval_batches gives the eval set; None skips
      evaluation (early stopping must then be off).
    workdir: output directory (created).
    mesh: `(data, fsdp, model)` mesh; default the first device alone.
    init_params: start from these params (e.g. a policy, or a policy plus
      `add_reward_head`) instead of a random init seeded by
      `train_config.seed`. Ignored when resuming. Not donated.
    on_log: called with each metrics record written (every `log_every`
      steps, evals and checkpoints) and the seconds per step since the
      last one, e.g. for a console progress line.

  Returns:
    `(params, history)`: with early stopping on, the params of the best
    eval (the lowest eval loss, earliest on ties); otherwise the params after
    the last step. `history` is every metrics record of the run, resumed
    parts included.
  """
  cfg = train_config
  if cfg.objective == "reward" and not model_config.reward_head:
    raise ValueError("TrainConfig.objective='reward' needs "
                     "ModelConfig.reward_head=True")
  if cfg.early_stopping_patience is not None and eval_source is None:
    raise ValueError("TrainConfig.early_stopping_patience is set but "
                     "eval_source is None")
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if mesh is None:
    mesh = partitioning.make_mesh(partitioning.MeshConfig(data=1),
                                  jax.devices()[:1])
  optimizer = make_optimizer(cfg)
  ckpts = TrainCheckpoints(workdir / "checkpoints", cfg.keep_checkpoints)
  records = metrics_lib.MetricsFile(workdir)
  writer = metrics_lib.create_writer(workdir, cfg.write_tensorboard)
  try:
    latest = ckpts.latest_step()
    if latest is None:
      state = _initial_state(model_config, cfg, optimizer, mesh, init_params)
      progress = Progress()
      history = records.truncate(0)
    else:
      logging.info("resuming from %s/checkpoints/%d", workdir, latest)
      state, progress = ckpts.restore(
          latest, abstract_state(model_config, optimizer, mesh))
      history = records.truncate(latest)
    state, progress = _loop(model_config, cfg, train_source, eval_source,
                            workdir, mesh, state, progress, ckpts, records,
                            writer, history, on_log)
    with faults.writing(ckpts.directory):
      ckpts.wait()
    params, step = state.params, int(state.step)
    if (cfg.early_stopping_patience is not None and
        progress.best_step is not None):
      _, params = checkpoint.restore(
          workdir / "best",
          shardings=jax.tree.map(lambda x: x.sharding, state.params))
      step = progress.best_step
    with faults.writing(workdir / "final"):
      checkpoint.save(workdir / "final", params, model_config, step=step,
                      overwrite=True)
  finally:
    ckpts.close()
    writer.close()
  return params, history


def _loop(model_config, cfg, train_source, eval_source, workdir, mesh, state,
          progress, ckpts, records, writer, history, on_log=None):
  """Runs steps from `state.step` to `total_steps` or early stopping.

  After step s: evaluate (every eval_every and at the end), write a record
  (every log_every, and at every eval and checkpoint, so a resumed run's
  records average over the same steps), checkpoint (every checkpoint_every,
  at the end, and when early stopping fires).
  """
  step = int(state.step)
  throughput = metrics_lib.Throughput(step)
  # Per-step metrics since the last record (a preemption checkpoint between
  # two records carries them over).
  pending = [_metrics_from_host(m) for m in progress.pending]
  progress.pending = []
  step_fn = None
  while step < cfg.total_steps and not progress.stopped:
    batch = train_source.get(step)
    if step_fn is None:
      check_batch(batch, cfg.objective, f"train_source.get({step})")
      rows = int(np.shape(batch["tokens"])[0])
      if rows % (mesh.shape["data"] * mesh.shape["fsdp"]):
        logging.warning("batch rows %d do not divide over data x fsdp = %d x "
                        "%d devices: every device gets the whole batch", rows,
                        mesh.shape["data"], mesh.shape["fsdp"])
      step_fn = _train_step_fn(model_config, cfg.step_key(), mesh, rows)
    state, step_metrics = step_fn(state,
                                  _device_batch(batch, cfg.objective, mesh))
    step += 1
    pending.append(step_metrics)

    evals = {}
    if eval_source is not None and (step % cfg.eval_every == 0 or
                                    step == cfg.total_steps):
      evals = evaluate(model_config, cfg.objective, state.params, eval_source,
                       cfg.eval_batches, mesh)
      improved = progress.update(step, evals["eval_loss"],
                                 cfg.early_stopping_patience)
      if improved and cfg.early_stopping_patience is not None:
        with faults.writing(workdir / "best"):
          checkpoint.save(workdir / "best", state.params, model_config,
                          step=step, overwrite=True)
    save = (step % cfg.checkpoint_every == 0 or step == cfg.total_steps or
            progress.stopped)
    if evals or save or step % cfg.log_every == 0:
      summary = metrics_lib.summarize(pending)
      pending = []
      tokens_per_sec, seconds_per_step = throughput.update(
          step, summary["tokens"])
      record = {"step": step, **summary, "tokens_per_sec": tokens_per_sec,
                **evals}
      history.append(record)
      with faults.writing(records.path):
        records.append(record)
      writer.write_scalars(step, {k: v for k, v in record.items()
                                  if k != "step"})
      logging.info("%s", metrics_lib.log_line(record, cfg.total_steps,
                                              seconds_per_step))
      if on_log is not None:
        on_log(record, seconds_per_step)
    if save:
      # The checkpoint directory, not the step: orbax saves asynchronously,
      # so a failed write of an earlier step may surface here.
      with faults.writing(ckpts.directory):
        ckpts.save(step, state, progress)
      writer.flush()
    # Called at every step: with several processes it is JAX's preemption
    # sync point, which every host must reach with the same steps.
    if preemption.should_stop(step) and step < cfg.total_steps:
      _save_for_preemption(step, state, progress, pending, ckpts, save)
      writer.flush()
      raise preemption.Preempted(
          f"train state of step {step}/{cfg.total_steps} saved in "
          f"{ckpts.directory / str(step)}")
  return state, progress


def _metrics_from_host(m: dict[str, Any]) -> dict[str, Any]:
  """A stored per-step metrics dict with the device dtypes back (float32
  means stay bit-identical to an uninterrupted run's)."""
  return {k: np.asarray(v, np.int32 if k == "tokens" else np.float32)
          for k, v in m.items()}


def _save_for_preemption(step, state, progress, pending, ckpts, saved):
  """Saves `step` (unless its regular checkpoint just did) with the
  pending metrics, and waits until it is on disk."""
  if not saved:
    progress.pending = [
        {k: v.item() for k, v in m.items()}
        for m in jax.device_get(pending)]
    with faults.writing(ckpts.directory):
      ckpts.save(step, state, progress)
    progress.pending = []
  with faults.writing(ckpts.directory):
    ckpts.wait()
  logging.warning("preempted: saved the train state of step %d in %s", step,
                  ckpts.directory)
