"""The real-checkpoint recipes launch: `xm_launch.py --dry_run` builds each
study job (no xmanager, no cloud) with the recipe's gin file and bindings."""

import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_RECIPES = ["recipe_sal_llama32_1b_rlhflow", "recipe_qwen25_math_prm",
            "recipe_qwen3_policy"]


@pytest.mark.parametrize("recipe", _RECIPES)
def test_recipe_dry_run(recipe):
  gin_file = f"gin_configs/experiments/{recipe}.gin"
  result = subprocess.run(
      [sys.executable, "launch/xm_launch.py", "--entry=study", "--tpu=v4-8",
       "--image=us-docker.pkg.dev/p/ttcjax/ttcjax:tpu",
       f"--workdir=gs://bucket/{recipe}", f"--gin_file={gin_file}",
       "--gin.POLICY_CKPT='gs://bucket/ckpt/policy'",
       "--gin.PRM_CKPT='gs://bucket/ckpt/prm'",
       "--gin.TOKENIZER_DIR='/gcs/bucket/hf/policy'",
       "--gin.PRM_TOKENIZER_DIR='/gcs/bucket/hf/prm'",
       "--gin.MATH500_PATH='/gcs/bucket/data/math500/test.jsonl'",
       "--dry_run"],
      capture_output=True, text=True, timeout=120, cwd=_REPO,
      env={**os.environ, "PYTHONPATH": _REPO})
  assert result.returncode == 0, result.stderr
  assert "job 1/1: ttcjax-study" in result.stdout
  assert f"--gin_file={gin_file}" in result.stdout
  assert "PRM_TOKENIZER_DIR" in result.stdout
