"""Launch flags -> one job per sweep point: its image, accelerator and argv.

Everything here is pure python and tested without xmanager or a cloud:

* `rewrite_gin_args`: `--gin.NAME=VALUE` on the launcher's command line
  becomes `--gin_bindings=NAME = VALUE` (VALUE is gin text, forwarded
  unchanged), as t5x launchers do;
* `gin_binding` / `gin_literal`: a sweep's python values as gin text
  (strings with spaces and both quote kinds, lists, dicts, references);
* `make_config`: validates the flags, naming the first one missing
  (`--entry`, `--workdir`, an accelerator, `--image`) before anything is
  built;
* `build_jobs`: one `Job` per sweep point, each with its own workdir;
* `encode_argv` / `decode_argv`: the job's argv as ONE shell-safe token for
  the container. XManager's Vertex executor shell-quotes every argument and
  hands the list to the image's entrypoint without a shell, so an argument
  with a space or a quote would arrive with literal quote characters; a
  base64 token has neither and arrives intact however it is passed.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import shlex
from typing import Any, Mapping, Sequence

from launch import accelerators

ENTRIES = ("train", "search", "study")
ARGV_FLAG = "--ttcjax_argv"
GCS_FUSE_ROOT = "/gcs"


class LaunchError(ValueError):
  """A launch flag is missing or wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class GinRaw:
  """Gin text used as is: a reference `@f()`, a macro `%X`, a constant."""
  text: str


