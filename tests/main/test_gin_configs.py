"""Every gin file parses and builds; gin errors name what is wrong."""

import glob
import importlib
import os
import re

import pytest

from ttcjax.main import configure, gin_utils
from ttcjax.training import roles
from ttcjax.models import ModelConfig

try:  # search/*.gin configurables; imported first so that ArithmeticConfig,
  # which ttcjax.main.search also registers, keeps a single gin name.
  search_main = importlib.import_module("ttcjax.main.search")
except ImportError:
  search_main = None
try:
  studies = importlib.import_module("ttcjax.experiments.studies")
except ImportError:
  studies = None

GIN_DIR = gin_utils.REPO_GIN_CONFIGS
ALL_FILES = sorted(os.path.relpath(p, GIN_DIR) for p in glob.glob(
    os.path.join(GIN_DIR, "**", "*.gin"), recursive=True))
# Test values for %gin.REQUIRED macros; any other gets a path string.
REQUIRED_VALUES = {"TRAIN_STEPS": "100", "INIT_CHECKPOINT": "None"}
# Parameters (millions) of each model size.
MODEL_PARAMS = {"tiny": (0.2, 0.5), "small": (2, 5), "1b": (1540, 1547),
                "7b": (7610, 7620)}


@pytest.fixture(autouse=True)
def _registered():
  gin_utils.register(gin_utils.core_configurables() |
                     roles.GIN_CONFIGURABLES)
  if studies is not None:
    configure.register()


def _text(path):
  """A gin file's text followed by that of its includes."""
  with open(os.path.join(GIN_DIR, path)) as f:
    text = f.read()
  includes = re.findall(r"^include\s+'([^']+)'", text, re.M)
  return "\n".join([text] + [_text(p) for p in includes])


def _required(path):
  """Test bindings for every %gin.REQUIRED key declared in the file."""
  with open(os.path.join(GIN_DIR, path)) as f:
    keys = re.findall(r"^(\S+)\s*=\s*%gin\.REQUIRED", f.read(), re.M)
  return [f"{k} = {REQUIRED_VALUES.get(k, repr('/tmp/' + k.lower()))}"
          for k in keys]


def _build_entry_point(path):
  """Builds what the file configures: a TrainRun, a search SearchRun and/or
  a study experiment."""
  text = _text(path)
  if "study.experiment.spec" in text:
    if studies is None:
      pytest.skip("ttcjax.experiments.studies is not importable")
    spec = gin_utils.build(studies.experiment)
    assert isinstance(spec, (studies.ArithStudy, studies.SearchStudy))
    assert spec.stages()
    if "search.SearchRun." not in text:
      return spec
  if "TrainRun." in text:
    return gin_utils.build(roles.TrainRun)
  if "search.SearchRun." in text:
    if search_main is None:
      pytest.skip("ttcjax.main.search is not importable")
    return search_main.SearchRun()  # their configured class
  pytest.fail(f"{path}: configures neither TrainRun nor search.SearchRun")


@pytest.mark.parametrize("path", ALL_FILES)
def test_gin_file_builds(path):
  kind, name = path.split(os.sep)[0], os.path.basename(path)[:-4]
  if kind == "models":
    gin_utils.parse([path], [])
    model = gin_utils.build(ModelConfig)
    low, high = MODEL_PARAMS[name]
    assert low <= model.num_params() / 1e6 <= high
    assert not model.reward_head
  elif kind == "runs":
    gin_utils.parse(["models/tiny.gin", path], _required(path))
    run = _build_entry_point(path)
    assert f"train_{run.role}" == name
    assert run.train.total_steps == 100
  elif kind in ("experiments", "search"):
    if search_main is None and "search.SearchRun" in _text(path):
      pytest.skip("ttcjax.main.search is not importable")
    gin_utils.parse([path], _required(path))
    _build_entry_point(path)
  else:
    pytest.fail(f"{path}: unknown kind of gin file")


def test_model_files_bind_only_size_fields():
  for path in ALL_FILES:
    if path.startswith("models"):
      with open(os.path.join(GIN_DIR, path)) as f:
        keys = re.findall(r"^(\S+)\s*=", f.read(), re.M)
      assert all(k == "MODEL" or k.startswith("ModelConfig.") for k in keys)
      assert "ModelConfig.reward_head" not in keys


