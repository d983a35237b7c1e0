r"""Launches ttcjax entry points on Vertex AI (TPU or GPU) with XManager.

    python launch/xm_launch.py --entry=search \
      --tpu=v5litepod-16 --image=us-docker.pkg.dev/$PROJECT/ttcjax/ttcjax:tpu \
      --workdir=gs://$BUCKET/math500 \
      --gin_file=gin_configs/experiments/math500_tpu.gin \
      --gin.POLICY_CKPT="'gs://$BUCKET/ckpt/qwen2.5-math-1.5b'" \
      --sweep=math500 --dry_run

One work unit per sweep point (`launch/sweeps.py`), each running
`python -m ttcjax.main.<entry> --workdir=... --gin_file=... --gin_bindings=...`
in the container. `--gin_file`, `--gin_bindings` and `--gin.NAME=VALUE` are
forwarded unchanged; arguments after a bare `--` go to the entry point as is.
`--dry_run` prints every job (image, accelerator, argv) and exits without
importing xmanager or contacting any cloud. TPU v4/v5e/v6e slices, which
XManager's Vertex executor cannot place, are submitted with `gcloud ai
custom-jobs create` and the same job body (`--via`). See launch/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from launch import argv as argv_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from launch import sweeps  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ENTRY = flags.DEFINE_enum("entry", None, argv_lib.ENTRIES,
                           "Entry point: python -m ttcjax.main.<entry>.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "gs://bucket/path the jobs write to.")
_IMAGE = flags.DEFINE_string("image", None, "Container image to run.")
_TPU = flags.DEFINE_string("tpu", None, "TPU type, e.g. v4-8, v5litepod-16.")
_TPU_TOPOLOGY = flags.DEFINE_string("tpu_topology", None,
                                    "TPU topology (default: from --tpu).")
_GPU_TYPE = flags.DEFINE_string("gpu_type", None, "GPU, e.g. h100, a100.")
_GPU_COUNT = flags.DEFINE_integer("gpu_count", None, "GPUs in all.")
_GIN_FILE = flags.DEFINE_multi_string("gin_file", [], "Forwarded as is.")
_GIN_BINDINGS = flags.DEFINE_multi_string(
    "gin_bindings", [], "Forwarded as is ('NAME = VALUE'); --gin.NAME=VALUE "
    "is the same.")
_SWEEP = flags.DEFINE_string(
    "sweep", None, f"A sweep name ({', '.join(sorted(sweeps.SWEEPS))}) or "
    "JSON; one work unit per point.")
_NAME = flags.DEFINE_string("name", None, "Experiment name.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Print the jobs; import and contact nothing.")
_VIA = flags.DEFINE_enum(
    "via", "auto", ["auto", "xmanager", "gcloud"],
    "How to submit: an XManager experiment, or `gcloud ai custom-jobs "
    "create`; auto: XManager where its Vertex executor supports the "
    "accelerator (GPUs, TPU v2/v3), else gcloud.")
_REGION = flags.DEFINE_string("region", "us-central1", "Vertex AI region.")
_BUILD_IMAGE = flags.DEFINE_bool(
    "build_image", False, "docker build and push --image from "
    "launch/Dockerfile first.")
_GCS_FUSE = flags.DEFINE_bool(
    "gcs_fuse", True, "Pass --workdir as /gcs/<bucket>/... (Vertex AI's "
    "Cloud Storage FUSE mount) so entry points can use plain file I/O.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing after `--gin.NAME=VALUE` -> `--gin_bindings=...`."""
  try:
    rewritten = argv_lib.rewrite_gin_args(argv)
  except argv_lib.LaunchError as e:
    raise SystemExit(f"xm_launch: {e}") from None
  return app.parse_flags_with_usage(rewritten)


def docker_commands(image: str, variant: str) -> list[list[str]]:
  """`docker build` (jax for `variant`: tpu or cuda) and `docker push`."""
  return [["docker", "build", "-f", "launch/Dockerfile", "--build-arg",
           f"ACCELERATOR={variant}", "-t", image, "."],
          ["docker", "push", image]]