def gin_literal(value: Any) -> str:
  """A python value as gin text that parses back to the same value.

  Strings use python's literal syntax (gin reads it back with the same
  escapes), so spaces, newlines and both quote kinds survive. Lists,
  tuples and dicts recurse; `GinRaw` passes through.
  """
  if isinstance(value, GinRaw):
    return value.text
  if value is None or isinstance(value, bool):
    return repr(value)
  if isinstance(value, int):
    return repr(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      raise LaunchError(f"gin has no literal for {value!r}")
    return repr(value)
  if isinstance(value, str):
    return repr(value)
  if isinstance(value, list):
    return "[" + ", ".join(gin_literal(v) for v in value) + "]"
  if isinstance(value, tuple):
    inner = ", ".join(gin_literal(v) for v in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"
  if isinstance(value, Mapping):
    return "{" + ", ".join(f"{gin_literal(k)}: {gin_literal(v)}"
                           for k, v in value.items()) + "}"
  raise LaunchError(f"no gin literal for {type(value).__name__} {value!r}")


_BINDING_NAME = re.compile(r"[A-Za-z_][\w./]*")


def gin_binding(name: str, value: Any) -> str:
  """`NAME = <gin literal of value>`, for one `--gin_bindings` flag."""
  if not _BINDING_NAME.fullmatch(name):
    raise LaunchError(f"gin binding name {name!r} is not a gin selector "
                      "(e.g. 'search.SearchRun.seed' or 'BUDGETS')")
  return f"{name} = {gin_literal(value)}"


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE`; the rest as is.

  VALUE is already gin text (`--gin.TEMPERATURE=0.7`,
  `--gin.search.ProblemSource.path="'/gcs/b/test.jsonl'"`). Arguments after
  a bare `--` are left alone.
  """
  out, passthrough = [], False
  for arg in argv:
    if passthrough or arg == "--":
      passthrough = True
      out.append(arg)
      continue
    if arg.startswith("--gin."):
      name, eq, value = arg[len("--gin."):].partition("=")
      if not eq or not name:
        raise LaunchError(f"{arg!r}: expected --gin.NAME=VALUE")
      out.append(f"--gin_bindings={name} = {value}")
    else:
      out.append(arg)
  return out


def encode_argv(entry: str, argv: Sequence[str]) -> str:
  """`--ttcjax_argv=<token>`: entry and argv as one shell-safe argument."""
  payload = json.dumps({"entry": entry, "argv": list(argv)},
                       separators=(",", ":")).encode("utf-8")
  token = base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")
  return f"{ARGV_FLAG}={token}"


def decode_argv(arg: str) -> tuple[str, list[str]]:
  """Inverse of `encode_argv`."""
  prefix = ARGV_FLAG + "="
  if not arg.startswith(prefix):
    raise LaunchError(f"expected {prefix}<token>, got {arg[:40]!r}")
  token = arg[len(prefix):]
  try:
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token)
                                                                % 4)))
    entry, argv = payload["entry"], payload["argv"]
  except (ValueError, KeyError, TypeError) as e:
    raise LaunchError(f"{ARGV_FLAG}: not a launcher token ({e})") from None
  if entry not in ENTRIES or not all(isinstance(a, str) for a in argv):
    raise LaunchError(f"{ARGV_FLAG}: bad entry {entry!r} or argv")
  return entry, list(argv)


def gcs_fuse_path(path: str) -> str:
  """`gs://bucket/dir` -> `/gcs/bucket/dir`, where Vertex AI mounts buckets
  (Cloud Storage FUSE), so code that uses `open()` reads and writes GCS."""
  if not path.startswith("gs://"):
    return path
  return f"{GCS_FUSE_ROOT}/{path[len('gs://'):]}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LaunchConfig:
  """Validated launcher flags (see `make_config`)."""
  entry: str
  workdir: str
  accelerator: accelerators.Accelerator
  image: str
  gin_files: tuple[str, ...] = ()
  gin_bindings: tuple[str, ...] = ()
  extra_args: tuple[str, ...] = ()
  name: str = "ttcjax"
  gcs_fuse: bool = True


def make_config(*, entry: str | None, workdir: str | None,
                image: str | None, tpu: str | None = None,
                tpu_topology: str | None = None, gpu_type: str | None = None,
                gpu_count: int | None = None, gin_files: Sequence[str] = (),
                gin_bindings: Sequence[str] = (),
                extra_args: Sequence[str] = (), name: str | None = None,
                gcs_fuse: bool = True) -> LaunchConfig:
  """Validates launcher flags; the error names the first flag at fault.

  Raises:
    LaunchError: `--entry`, `--workdir`, the accelerator or `--image` is
      missing or malformed.
  """
  if not entry:
    raise LaunchError(f"--entry is required: one of {', '.join(ENTRIES)}")
  if entry not in ENTRIES:
    raise LaunchError(f"--entry={entry!r}: expected one of "
                      f"{', '.join(ENTRIES)}")
  if not workdir:
    raise LaunchError("--workdir is required: a gs://bucket/path the jobs "
                      "write their records, checkpoints and config to")
  if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?",
                      workdir):
    raise LaunchError(f"--workdir={workdir!r}: must be on GCS, "
                      "gs://<bucket>/<path> (a bucket name has 3-222 "
                      "lowercase letters, digits, '.', '_' or '-')")
  try:
    accel = accelerators.from_flags(tpu, tpu_topology, gpu_type, gpu_count)
  except accelerators.AcceleratorError as e:
    raise LaunchError(str(e)) from None
  if not image:
    raise LaunchError("--image is required: the container to run, e.g. "
                      "us-docker.pkg.dev/<project>/<repo>/ttcjax:"
                      f"{accel.image_variant} (see launch/README.md)")
  for flag in gin_bindings:
    if "=" not in flag:
      raise LaunchError(f"--gin_bindings={flag!r}: expected 'NAME = VALUE'")
  return LaunchConfig(entry=entry, workdir=workdir.rstrip("/"),
                      accelerator=accel, image=image,
                      gin_files=tuple(gin_files),
                      gin_bindings=tuple(gin_bindings),
                      extra_args=tuple(extra_args),
                      name=name or f"ttcjax-{entry}", gcs_fuse=gcs_fuse)


@dataclasses.dataclass(frozen=True)
class Job:
  """One work unit: a container run of `python -m ttcjax.main.<entry>`.

  Attributes:
    name: display name (experiment name plus work-unit label).
    entry: entry point under `ttcjax.main`.
    image: container image.
    accelerator: what it runs on.
    workdir: where it writes, as the user gave it (gs://).
    argv: the entry point's arguments, exactly as it will see them.
    point: the sweep point's bindings (empty without a sweep).
  """
  name: str
  entry: str
  image: str
  accelerator: accelerators.Accelerator
  workdir: str
  argv: tuple[str, ...]
  point: Mapping[str, Any]

  @property
  def command(self) -> list[str]:
    """What runs in the container, as an argv list."""
    return ["python", "-m", f"ttcjax.main.{self.entry}", *self.argv]

  def shell_command(self) -> str:
    """`command` quoted for a POSIX shell (copy-paste to run locally)."""
    return shlex.join(self.command)

  def container_args(self) -> list[str]:
    """Arguments to the image's entrypoint (`launch/entrypoint.py`)."""
    return [encode_argv(self.entry, self.argv)]

  def vertex_custom_job(self) -> dict:
    """The Vertex AI `CustomJob` body (what `gcloud ai custom-jobs create
    --config` takes): one worker pool, the accelerator and the container."""
    pool = self.accelerator.vertex_machine_spec()
    pool["containerSpec"] = {"imageUri": self.image,
                             "args": self.container_args()}
    return {"displayName": self.name, "jobSpec": {"workerPoolSpecs": [pool]}}


def _slug(point: Mapping[str, Any]) -> str:
  """A short filesystem-safe label of a sweep point: `budgets=64,seed=0`."""
  parts = []
  for name, value in point.items():
    text = value if isinstance(value, str) else gin_literal(value)
    text = re.sub(r"@(\w+)/[\w.]+\(\)", r"\1", text)  # scoped reference
    parts.append(f"{name.rsplit('.', 1)[-1]}={text.strip('[]()')}")
  return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", ",".join(parts))[:80].strip("-")


def job_argv(config: LaunchConfig, workdir: str,
             point: Mapping[str, Any]) -> tuple[str, ...]:
  """The entry point's argv: workdir, gin files, bindings, sweep, extras.

  Sweep bindings come after the user's, so a sweep point overrides a
  `--gin_bindings` of the same name (gin keeps the last binding).
  """
  workdir = gcs_fuse_path(workdir) if config.gcs_fuse else workdir
  argv = [f"--workdir={workdir}"]
  argv += [f"--gin_file={f}" for f in config.gin_files]
  argv += [f"--gin_bindings={b}" for b in config.gin_bindings]
  argv += [f"--gin_bindings={gin_binding(n, v)}" for n, v in point.items()]
  argv += list(config.extra_args)
  return tuple(argv)


def build_jobs(config: LaunchConfig,
               sweep: Sequence[Mapping[str, Any]] = ({},)) -> list[Job]:
  """One `Job` per sweep point.

  With more than one point each job writes to `<workdir>/<index>_<slug>`
  (a GCS object cannot be appended to by two jobs); a single job writes to
  `<workdir>` itself.
  """
  sweep = list(sweep) or [{}]
  jobs = []
  for index, point in enumerate(sweep):
    if len(sweep) == 1:
      workdir, label = config.workdir, config.name
    else:
      leaf = f"{index:03d}" + (f"_{_slug(point)}" if point else "")
      workdir, label = f"{config.workdir}/{leaf}", f"{config.name}-{leaf}"
    jobs.append(Job(label, config.entry, config.image, config.accelerator,
                    workdir, job_argv(config, workdir, point), dict(point)))
  return jobs


def describe(jobs: Sequence[Job]) -> str:
  """What `--dry_run` prints: each job's image, accelerator and argv."""
  lines = []
  for i, job in enumerate(jobs):
    lines += [
        f"job {i + 1}/{len(jobs)}: {job.name}",
        f"  image:        {job.image}",
        f"  requirements: {job.accelerator.describe()}",
        f"  vertex:       {json.dumps(job.accelerator.vertex_machine_spec())}",
        f"  workdir:      {job.workdir}",
        f"  argv:         {job.shell_command()}",
        f"  container:    {shlex.join(job.container_args())}",
    ]
  return "\n".join(lines)
