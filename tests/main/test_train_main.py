"""The train entry point: gin to a finished run, the data of each role."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ttcjax import checkpoint, models, training
from ttcjax.main import configure, gin_utils
from ttcjax.training import roles
from ttcjax.models import ModelConfig
from ttcjax.partitioning import MeshConfig
from ttcjax.tasks import arithmetic, countdown

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TINY = ModelConfig(vocab_size=259, d_model=96, n_layers=3, n_heads=4,
                   n_kv_heads=2, d_ff=256, max_len=1024)
# Shrinks a run file to a few steps on a few examples.
FAST = ["TrainConfig.warmup_steps = 1", "TrainConfig.eval_batches = 1",
        "TrainConfig.log_every = 1", "TrainConfig.write_tensorboard = False",
        "DataConfig.batch_size = 8"]


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _prm_rows(n, seed=7):
  rng = np.random.default_rng(seed)
  rows = []
  for p in arithmetic.generate(arithmetic.ArithmeticConfig(max_ops=2), n,
                               seed):
    steps = arithmetic.split_steps(p.solution)
    rows.append({"prompt": arithmetic.prompt(p), "steps": steps,
                 "step_labels": rng.uniform(size=len(steps)).round(3).tolist()})
  return rows


def _run(role, train_file, **data):
  reward = role in roles.REWARD_ROLES
  return roles.TrainRun(
      role=role, model=TINY.replace(reward_head=reward),
      train=training.TrainConfig(objective="reward" if reward else "lm",
                                 total_steps=2, warmup_steps=1),
      data=roles.DataConfig(batch_size=4, train_file=train_file, **data),
      mesh=MeshConfig())


def _save_policy(path, value=0.02):
  """A policy checkpoint of TINY's shape without training (constant params)."""
  params = jax.tree.map(lambda s: np.full(s.shape, value, s.dtype),
                        models.param_shapes(TINY))
  checkpoint.save(path, params, TINY)
  return params


def test_policy_run_from_gin(tmp_path):
  workdir = tmp_path / "policy"
  bindings = FAST + ["TRAIN_STEPS = 3", "DataConfig.train_examples = 32",
                     "DataConfig.eval_examples = 8"]
  files = ["models/tiny.gin", "runs/train_policy.gin"]
  _, history = configure.train_from_gin(files, bindings, workdir)
  assert history[-1]["step"] == 3 and "eval_loss" in history[-1]
  config, params = checkpoint.restore(workdir / "final")
  assert config == TINY and "reward_head" not in params

  # config.gin is the whole run: parsing it alone rebuilds the same TrainRun.
  gin_utils.parse(files, bindings)
  expected = gin_utils.build(roles.TrainRun)
  gin_utils.parse([str(workdir / "config.gin")], [])
  assert gin_utils.build(roles.TrainRun) == expected
  assert "TRAIN_STEPS = 3" in (workdir / "config.gin").read_text()


def test_countdown_policy_run_from_gin(tmp_path):
  """The policy's data through the `Task` interface: countdown by two gin
  bindings, same run file."""
  workdir = tmp_path / "countdown"
  bindings = FAST + ["TRAIN_STEPS = 3", "DataConfig.train_examples = 32",
                     "DataConfig.eval_examples = 8",
                     "DataConfig.task = 'countdown'",
                     "DataConfig.task_config = @CountdownConfig()",
                     "CountdownConfig.max_numbers = 3"]
  files = ["models/tiny.gin", "runs/train_policy.gin"]
  _, history = configure.train_from_gin(files, bindings, workdir)
  assert history[-1]["step"] == 3 and "eval_loss" in history[-1]
  assert np.isfinite(history[-1]["loss"])
  text = (workdir / "config.gin").read_text()
  assert "DataConfig.task = 'countdown'" in text
  assert "CountdownConfig.max_numbers = 3" in text
  gin_utils.parse([str(workdir / "config.gin")], [])
  run = gin_utils.build(roles.TrainRun)
  assert run.data.task_config == countdown.CountdownConfig(max_numbers=3)


