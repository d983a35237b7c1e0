"""Launcher argv construction: pure, no xmanager, no cloud."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from launch import accelerators, argv
from launch import entrypoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
NASTY = "He said \"hi\" -- it's\ta 'test'\n\\boxed{} $HOME `x` ; rm"
QWEN = ("<|im_start|>system\nPlease reason step by step, and put your final "
        "answer within \\boxed{}.<|im_end|>\n<|im_start|>user\n{problem}"
        "<|im_end|>\n<|im_start|>assistant\n")


def _config(**overrides):
  kwargs = dict(entry="search", workdir="gs://my-bucket/exp",
                image="us-docker.pkg.dev/p/r/ttcjax:tpu", tpu="v4-8")
  kwargs.update(overrides)
  return argv.make_config(**kwargs)


# --- gin values ---------------------------------------------------------------


@pytest.fixture(scope="module")
def _gin_registered():
  gin = pytest.importorskip("gin")

  def target(value=None):
    return value

  gin.clear_config()  # another test may have locked (finalized) the config
  return gin, gin.external_configurable(target, "launch_test")


@pytest.fixture
def gin_target(_gin_registered):  # pylint: disable=redefined-outer-name
  gin, _ = _gin_registered
  gin.clear_config()
  yield _gin_registered
  gin.clear_config()


@pytest.mark.parametrize("value", [
    NASTY, QWEN, "", "plain", 3, -2.5e-3, True, None, [1, "a b", [2.0]],
    (1,), ("x", 'y"'), {"beam_width": [4, "sqrt"], "k": 'q"\''},
])
def test_gin_literal_parses_back_to_the_value(gin_target, value):
  gin, target = gin_target
  gin.parse_config(argv.gin_binding("launch_test.value", value))
  assert target() == value


def test_gin_raw_passes_references_through(gin_target):
  gin, target = gin_target
  binding = argv.gin_binding("launch_test.value", [argv.GinRaw("%M")])
  assert binding == "launch_test.value = [%M]"
  gin.parse_config("M = 7")
  gin.parse_config(binding)
  assert target() == [7]


def test_gin_literal_rejects_what_gin_cannot_hold():
  with pytest.raises(argv.LaunchError, match="no gin literal"):
    argv.gin_literal(object())
  with pytest.raises(argv.LaunchError, match="nan"):
    argv.gin_literal(float("nan"))
  with pytest.raises(argv.LaunchError, match="not a gin selector"):
    argv.gin_binding("a b", 1)


def test_rewrite_gin_args():
  out = argv.rewrite_gin_args([
      "prog", "--gin.TRAIN_STEPS=100", f"--gin.search.X={NASTY!r}",
      "--gin_file=a.gin", "--", "--gin.LEFT=alone"])
  assert out == ["prog", "--gin_bindings=TRAIN_STEPS = 100",
                 f"--gin_bindings=search.X = {NASTY!r}", "--gin_file=a.gin",
                 "--", "--gin.LEFT=alone"]
  with pytest.raises(argv.LaunchError, match="--gin.NAME=VALUE"):
    argv.rewrite_gin_args(["--gin.NOVALUE"])


# --- required flags -----------------------------------------------------------


@pytest.mark.parametrize("missing, flag", [
    ({"entry": None}, "--entry"), ({"workdir": None}, "--workdir"),
    ({"tpu": None}, "accelerator"), ({"image": None}, "--image"),
    ({"entry": "eval"}, "--entry"), ({"workdir": "/tmp/x"}, "--workdir"),
    ({"workdir": "gs://A/x"}, "--workdir"),
    ({"gin_bindings": ["no equals"]}, "--gin_bindings"),
    ({"tpu": "v4-7"}, "TensorCores"), ({"tpu": "tpu8"}, "--tpu"),
    ({"gpu_type": "h100"}, "both set"),
])
def test_missing_or_bad_flag_is_named(missing, flag):
  with pytest.raises(argv.LaunchError, match=flag):
    _config(**missing)


def test_entry_is_checked_before_workdir_and_accelerator():
  with pytest.raises(argv.LaunchError, match="--entry is required"):
    argv.make_config(entry=None, workdir=None, image=None)
  with pytest.raises(argv.LaunchError, match="--workdir is required"):
    argv.make_config(entry="train", workdir=None, image=None)
  with pytest.raises(argv.LaunchError, match="accelerator is required"):
    argv.make_config(entry="train", workdir="gs://bkt/x", image=None)


# --- accelerators -------------------------------------------------------------


@pytest.mark.parametrize("tpu, chips, topology, hosts, machine", [
    ("v4-8", 4, "2x2x1", 1, "cloud-tpu"),
    ("v4-32", 16, "2x2x4", 4, "cloud-tpu"),
    ("v5litepod-8", 8, "2x4", 1, "ct5lp-hightpu-8t"),
    ("v5litepod-16", 16, "4x4", 4, "ct5lp-hightpu-4t"),
    ("v5e-4", 4, "2x2", 1, "ct5lp-hightpu-4t"),
    ("v2-8", 4, "2x2", 1, "cloud-tpu"),
])
def test_tpu_types(tpu, chips, topology, hosts, machine):
  acc = accelerators.parse_tpu(tpu)
  assert (acc.chips, acc.topology, acc.hosts) == (chips, topology, hosts)
  spec = acc.vertex_machine_spec()
  assert spec["machineSpec"]["machineType"] == machine
  assert acc.image_variant == "tpu"


def test_tpu_topology_flag_is_checked():
  assert accelerators.parse_tpu("v4-16", "2x2x2").topology == "2x2x2"
  with pytest.raises(accelerators.AcceleratorError, match="--tpu_topology"):
    accelerators.parse_tpu("v4-16", "4x4")


def test_gpu_hosts():
  one = accelerators.parse_gpu("h100", 8)
  assert (one.hosts, one.per_host, one.image_variant) == (1, 8, "cuda")
  assert one.vertex_machine_spec() == {
      "machineSpec": {"machineType": "a3-highgpu-8g",
                      "acceleratorType": "NVIDIA_H100_80GB",
                      "acceleratorCount": 8}, "replicaCount": 1}
  two = accelerators.parse_gpu("H100", 16)
  assert (two.hosts, two.topology) == (2, "8x2")
  assert two.vertex_machine_spec()["replicaCount"] == 2
  with pytest.raises(accelerators.AcceleratorError, match="multiple of 8"):
    accelerators.parse_gpu("h100", 12)
  with pytest.raises(accelerators.AcceleratorError, match="--gpu_count"):
    accelerators.parse_gpu("a100", None)
  with pytest.raises(accelerators.AcceleratorError, match="come with"):
    accelerators.parse_gpu("a100", 3)


# --- jobs ---------------------------------------------------------------------


def test_single_job_argv_forwards_gin_unchanged():
  config = _config(gin_files=["gin_configs/experiments/math500_tpu.gin"],
                   gin_bindings=[f"search.X = {NASTY!r}", "N = [1, 2]"],
                   extra_args=["--alsologtostderr"])
  [job] = argv.build_jobs(config)
  assert job.workdir == "gs://my-bucket/exp"
  assert job.argv == (
      "--workdir=/gcs/my-bucket/exp",
      "--gin_file=gin_configs/experiments/math500_tpu.gin",
      f"--gin_bindings=search.X = {NASTY!r}", "--gin_bindings=N = [1, 2]",
      "--alsologtostderr")
  assert job.command[:3] == ["python", "-m", "ttcjax.main.search"]
  assert shlex.split(job.shell_command()) == job.command


def test_no_gcs_fuse_keeps_gs_paths():
  [job] = argv.build_jobs(_config(gcs_fuse=False))
  assert job.argv[0] == "--workdir=gs://my-bucket/exp"


def test_sweep_makes_one_job_per_point_with_own_workdir():
  sweep = [{"search.SearchRun.seed": 0, "S": QWEN},
           {"search.SearchRun.seed": 1, "S": NASTY}]
  jobs = argv.build_jobs(_config(gin_bindings=["search.SearchRun.seed = 9"]),
                         sweep)
  assert len(jobs) == 2
  assert len({j.workdir for j in jobs}) == 2
  assert all(j.workdir.startswith("gs://my-bucket/exp/00") for j in jobs)
  assert all("/" not in j.workdir[len("gs://my-bucket/exp/"):] for j in jobs)
  for job, point in zip(jobs, sweep):
    assert job.point == point
    # The user's binding first, the sweep's after it (gin keeps the last).
    seeds = [a for a in job.argv if "SearchRun.seed" in a]
    assert seeds == ["--gin_bindings=search.SearchRun.seed = 9",
                     f"--gin_bindings=search.SearchRun.seed = "
                     f"{point['search.SearchRun.seed']}"]
    assert f"--gin_bindings=S = {point['S']!r}" in job.argv


@pytest.mark.parametrize("args", [
    ["--gin_bindings=X = " + repr(NASTY), "--gin_bindings=Q = " + repr(QWEN)],
    ["--workdir=/gcs/b/x", "a b", "'", '"', "", "\n", "é ü 中"],
])
def test_container_token_is_shell_safe_and_round_trips(args):
  token = argv.encode_argv("search", args)
  assert shlex.quote(token) == token  # XManager's quoting leaves it alone
  assert argv.decode_argv(token) == ("search", args)
  # and through a shell that word-splits and expands:
  out = subprocess.run(["sh", "-c", f"printf %s {token}"],
                       capture_output=True, text=True, check=True).stdout
  assert argv.decode_argv(out) == ("search", args)


def test_decode_rejects_foreign_tokens():
  with pytest.raises(argv.LaunchError, match="--ttcjax_argv"):
    argv.decode_argv("--other=1")
  with pytest.raises(argv.LaunchError, match="not a launcher token"):
    argv.decode_argv("--ttcjax_argv=!!!")


def test_vertex_custom_job_body():
  [job] = argv.build_jobs(_config(tpu="v5litepod-16"))
  body = job.vertex_custom_job()
  [pool] = body["jobSpec"]["workerPoolSpecs"]
  assert pool["machineSpec"]["tpuTopology"] == "4x4"
  assert pool["containerSpec"] == {"imageUri": job.image,
                                   "args": job.container_args()}
  json.dumps(body)  # serialisable for gcloud --config


def test_describe_names_image_requirements_and_argv():
  jobs = argv.build_jobs(_config(), [{"A": 1}, {"A": 2}])
  text = argv.describe(jobs)
  assert text.count("image:") == 2 and "TPU v4-8: 4 chips" in text
  assert "--gin_bindings=A = 2" in text


# --- entrypoint and the command line ------------------------------------------


def test_entrypoint_runs_the_decoded_entry(monkeypatch):
  calls = []
  from ttcjax import distributed
  monkeypatch.setattr(distributed, "maybe_initialize",
                      lambda: calls.append("init"))
  monkeypatch.setattr(entrypoint.runpy, "run_module",
                      lambda module, **kw: calls.append((module, sys.argv)))
  args = ["--workdir=/gcs/b/x", f"--gin_bindings=S = {NASTY!r}"]
  monkeypatch.setattr(sys, "argv", ["entrypoint.py",
                                    argv.encode_argv("train", args)])
  entrypoint.main()
  assert calls == ["init", ("ttcjax.main.train", ["ttcjax.main.train",
                                                  *args])]
  assert entrypoint.parse(["search", "--x=1"]) == ("search", ["--x=1"])
  with pytest.raises(SystemExit, match="usage"):
    entrypoint.parse(["rm"])


def _launcher(*args):
  """Runs xm_launch.py with xmanager and google.cloud made unimportable."""
  code = ("import sys, runpy; sys.modules['xmanager'] = None; "
          "sys.modules['google.cloud'] = None; "
          f"sys.argv = ['xm_launch.py'] + {list(args)!r}; "
          "runpy.run_path('launch/xm_launch.py', run_name='__main__')")
  return subprocess.run([sys.executable, "-c", code], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_dry_run_prints_every_job_without_xmanager():
  out = _launcher(
      "--entry=search", "--tpu=v5litepod-16", "--image=img:tpu",
      "--workdir=gs://bkt/run", "--gin_file=experiments/math500_tpu.gin",
      f"--gin.search.ProblemSource.prompt_template={QWEN!r}",
      "--sweep=smoke", "--dry_run", "--build_image", "--", "--v=1")
  assert out.returncode == 0, out.stderr
  assert out.stdout.count("\njob ") + out.stdout.startswith("job ") == 4
  assert "would run: docker build -f launch/Dockerfile --build-arg " \
         "ACCELERATOR=tpu -t img:tpu ." in out.stdout
  [line] = [l for l in out.stdout.splitlines()
            if l.startswith("  argv:")][:1]
  command = shlex.split(line.split(":", 1)[1])
  assert f"--gin_bindings=search.ProblemSource.prompt_template = " \
         f"{QWEN!r}" in command
  assert command[-1] == "--v=1"


def test_launcher_names_the_missing_flag():
  out = _launcher("--entry=search", "--tpu=v4-8", "--image=i", "--dry_run")
  assert out.returncode != 0
  assert "--workdir is required" in out.stderr


def test_dockerfile_builds_both_variants():
  with open(os.path.join(REPO, "launch", "Dockerfile")) as f:
    text = f.read()
  assert 'jax[tpu]' in text and 'jax[cuda12]' in text
  assert "'.[data]'" in text
  assert 'ENTRYPOINT ["python", "/app/launch/entrypoint.py"]' in text


def test_submission_path_follows_what_xmanager_can_place():
  assert not accelerators.parse_tpu("v5litepod-16").xm_vertex_ok
  assert accelerators.parse_tpu("v3-8").xm_vertex_ok
  assert accelerators.parse_gpu("h100", 16).xm_vertex_ok
  common = ["--entry=train", "--image=i", "--workdir=gs://bkt/x",
            "--dry_run"]
  assert "submit via: gcloud" in _launcher("--tpu=v4-8", *common).stdout
  assert "submit via: xmanager" in _launcher(
      "--gpu_type=h100", "--gpu_count=8", *common).stdout
  forced = _launcher("--tpu=v4-8", "--via=xmanager", *common)
  assert forced.returncode != 0 and "--via=xmanager" in forced.stderr
