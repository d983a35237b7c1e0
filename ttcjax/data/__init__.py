"""Training data: examples in numpy; seqio tasks and TFDS builders over them.

`ttcjax.data.examples` is pure numpy and is what importing this package
loads. The TensorFlow side (`vocabularies`, `seqio_tasks`, `tfds_builders`)
loads on first use, so CPU study code that only builds examples never pays
for TensorFlow:

  from ttcjax import data
  batch = data.collate([data.lm_example(tok, "1+1=", "2", 64)], 64)
  data.register_tasks(...)          # imports seqio and TensorFlow here
"""

import importlib

from ttcjax.data import examples
from ttcjax.data.examples import (  # noqa: F401  (re-exported)
    ExampleTooLongError, HFTokenizer, build_revision_trajectories, collate,
    edit_distance, edit_distances, lm_example, orm_example, prm_example,
    prompt_ids, revision_example, revision_prompt, revision_prompt_ids)

_LAZY_MODULES = ("vocabularies", "seqio_tasks", "tfds_builders")
_LAZY_ATTRS = {
    "to_numpy_batches": "seqio_tasks",
    "register_tasks": "seqio_tasks",
    "ContractFeatureConverter": "seqio_tasks",
    "ByteVocabulary": "vocabularies",
    "HFVocabulary": "vocabularies",
}


def __getattr__(name):
  if name in _LAZY_MODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _LAZY_ATTRS:
    module = importlib.import_module(f"{__name__}.{_LAZY_ATTRS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