def test_old_arithmetic_binding_is_the_task_config(tmp_path):
  """`DataConfig.arithmetic` (older run files and workdirs' config.gin) is
  an alias: the old run file builds the TrainRun the new one does."""
  gin_utils.register(gin_utils.core_configurables() | roles.GIN_CONFIGURABLES)
  gin_utils.parse(["models/tiny.gin", "runs/train_policy.gin"],
                  ["TRAIN_STEPS = 100"])
  new = gin_utils.build(roles.TrainRun)
  with open(os.path.join(gin_utils.REPO_GIN_CONFIGS,
                         "runs/train_policy.gin")) as f:
    text = f.read()
  task_lines = ("DataConfig.task = 'arithmetic'\n"
                "DataConfig.task_config = @ArithmeticConfig()\n")
  assert task_lines in text
  old = tmp_path / "train_policy_old.gin"
  old.write_text(text.replace(task_lines,
                              "DataConfig.arithmetic = @ArithmeticConfig()\n"))
  gin_utils.parse(["models/tiny.gin", str(old)], ["TRAIN_STEPS = 100"])
  assert gin_utils.build(roles.TrainRun) == new
  assert new.data.task_config == arithmetic.ArithmeticConfig()


def test_prm_run_from_a_policy_checkpoint(tmp_path):
  _save_policy(tmp_path / "policy")
  data = _write_jsonl(tmp_path / "prm.jsonl", _prm_rows(16))
  workdir = tmp_path / "prm"
  _, history = configure.train_from_gin(
      ["models/tiny.gin", "runs/train_prm.gin"],
      FAST + ["TRAIN_STEPS = 2", f"INIT_CHECKPOINT = '{tmp_path}/policy'",
              f"TRAIN_FILE = '{data}'"], workdir)
  assert np.isfinite(history[-1]["loss"])
  config, params = checkpoint.restore(workdir / "final")
  assert config == TINY.replace(reward_head=True) and "reward_head" in params
  assert "TrainRun.role = 'prm'" in (workdir / "config.gin").read_text()


def test_init_params_adds_reward_head_to_the_policy(tmp_path):
  params = _save_policy(tmp_path / "policy")
  run = dataclasses.replace(_run("prm", "unused.jsonl"),
                            init_checkpoint=str(tmp_path / "policy"))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "model"))
  got = roles.init_params(run, mesh)
  assert set(got) == set(params) | {"reward_head"}
  np.testing.assert_array_equal(got["embedding"], params["embedding"])
  assert got["reward_head"]["kernel"].shape == (TINY.d_model, 1)


def test_init_checkpoint_must_match_the_model():
  with pytest.raises(ValueError, match=r"ckpt: .*d_model: checkpoint 64, "
                     r"run 96"):
    roles.check_compatible(TINY.replace(d_model=64, param_dtype="bfloat16"),
                               TINY, "ckpt")
  # Dtypes, length and the reward head may differ.
  roles.check_compatible(TINY.replace(param_dtype="bfloat16", max_len=64,
                                          reward_head=True), TINY, "ckpt")


ROLE_ROWS = {
    "prm": [{"prompt": "Compute: 1+2\n", "steps": ["1+2=3\n", "#### 3\n"],
             "step_labels": [1.0, 0.5]}],
    "prm_ids": [{"prompt_ids": [2, 60, 61], "steps": [[51, 13], [52, 13]],
                 "step_labels": [0.25, 1.0]}],
    "revision": [{"question": "Compute: 1+2", "attempts": ["#### 4\n"],
                  "target": "1+2=3\n#### 3\n"}],
    "orm": [{"context": "Compute: 1+2\n", "solution": "#### 3\n",
             "label": 1}],
    "orm_history": [{"question": "Compute: 1+2", "attempts": ["#### 4\n"],
                     "solution": "#### 3\n", "label": 0.0}],
}


@pytest.mark.parametrize("kind", sorted(ROLE_ROWS))
def test_numpy_sources_of_each_role(tmp_path, kind):
  role = kind.split("_")[0]
  path = _write_jsonl(tmp_path / "d.jsonl", ROLE_ROWS[kind] * 3)
  train, eval_source = roles.numpy_sources(
      _run(role, path, eval_file=path), roles.make_tokenizer(
          roles.DataConfig()))
  batch = train.get(0)
  assert batch["tokens"].shape[0] == 4 and batch["tokens"].shape[1] % 8 == 0
  training.check_batch(batch, "reward" if role in ("prm", "orm") else "lm",
                       kind)
  labels = {"prm": 2, "orm": 1}.get(role)
  if labels:
    assert (batch["reward_weights"].sum(1) == labels).all()
    assert not batch["loss_weights"].any()
  else:
    assert (batch["loss_weights"].sum(1) == len("1+2=3\n#### 3\n") + 1).all()
  # 3 eval rows in batches of 4: the 4th row weighs nothing.
  weights = eval_source.get(0)["reward_weights" if labels else "loss_weights"]
  assert weights[:3].sum(1).all() and not weights[3].any()


