"""TFDS builders: the synthetic arithmetic task, and MATH from local files.

`TtcjaxArithmetic` (`ttcjax_arithmetic`) generates `ttcjax.tasks.arithmetic`
problems; a config fixes the difficulty, the seed and the split sizes. Split
`s` uses seed `1000 + 3 * seed + {"train": 0, "validation": 1, "test": 2}[s]`,
so the splits of one config, and of configs with other seeds, never share a
problem stream (uids `arith-<split seed>-<i>`); seed 0 gives the seeds of
`seqio_tasks.DEFAULT_ARITHMETIC_SPLITS` (train 1000, validation 1001), and
seeds below 1000 stay free for the study's evaluation problems.

`TtcjaxMath` (`ttcjax_math`) reads MATH-style jsonl (`train.jsonl`,
`test.jsonl`, either or both) from the manual directory, parsed by
`ttcjax.tasks.math.load_jsonl`.

Both prepare offline:

  builder = TtcjaxArithmetic(config="easy", data_dir=...)
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from ttcjax.tasks import arithmetic
from ttcjax.tasks import math as math_task

_SEED_BASE = 1000
_SPLIT_OFFSETS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class ArithmeticBuilderConfig(tfds.core.BuilderConfig):
  """One arithmetic dataset.

  Attributes:
    problems: the difficulty distribution.
    seed: base seed (see the module docstring for split seeds).
    train_size: problems in "train".
    validation_size: problems in "validation".
    test_size: problems in "test".
  """

  problems: arithmetic.ArithmeticConfig = arithmetic.ArithmeticConfig()
  seed: int = 0
  train_size: int = 100_000
  validation_size: int = 1_000
  test_size: int = 1_000


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder that downloads nothing, so has no checksums file to locate.

  TFDS 4.9 finds a builder's checksums file through its source path, and for
  builders outside `tensorflow_datasets` that lookup needs the
  `importlib_resources` backport, which TFDS no longer declares on
  Python >= 3.9. Answering "no source path" skips the lookup.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None


def _arithmetic_config(name: str, description: str, **problems
                       ) -> ArithmeticBuilderConfig:
  return ArithmeticBuilderConfig(
      name=name, description=description,
      problems=arithmetic.ArithmeticConfig(**problems))


class TtcjaxArithmetic(_LocalBuilder):
  """Step-by-step integer arithmetic with exact grading."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      _arithmetic_config("easy", "1-2 operations on 1-2 digit numbers.",
                         min_ops=1, max_ops=2, min_digits=1, max_digits=2),
      _arithmetic_config("medium", "1-4 operations on 1-3 digit numbers.",
                         min_ops=1, max_ops=4, min_digits=1, max_digits=3),
      _arithmetic_config("hard", "3-8 operations on 2-4 digit numbers.",
                         min_ops=3, max_ops=8, min_digits=2, max_digits=4),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "uid": tfds.features.Text(),
            "question": tfds.features.Text(),
            "solution": tfds.features.Text(),
            "answer": tfds.features.Text(),
            "n_ops": tfds.features.Scalar(dtype=np.int32),
            "digits": tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=("question", "solution"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated, nothing to download.
    config = self.builder_config
    sizes = {"train": config.train_size, "validation": config.validation_size,
             "test": config.test_size}
    return {split: self._generate_examples(
                _SEED_BASE + 3 * config.seed + _SPLIT_OFFSETS[split], size)
            for split, size in sizes.items() if size > 0}

  def _generate_examples(self, seed: int, size: int):
    for p in arithmetic.generate(self.builder_config.problems, size, seed):
      yield p.uid, {"uid": p.uid, "question": p.question,
                    "solution": p.solution, "answer": p.answer,
                    "n_ops": p.n_ops, "digits": p.digits}


class TtcjaxMath(_LocalBuilder):
  """MATH problems (Hendrycks et al.) from local jsonl files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put `train.jsonl` and/or `test.jsonl` in the manual directory
(`download_config=tfds.download.DownloadConfig(manual_dir=...)`), one problem
a line with `problem`, `solution` and/or `answer`, `level`, `subject` or
`type`, optional `unique_id`. Sources: MATH, https://github.com/hendrycks/math
(MIT; per-problem json files, to be converted to jsonl); MATH-500,
https://github.com/openai/prm800k/tree/main/prm800k/math_splits
(`train.jsonl`, `test.jsonl`, already in this format).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "uid": tfds.features.Text(),
            "problem": tfds.features.Text(),
            "solution": tfds.features.Text(),
            "answer": tfds.features.Text(),
            "level": tfds.features.Scalar(dtype=np.int32),
            "subject": tfds.features.Text(),
        }),
        supervised_keys=("problem", "solution"),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    files = {split: os.path.join(manual_dir, f"{split}.jsonl")
             for split in ("train", "test")}
    files = {split: path for split, path in files.items()
             if os.path.exists(path)}
    if not files:
      raise FileNotFoundError(
          f"{manual_dir}: neither train.jsonl nor test.jsonl found.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split: self._generate_examples(path)
            for split, path in files.items()}

  def _generate_examples(self, path: str):
    seen = set()
    for p in math_task.load_jsonl(path):
      if p.uid in seen:
        raise ValueError(f"{path}: duplicate unique_id {p.uid!r}")
      seen.add(p.uid)
      yield p.uid, {"uid": p.uid, "problem": p.problem,
                    "solution": p.solution, "answer": p.answer,
                    "level": p.level, "subject": p.subject}
