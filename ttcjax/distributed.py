"""Multi-host runs: initialise once, split the problems, gather the records.

A search or study on a multi-host slice (TPU v4-16 and up, v5e-16 and up,
several GPU hosts) runs one process per host. Each process

1. calls `maybe_initialize()` before touching any device: it starts
   `jax.distributed` when the environment says there are several processes
   and is a no-op on one host;
2. takes its contiguous share of the problems, `split_for_process(problems)`
   (problems are the data axis: no two processes search the same problem);
3. runs them on its local devices and `allgather`s its records (small,
   JSON-encodable python objects) so that `is_primary()` (process 0) writes
   the merged file, in the same order a single process would have.

Entry points define `--coordinator_address`, `--num_processes` and
`--process_id` with `define_flags()` and start with
`initialize_from_flags(...)`.

Where the process count comes from, first match wins:

* explicit arguments, or the environment variables `TTCJAX_COORDINATOR_ADDRESS`,
  `TTCJAX_NUM_PROCESSES`, `TTCJAX_PROCESS_ID`;
* a cluster JAX detects itself (Cloud TPU slices, GKE, SLURM, Open MPI):
  `jax.distributed.initialize()` with no arguments;
* Vertex AI's `CLUSTER_SPEC` (several replicas of GPU hosts): the first
  replica of `workerpool0` coordinates.

Objects cross processes as JSON, never pickle: records are dicts of
strings and numbers, and nothing a peer sends can run code here. They go
through the coordination service's key-value store (`jax.distributed`'s
own), not a device collective, so every wait is bounded: a process whose
data does not come within `$TTCJAX_COLLECTIVE_TIMEOUT_S` (default 600 s)
makes every live process raise `faults.HostTimeoutError` naming it (the
entry points exit 69), instead of waiting until JAX's runtime notices.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import zlib
from typing import Any, Mapping, Sequence, TypeVar

from absl import flags, logging
import jax
import numpy as np

from ttcjax import faults

T = TypeVar("T")

ENV_COORDINATOR = "TTCJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TTCJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "TTCJAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """Arguments of `jax.distributed.initialize`; None fields: autodetect."""
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  source: str  # where they came from, for the log

  def __post_init__(self):
    n, i = self.num_processes, self.process_id
    if n is not None and n < 1:
      raise ValueError(f"{self.source}: num_processes must be >= 1, got {n}")
    if n is not None and i is not None and not 0 <= i < n:
      raise ValueError(f"{self.source}: process_id={i} is not in "
                       f"[0, num_processes={n})")
    if n is not None and n > 1 and (self.coordinator_address is None
                                    or i is None):
      raise ValueError(f"{self.source}: num_processes={n} needs both a "
                       "coordinator address and a process id")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an "
                     "integer") from None


def vertex_spec(env: Mapping[str, str]) -> ProcessSpec | None:
  """The process layout of a Vertex AI custom job (`CLUSTER_SPEC`), if any.

  Replicas are numbered across worker pools in pool order; the first
  replica of `workerpool0` is the coordinator, at the address Vertex gives.
  """
  text = env.get("CLUSTER_SPEC")
  if not text:
    return None
  try:
    spec = json.loads(text)
    pools = spec["cluster"]
    task = spec["task"]
    names = sorted(pools)  # workerpool0 .. workerpool3
    offset = sum(len(pools[n]) for n in names[:names.index(task["type"])])
    return ProcessSpec(pools["workerpool0"][0],
                       sum(len(pools[n]) for n in names),
                       offset + int(task["index"]), "CLUSTER_SPEC")
  except (ValueError, KeyError, TypeError, IndexError) as e:
    raise ValueError(f"environment variable CLUSTER_SPEC is not a Vertex AI "
                     f"cluster spec ({type(e).__name__}: {e}): "
                     f"{text[:200]!r}") from None


def resolve(coordinator_address: str | None = None,
            num_processes: int | None = None, process_id: int | None = None,
            env: Mapping[str, str] | None = None) -> ProcessSpec | None:
  """The explicit process layout (arguments, then TTCJAX_* variables).

  Returns None when neither gives a process count.
  """
  env = os.environ if env is None else env
  if num_processes is not None:
    return ProcessSpec(coordinator_address, num_processes, process_id,
                       "maybe_initialize arguments")
  if _env_int(env, ENV_NUM_PROCESSES) is not None:
    return ProcessSpec(env.get(ENV_COORDINATOR) or None,
                       _env_int(env, ENV_NUM_PROCESSES),
                       _env_int(env, ENV_PROCESS_ID),
                       f"{ENV_NUM_PROCESSES} environment")
  return None


def _jax_detected_processes() -> int:
  """Processes of a cluster JAX recognises (TPU, GKE, SLURM, MPI); 1 if none.

  Uses JAX's own cluster detection (a private module, hence the guard): a
  single-host TPU VM reports 1, so it is not initialised needlessly.
  """
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
      if env.opt_in_only_method or not env.is_env_present():
        continue
      return int(env.get_process_count())
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("JAX cluster detection failed (%s); assuming one "
                    "process unless configured explicitly", e)
  return 1


def is_initialized() -> bool:
  """Whether `jax.distributed` is running in this process."""
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client is not None


def maybe_initialize(coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
  """Starts `jax.distributed` if this run has several processes.

  Call before any other JAX call that touches devices. Idempotent.

  Args:
    coordinator_address: `host:port` of process 0.
    num_processes: processes in the run; 1 makes this a no-op.
    process_id: this process's index.

  Returns:
    Whether the run is multi-process (and `jax.distributed` is running).

  Raises:
    ValueError: an explicit layout is incomplete or inconsistent; the
      message names where it came from.
  """
  if is_initialized():
    return jax.process_count() > 1
  spec = resolve(coordinator_address, num_processes, process_id)
  if spec is None and _jax_detected_processes() > 1:
    spec = ProcessSpec(None, None, None, "JAX cluster autodetection")
  if spec is None:
    spec = vertex_spec(os.environ)
  if spec is None or spec.num_processes == 1:
    return False
  logging.info("jax.distributed.initialize from %s: coordinator=%s, "
               "process %s of %s", spec.source, spec.coordinator_address,
               spec.process_id, spec.num_processes)
  jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                             num_processes=spec.num_processes,
                             process_id=spec.process_id)
  return True


def define_flags() -> tuple[flags.FlagHolder, flags.FlagHolder,
                            flags.FlagHolder]:
  """Defines --coordinator_address, --num_processes and --process_id.

  Each defaults to None: the layout then comes from the environment
  (`maybe_initialize`), and a run with nothing set is one process.
  """
  return (
      flags.DEFINE_string(
          "coordinator_address", None, "host:port of process 0 of a "
          f"multi-process run (default: ${ENV_COORDINATOR} or detected)."),
      flags.DEFINE_integer(
          "num_processes", None, "processes in the run (default: "
          f"${ENV_NUM_PROCESSES}, a detected cluster, or 1)."),
      flags.DEFINE_integer(
          "process_id", None, "this process's index in [0, num_processes) "
          f"(default: ${ENV_PROCESS_ID} or detected)."),
  )


def initialize_from_flags(holders: Sequence[flags.FlagHolder]) -> bool:
  """`maybe_initialize` with the values of `define_flags()`'s flags.

  Raises:
    ValueError: --coordinator_address or --process_id without
      --num_processes (they would be ignored), or an inconsistent layout.
  """
  address, num, index = (h.value for h in holders)
  if num is None and (address is not None or index is not None):
    raise ValueError("--coordinator_address and --process_id need "
                     "--num_processes")
  return maybe_initialize(address, num, index)


def is_primary() -> bool:
  """Whether this is process 0, the one that writes records and metadata."""
  return jax.process_index() == 0


def shard_bounds(num_items: int, index: int, count: int) -> tuple[int, int]:
  """`[start, stop)` of shard `index` of `count` contiguous shards.

  The first `num_items % count` shards hold one item more (as
  `numpy.array_split`); shards past the items are empty.
  """
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"shard {index} of {count} does not exist")
  base, extra = divmod(num_items, count)
  start = index * base + min(index, extra)
  return start, start + base + (index < extra)


def split_for_process(items: Sequence[T], process_index: int | None = None,
                      process_count: int | None = None) -> list[T]:
  """This process's contiguous share of `items` (default: from JAX).

  Concatenating every process's share in process order gives `items` back.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  start, stop = shard_bounds(len(items), index, count)
  return list(items[start:stop])


