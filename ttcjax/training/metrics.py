"""Metric records: metrics.jsonl, TensorBoard (via clu) and the log line.

A record is a flat dict written at a step: `step`, the means of the per-step
train metrics since the previous record (`loss`, `accuracy`, `grad_norm`),
`learning_rate` of the last update, `tokens_per_sec`, and `eval_loss` /
`eval_accuracy` when an eval ran at that step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import numpy as np
from etils import epath

METRICS_FILE = "metrics.jsonl"
Record = dict[str, Any]


class NullWriter:
  """Stands in for a clu `MetricWriter` when TensorBoard is off."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def create_writer(workdir: epath.PathLike, tensorboard: bool):
  """A clu metric writer (TensorBoard + logging) or a `NullWriter`.

  TensorFlow is imported here and only here, so `import ttcjax.training`
  stays light.
  """
  if not tensorboard:
    return NullWriter()
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "TrainConfig.write_tensorboard=True needs clu and tensorflow "
        "(pip install 'ttcjax[data]'); or set write_tensorboard=False") from e
  return metric_writers.create_default_writer(
      os.fspath(workdir), just_logging=jax.process_index() > 0)


class MetricsFile:
  """`workdir/metrics.jsonl`: one JSON record per line, steps increasing."""

  def __init__(self, workdir: epath.PathLike):
    self.path = epath.Path(workdir) / METRICS_FILE
    self.primary = jax.process_index() == 0

  def read(self) -> list[Record]:
    """All records; a torn last line (killed mid-write) is ignored."""
    if not self.path.exists():
      return []
    records = []
    for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        logging.warning("%s:%d: skipping unreadable record", self.path, lineno)
    return records

  def truncate(self, step: int) -> list[Record]:
    """Drops records after `step` (written after the checkpoint resumed from).

    Returns:
      The records kept, which a resumed run's history starts with.
    """
    kept = [r for r in self.read() if r["step"] <= step]
    if self.primary and self.path.exists():
      tmp = self.path.parent / f".{self.path.name}.tmp"
      tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
      tmp.replace(self.path)
    return kept

  def append(self, record: Record) -> None:
    if self.primary:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def summarize(step_metrics: Sequence[Mapping[str, Any]]) -> Record:
  """Means of per-step train metrics, fetched from device in one transfer.

  `learning_rate` is the last step's; `tokens` is summed.
  """
  fetched = jax.device_get(list(step_metrics))
  out = {}
  for key in ("loss", "accuracy", "grad_norm"):
    out[key] = float(np.mean(np.stack([m[key] for m in fetched])))
  out["learning_rate"] = float(fetched[-1]["learning_rate"])
  out["tokens"] = int(sum(int(m["tokens"]) for m in fetched))
  return out


class Throughput:
  """Tokens per second and time per step between records."""

  def __init__(self, start_step: int):
    self.last_time = time.perf_counter()
    self.last_step = start_step

  def update(self, step: int, tokens: int) -> tuple[float, float]:
    """Returns (tokens_per_sec, seconds_per_step) since the last update."""
    now = time.perf_counter()
    elapsed = max(now - self.last_time, 1e-9)
    steps = max(step - self.last_step, 1)
    self.last_time, self.last_step = now, step
    return tokens / elapsed, elapsed / steps


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


def log_line(record: Record, total_steps: int, seconds_per_step: float) -> str:
  """'step N/T loss x lr y tok/s z eta h:mm:ss [eval_loss e]'."""
  eta = _duration((total_steps - record["step"]) * seconds_per_step)
  line = (f"step {record['step']}/{total_steps} loss {record['loss']:.4f} "
          f"lr {record['learning_rate']:.3g} "
          f"tok/s {record['tokens_per_sec']:.4g} eta {eta}")
  if "eval_loss" in record:
    line += f" eval_loss {record['eval_loss']:.4f}"
  return line