def test_qwen_shapes():
  gin_utils.parse(["models/7b.gin"], [])
  big = gin_utils.build(ModelConfig)
  assert (big.d_model, big.n_layers, big.n_heads, big.n_kv_heads, big.d_ff,
          big.vocab_size, big.rope_theta, big.tie_embeddings, big.qkv_bias
          ) == (3584, 28, 28, 4, 18944, 152064, 1e6, False, True)
  gin_utils.parse(["models/1b.gin"], [])
  small = gin_utils.build(ModelConfig)
  assert (small.d_model, small.n_kv_heads, small.head_dim, small.vocab_size,
          small.tie_embeddings) == (1536, 2, 128, 151936, True)


_POLICY = ["models/tiny.gin", "runs/train_policy.gin"]


def test_unknown_binding_names_it_and_suggests():
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"--gin_bindings='ModelConfig\.d_modle=3'.*"
                     r"'d_modle' \(did you mean 'd_model'\?\)"):
    gin_utils.parse(_POLICY, ["TRAIN_STEPS = 5", "ModelConfig.d_modle=3"])
  with pytest.raises(gin_utils.GinConfigError,
                     match="No configurable matching 'TrainConfg'.*"
                     "'TrainConfig'"):
    gin_utils.parse(_POLICY, ["TrainConfg.seed = 1"])


def test_unknown_binding_in_a_file_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'models/tiny.gin'\n\nTrainConfig.lr = 1.0\n")
  with pytest.raises(gin_utils.GinConfigError) as e:
    gin_utils.parse([str(bad)], [])
  assert f"--gin_file={bad}" in str(e.value)
  assert "line 3" in str(e.value) and "'lr'" in str(e.value)


def test_missing_required_macro_is_named():
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"gin macro TRAIN_STEPS is %gin\.REQUIRED "
                     r"\(declared in .*runs/train_policy\.gin\)"):
    gin_utils.parse(_POLICY, [])
  with pytest.raises(gin_utils.GinConfigError, match="TRAIN_FILE"):
    gin_utils.parse(["models/tiny.gin", "runs/train_prm.gin"],
                    ["TRAIN_STEPS = 5", "INIT_CHECKPOINT = None"])


def test_missing_model_file_is_explained():
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"%MODEL is used but never defined.*models/"):
    gin_utils.parse(["runs/train_policy.gin"], ["TRAIN_STEPS = 5"])


def test_missing_gin_file_and_include_are_named(tmp_path):
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"--gin_file=models/huge\.gin: no such gin file"):
    gin_utils.parse(["models/huge.gin"], [])
  bad = tmp_path / "exp.gin"
  bad.write_text("include 'models/huge.gin'\n")
  with pytest.raises(gin_utils.GinConfigError,
                     match=rf"--gin_file={bad}: {bad}:1: include "
                     r"'models/huge\.gin' not found"):
    gin_utils.parse([str(bad)], [])


def test_invalid_value_fails_at_build():
  gin_utils.parse(_POLICY, ["TRAIN_STEPS = 5"])  # warmup 10 > 5 steps
  with pytest.raises(gin_utils.GinConfigError,
                     match="TrainConfig.warmup_steps"):
    gin_utils.build(roles.TrainRun)
  gin_utils.parse(["models/tiny.gin", "runs/train_prm.gin"],
                  ["TRAIN_STEPS = 50", "INIT_CHECKPOINT = None",
                   "TRAIN_FILE = 'x.jsonl'", "TrainConfig.objective = 'lm'"])
  with pytest.raises(gin_utils.GinConfigError,
                     match="role='prm' needs TrainConfig.objective='reward'"):
    gin_utils.build(roles.TrainRun)


def test_byte_tokenizer_needs_byte_vocab():
  gin_utils.parse(["models/1b.gin", "runs/train_policy.gin"],
                  ["TRAIN_STEPS = 50"])
  with pytest.raises(gin_utils.GinConfigError,
                     match="DataConfig.tokenizer_dir"):
    gin_utils.build(roles.TrainRun)
