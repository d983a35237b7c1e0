"""PRM formats by name: each builds its layout, unknown names are refused."""

import pytest

pytest.importorskip("tokenizers")

# pylint: disable=g-import-not-at-top,wrong-import-position
from ttcjax import hf_testing
from ttcjax.models import hf_tokenizer
from ttcjax.verifiers import hf_prms, prm_inputs


@pytest.mark.parametrize("prm_format, style, cls, tags", [
    ("reward_head", "chatml", type(None), False),
    ("qwen_math_prm", "chatml", prm_inputs.ChatSeparatorInput, False),
    ("skywork_prm", "chatml", prm_inputs.StepTokenInput, False),
    ("rlhflow_prm", "llama3", prm_inputs.ChatTurnsInput, True),
    ("math_shepherd", "sentencepiece", prm_inputs.TagTextInput, True),
])
def test_formats_build_their_layout(tmp_path, prm_format, style, cls, tags):
  files = hf_tokenizer.load(hf_testing.write_tokenizer(tmp_path, style))
  prompt = tuple(files.encode("What is 2+3?"))
  build = hf_prms.input_builder(prm_format, files, files.tokenizer.decode,
                                {prompt: "What is 2+3?"}, "\n\n")
  assert isinstance(build, cls)
  assert (hf_prms.step_tags(prm_format, files) is not None) == tags
  if build is not None:
    solution = files.encode("2+3=5.\n\nSo 5.")
    ids, positions = build(prompt, solution, [len(files.encode("2+3=5.\n\n")),
                                              len(solution)])
    assert len(positions) == 2 and max(positions) < len(ids)
    with pytest.raises(prm_inputs.PrmInputError, match="no question"):
      build((1, 2, 3), solution, [len(solution)])


def test_unknown_format_named():
  with pytest.raises(ValueError, match=r"Checkpoints\.prm_format='orm' is "
                     r"not one of"):
    hf_prms.check_format("orm", "Checkpoints.prm_format")