def gcloud_command(job: argv_lib.Job, region: str,
                   config_path: str) -> list[str]:
  """`gcloud ai custom-jobs create` for a job whose spec is in config_path."""
  return ["gcloud", "ai", "custom-jobs", "create", f"--region={region}",
          f"--display-name={job.name}", f"--config={config_path}"]


def _xm_requirements(xm, accel):
  """`xm.JobRequirements` for the accelerator, from the installed xmanager."""
  for name in accel.xm_resources:
    try:
      resource = xm.ResourceType[name]
      break
    except KeyError:
      continue
  else:
    raise SystemExit(
        f"xm_launch: the installed xmanager knows no resource for {accel.name} (tried "
        f"{', '.join(accel.xm_resources)}); rerun with --via=gcloud")
  if accel.kind == "tpu":
    return xm.JobRequirements({resource: accel.topology})
  return xm.JobRequirements({resource: accel.per_host},
                            replicas=accel.hosts if accel.hosts > 1 else None)


def launch_xmanager(name: str, jobs: list[argv_lib.Job]) -> None:
  from xmanager import xm  # pylint: disable=g-import-not-at-top
  from xmanager import xm_local  # pylint: disable=g-import-not-at-top
  requirements = _xm_requirements(xm, jobs[0].accelerator)
  with xm_local.create_experiment(experiment_title=name) as experiment:
    [executable] = experiment.package([xm.Packageable(
        executable_spec=xm.Container(image_path=jobs[0].image),
        executor_spec=xm_local.Vertex.Spec())])
    for job in jobs:
      experiment.add(xm.Job(
          executable=executable,
          executor=xm_local.Vertex(requirements=requirements),
          args=job.container_args()))


def launch_gcloud(jobs: list[argv_lib.Job], region: str) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    for i, job in enumerate(jobs):
      path = os.path.join(tmp, f"job_{i}.json")
      with open(path, "w") as f:
        json.dump(job.vertex_custom_job()["jobSpec"], f, indent=1)
      subprocess.run(gcloud_command(job, region, path), check=True)


def main(argv):
  try:
    config = argv_lib.make_config(
        entry=_ENTRY.value, workdir=_WORKDIR.value, image=_IMAGE.value,
        tpu=_TPU.value, tpu_topology=_TPU_TOPOLOGY.value,
        gpu_type=_GPU_TYPE.value, gpu_count=_GPU_COUNT.value,
        gin_files=_GIN_FILE.value, gin_bindings=_GIN_BINDINGS.value,
        extra_args=argv[1:], name=_NAME.value, gcs_fuse=_GCS_FUSE.value)
    jobs = argv_lib.build_jobs(config, sweeps.from_flag(_SWEEP.value))
  except argv_lib.LaunchError as e:
    raise SystemExit(f"xm_launch: {e}") from None
  via = _VIA.value
  if via == "auto":
    via = "xmanager" if config.accelerator.xm_vertex_ok else "gcloud"
  elif via == "xmanager" and not config.accelerator.xm_vertex_ok:
    raise SystemExit(f"xm_launch: --via=xmanager: XManager's Vertex executor "
                     f"cannot place {config.accelerator.name} (it maps TPU "
                     "v2/v3 and GPUs); use --via=gcloud or --via=auto")
  docker = docker_commands(config.image, config.accelerator.image_variant)
  if _DRY_RUN.value:
    print(f"submit via: {via}")
    if _BUILD_IMAGE.value:
      print("\n".join("would run: " + " ".join(c) for c in docker))
    print(argv_lib.describe(jobs))
    return
  if _BUILD_IMAGE.value:
    for command in docker:
      subprocess.run(command, check=True, cwd=REPO)
  if via == "gcloud":
    launch_gcloud(jobs, _REGION.value)
  else:
    launch_xmanager(config.name, jobs)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