def test_numpy_sources_pack_rows_with_segments(tmp_path):
  """`DataConfig.pack`: the padded path packs with `ttcjax.data.packing`,
  every example kept once, each its own segment from position 0."""
  rows = _prm_rows(12)
  path = _write_jsonl(tmp_path / "p.jsonl", rows)
  tok = roles.make_tokenizer(roles.DataConfig())
  run = _run("prm", path, pack=True, max_len=128)
  train, _ = roles.numpy_sources(run, tok)
  arrays = train.arrays
  assert arrays["tokens"].shape[1] == 128 and len(arrays["tokens"]) < 12
  assert arrays["segment_ids"].max() > 1
  assert arrays["reward_weights"].sum() == sum(len(r["steps"]) for r in rows)
  starts = (arrays["positions"] == 0) & arrays["token_mask"]
  assert starts.sum() == 12
  assert (arrays["tokens"][starts] == tok.bos_id).all()
  training.check_batch(train.get(0), "reward", "packed")
  unpacked, _ = roles.numpy_sources(_run("prm", path, max_len=128), tok)
  assert "segment_ids" not in unpacked.arrays
  with pytest.raises(ValueError, match="DataConfig.pack=True needs"):
    roles.DataConfig(pack=True, source="seqio")


def test_bad_jsonl_names_path_and_line(tmp_path):
  path = _write_jsonl(tmp_path / "bad.jsonl",
                      [ROLE_ROWS["prm"][0], {"prompt": "x", "steps": "1\n",
                                             "step_labels": [1]}])
  with pytest.raises(ValueError, match=rf"{path}:2: field 'steps' must be a "
                     "list of strings"):
    roles.numpy_sources(_run("prm", path),
                            roles.make_tokenizer(roles.DataConfig()))


def test_config_gin_is_written_before_data_is_read(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    configure.train_from_gin(
        ["models/tiny.gin", "runs/train_orm.gin"],
        ["TRAIN_STEPS = 20", "INIT_CHECKPOINT = None",
         f"TRAIN_FILE = '{tmp_path}/missing.jsonl'"], tmp_path / "orm")
  assert "TrainRun.role = 'orm'" in (tmp_path / "orm/config.gin").read_text()


def test_gin_errors_come_before_any_work(tmp_path):
  with pytest.raises(gin_utils.GinConfigError, match="d_modle"):
    configure.train_from_gin(["models/tiny.gin", "runs/train_policy.gin"],
                             ["TRAIN_STEPS = 5", "ModelConfig.d_modle = 3"],
                             tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_cli_unknown_binding_fails_fast(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "ttcjax.main.train",
       "--gin_file=models/tiny.gin", "--gin_file=runs/train_policy.gin",
       "--gin_bindings=TRAIN_STEPS = 5", "--gin_bindings=ModelConfig.d_modle=3",
       f"--workdir={tmp_path}/w"],
      capture_output=True, text=True, timeout=60, cwd=tmp_path,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode != 0
  assert "ModelConfig.d_modle" in result.stderr
  assert "did you mean 'd_model'" in result.stderr
  assert not (tmp_path / "w").exists()


def test_core_packages_import_without_gin_or_tensorflow():
  blocked = ("gin", "tensorflow", "seqio", "tensorflow_datasets")
  code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
          "import ttcjax.models, ttcjax.training, ttcjax.partitioning, "
          "ttcjax.tasks.arithmetic, ttcjax.data, ttcjax.training.roles")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                 cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_seqio_source_matches_numpy(tmp_path):
  pytest.importorskip("seqio")
  path = _write_jsonl(tmp_path / "prm.jsonl", _prm_rows(6))
  run = _run("prm", path, eval_file=path, source="seqio", max_len=96)
  tok = roles.make_tokenizer(run.data)
  seqio_train, seqio_eval = roles.seqio_sources(run, tok)
  _, numpy_eval = roles.numpy_sources(run, tok)
  for i in range(2):
    want, got = numpy_eval.get(i), seqio_eval.get(i)
    for key, value in want.items():
      length = value.shape[1]
      np.testing.assert_array_equal(got[key][:, :length], value, key)
      assert not got[key][:, length:].any()
  first = seqio_train.get(0)
  assert first["tokens"].shape == (4, 96)
  np.testing.assert_array_equal(seqio_train.get(1)["tokens"],
                                seqio_train.get(1)["tokens"])