def _encode(obj: Any) -> np.ndarray:
  try:
    text = json.dumps(obj, sort_keys=True, allow_nan=True)
  except TypeError as e:
    raise TypeError(f"allgather sends JSON; {e}") from None
  return np.frombuffer(text.encode("utf-8"), np.uint8)


ENV_COLLECTIVE_TIMEOUT = "TTCJAX_COLLECTIVE_TIMEOUT_S"
COLLECTIVE_TIMEOUT_S = 600.0
_collectives = itertools.count()  # the same sequence on every process


def collective_timeout_s(env: Mapping[str, str] | None = None) -> float:
  """Seconds a process waits for the others at a gather or barrier:
  `$TTCJAX_COLLECTIVE_TIMEOUT_S`, default 600. It must exceed the longest
  time one process can legitimately be behind the others (a search batch
  of the slowest host while another host has none)."""
  env = os.environ if env is None else env
  value = env.get(ENV_COLLECTIVE_TIMEOUT)
  if value in (None, ""):
    return COLLECTIVE_TIMEOUT_S
  try:
    seconds = float(value)
  except ValueError:
    seconds = -1.0
  if not seconds > 0:
    raise ValueError(f"environment variable {ENV_COLLECTIVE_TIMEOUT}="
                     f"{value!r} must be a positive number of seconds")
  return seconds


