"""User errors of the command-line tools: one line, exit status 2, nothing
written, no traceback (through the real entry points, in a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

# pylint: disable=g-import-not-at-top
from ttcjax.main import cli

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run(module, args, cwd):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join(filter(None, [
             _REPO, os.environ.get("PYTHONPATH")]))}
  return subprocess.run([sys.executable, "-m", f"ttcjax.main.{module}",
                         *args], capture_output=True, text=True, timeout=120,
                        cwd=cwd, env=env)


def _assert_one_line_refusal(result, module, *needles):
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith(f"ttcjax.main.{module}: error: ")]
  assert len(errors) == 1, result.stderr
  for needle in needles:
    assert needle in errors[0], errors[0]


def _hf_dir(path, **config_changes):
  """A config.json (and optionally a pickle file), no safetensors."""
  os.makedirs(path)
  config = {"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
            "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 8,
            "hidden_act": "silu", **config_changes}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  return path


_CASES = {
    # name: (module, args given tmp, expected substrings, output dir)
    "convert_unsupported_family": (
        "convert_hf", lambda t: [
            f"--hf_dir={_hf_dir(t / 'hf', architectures=['GemmaForCausalLM'])}",
            f"--output_dir={t / 'out'}"],
        ["config.json", "architectures=['GemmaForCausalLM']"], "out"),
    "convert_rope_type": (
        "convert_hf", lambda t: [
            f"--hf_dir={_hf_dir(t / 'hf', rope_scaling={'type': 'yarn'})}",
            f"--output_dir={t / 'out'}"],
        ["config.json", "rope_scaling.rope_type='yarn'"], "out"),
    "convert_pickle_only": (
        "convert_hf", lambda t: [
            f"--hf_dir={_hf_dir(t / 'hf')}", f"--output_dir={t / 'out'}"],
        ["pytorch_model.bin", "weights_only=True"], "out"),
    "convert_bad_flag": (
        "convert_hf", lambda t: ["--hf_dir=x", f"--output_dir={t / 'out'}",
                                 "--dtype=int8"],
        ["--dtype=int8"], "out"),
    "sample_missing_checkpoint": (
        "sample", lambda t: [f"--checkpoint={t / 'none'}",
                             f"--workdir={t / 'w'}"],
        ["none", "not a complete ttcjax checkpoint"], "w"),
    "search_missing_checkpoint": (
        "search", lambda t: [
            "--gin_file=search/best_of_n.gin",
            f"--gin_bindings=search.Checkpoints.policy='{t / 'p'}'",
            f"--gin_bindings=search.Checkpoints.prm='{t / 'r'}'",
            "--gin_bindings=search.ProblemSource.num_problems=2",
            f"--workdir={t / 'w'}"],
        ["model_config.json", "not found"], "w"),
    "search_missing_gin_file": (
        "search", lambda t: ["--gin_file=search/nope.gin",
                             f"--workdir={t / 'w'}"],
        ["--gin_file=search/nope.gin", "no such gin file"], "w"),
    "train_unknown_binding": (
        "train", lambda t: ["--gin_file=models/tiny.gin",
                            "--gin_file=runs/train_policy.gin",
                            "--gin_bindings=TRAIN_STEPS = 5",
                            "--gin_bindings=ModelConfig.d_modle = 3",
                            f"--workdir={t / 'w'}"],
        ["ModelConfig.d_modle", "did you mean 'd_model'"], "w"),
    "train_policy_on_math": (
        "train", lambda t: ["--gin_file=models/tiny.gin",
                            "--gin_file=runs/train_policy.gin",
                            "--gin_bindings=TRAIN_STEPS = 100",
                            "--gin_bindings=DataConfig.task = 'math'",
                            f"--workdir={t / 'w'}"],
        ["DataConfig.task='math' has no generated reference solutions",
         "set DataConfig.task to one of ['arithmetic', 'countdown']"], "w"),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_user_error_is_one_line_exit_2_nothing_written(name, tmp_path):
  module, args, needles, output = _CASES[name]
  argv = args(tmp_path)
  if name == "convert_pickle_only":
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"never opened")
  before = sorted(os.listdir(tmp_path))
  result = _run(module, argv, tmp_path)
  _assert_one_line_refusal(result, module, *needles)
  assert not (tmp_path / output).exists()
  assert sorted(os.listdir(tmp_path)) == before


def test_existing_output_dir_is_kept_on_error(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  result = _run("convert_hf", [f"--hf_dir={tmp_path / 'none'}",
                               f"--output_dir={out}", "--overwrite"],
                tmp_path)
  _assert_one_line_refusal(result, "convert_hf", "not a directory")
  assert (out / "keep.txt").read_text() == "mine"


def test_user_error_classification():
  assert cli.is_user_error(FileNotFoundError("x"))
  try:
    from ttcjax.models import ModelConfig
    ModelConfig(vocab_size=0, d_model=8, n_layers=1, n_heads=1, d_ff=8)
  except ValueError as e:  # raised by ttcjax's own validation
    assert cli.is_user_error(e)
  try:
    import numpy as np
    np.zeros(3).reshape(2)
  except ValueError as e:  # raised inside numpy: a bug, keeps its traceback
    assert not cli.is_user_error(e)
  assert not cli.is_user_error(KeyError("x"))
  # A workdir made with another config: the message names the stages and
  # the flag that reruns them.
  from ttcjax.experiments import stages
  assert cli.is_user_error(stages.StageConfigError("x"))
  assert cli.one_line(ValueError("a\n  b\n")) == "a; b"