_PIECE = 1 << 20  # bytes per coordination-service value (gRPC limit: 4 MiB)


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def _exchange(payload: bytes, what: str,
              timeout_s: float | None = None) -> list[bytes]:
  """Every process's `payload`, in process order, through the coordination
  service's key-value store, each wait bounded by the collective timeout.

  A process that dies after publishing its payload still counts (the next
  collective notices it); one that never publishes is named.

  Raises:
    faults.HostTimeoutError: naming the processes whose payload did not come.
  """
  client, count = _client(), jax.process_count()
  me = jax.process_index()
  timeout_s = collective_timeout_s() if timeout_s is None else timeout_s
  n = next(_collectives)
  prefix = f"ttcjax/gather/{n}"
  pieces = [payload[i:i + _PIECE] for i in range(0, len(payload), _PIECE)]
  client.key_value_set(f"{prefix}/{me}/count", str(len(pieces)))
  for i, piece in enumerate(pieces):
    client.key_value_set_bytes(f"{prefix}/{me}/{i}", piece)
  client.key_value_set(f"{prefix}/{me}/done", "1")
  deadline = time.monotonic() + timeout_s
  out, missing = [], []
  for p in range(count):
    if p == me:
      out.append(payload)
      continue
    try:
      left = max(1, int((deadline - time.monotonic()) * 1000))
      client.blocking_key_value_get(f"{prefix}/{p}/done", left)
      parts = int(client.key_value_try_get(f"{prefix}/{p}/count"))
      out.append(b"".join(client.key_value_try_get_bytes(f"{prefix}/{p}/{i}")
                          for i in range(parts)))
    except Exception as e:  # pylint: disable=broad-except  # DEADLINE, gone
      logging.error("%s: no data from process %d within %g s: %s", what, p,
                    timeout_s, e)
      missing.append(p)
  if missing:
    raise faults.HostTimeoutError(f"{what} (collective #{n}, process {me})",
                                  missing, timeout_s)
  # Everyone has read collective n-1 by now (they all published n).
  if n:
    try:
      # Deletes the key and every key under it.
      client.key_value_delete(f"ttcjax/gather/{n - 1}/{me}")
    except Exception:  # pylint: disable=broad-except
      pass
  return out


def allgather(obj: Any) -> list[Any]:
  """Every process's `obj`, in process order (a JSON round trip each).

  Collective: every process must call it, in the same order. Meant for
  records and counters (kilobytes to megabytes), not arrays. Bounded: a
  process whose data does not arrive within `collective_timeout_s()` makes
  every other raise `faults.HostTimeoutError` naming it.
  """
  data = _encode(obj)
  if jax.process_count() == 1:
    return [json.loads(data.tobytes())]
  return [json.loads(part) for part in _exchange(data.tobytes(), "allgather")]


def gather_to_primary(obj: Any) -> list[Any] | None:
  """Every process's `obj` on process 0 (in order); None elsewhere.

  Collective, like `allgather` (which it is, keeping only the primary's).
  """
  gathered = allgather(obj)
  return gathered if is_primary() else None


def gather_items(items: Sequence[Any]) -> list[Any] | None:
  """Concatenates every process's list on process 0; None elsewhere.

  With `split_for_process`, the primary gets records in the order of the
  items a single process would have produced.
  """
  parts = gather_to_primary(list(items))
  return None if parts is None else [x for part in parts for x in part]


def broadcast_from_primary(obj: Any) -> Any:
  """Process 0's `obj` on every process (a JSON round trip; `obj` itself on
  one process). Collective, like `allgather`; other processes' `obj` is
  ignored (pass None)."""
  if jax.process_count() == 1:
    return obj
  return allgather(obj if is_primary() else None)[0]


def sync(name: str) -> None:
  """Barrier across processes (no-op on one); every process passes `name`.

  Raises:
    RuntimeError: processes reached different barriers.
    faults.HostTimeoutError: a process did not arrive in time.
  """
  if jax.process_count() == 1:
    return
  names = _exchange(str(zlib.crc32(name.encode())).encode(),
                    f"sync({name!r})")
  if len(set(names)) > 1:
    raise RuntimeError(f"sync({name!r}): processes reached different "
                       "barriers")
