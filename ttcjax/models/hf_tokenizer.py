"""A Hugging Face tokenizer directory: tokenizer.json, its special tokens and
the chat template of tokenizer_config.json, without transformers.

`load(directory)` returns an `HFTokenizerFiles`: the fast tokenizer
(`tokenizers.Tokenizer`), the special tokens tokenizer_config.json names
(`bos_token`, `eos_token`, `pad_token`), and `render_chat(messages, ...)`,
which renders its `chat_template` as transformers' `apply_chat_template(...,
tokenize=False)` does: a sandboxed jinja2 environment with `trim_blocks`,
`lstrip_blocks`, the loop-controls extension, a `tojson` filter and the
`raise_exception` / `strftime_now` globals. Templates that print today's
date (Llama 3.2's) are pinned by passing `date_string` in `template_vars`,
so the same problem renders the same text on every day.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Mapping, Sequence

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
JINJA_FILE = "chat_template.jinja"


class TokenizerFilesError(ValueError):
  """A tokenizer directory ttcjax cannot use, and why."""


def _token_text(value: Any) -> str | None:
  # tokenizer_config.json writes a special token as a string or as an
  # AddedToken dict ({"content": "<s>", ...}).
  if isinstance(value, dict):
    return value.get("content")
  return value


@dataclasses.dataclass(frozen=True, eq=False)
class HFTokenizerFiles:
  """A loaded tokenizer directory.

  Attributes:
    tokenizer: the fast tokenizer of tokenizer.json.
    directory: where it came from (for error messages).
    chat_template: the jinja template, or None.
    special_tokens: `bos_token`, `eos_token`, `pad_token`, `unk_token` text
      as tokenizer_config.json gives them (missing ones absent).
    template_vars: extra variables every rendering sees (`date_string`).
  """
  tokenizer: Any  # tokenizers.Tokenizer (imported on load)
  directory: str
  chat_template: str | None = None
  special_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
  template_vars: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def token_id(self, text: str, what: str) -> int:
    """The id of one token's text; `what` names the setting, for errors."""
    token = self.tokenizer.token_to_id(text)
    if token is None:
      raise TokenizerFilesError(
          f"{os.path.join(self.directory, TOKENIZER_FILE)}: {what}={text!r} "
          "is not one token of the vocabulary; check the setting")
    return token

  def special_id(self, name: str) -> int | None:
    """The id of special token `name` ('bos_token', ...), or None."""
    text = self.special_tokens.get(name)
    return None if text is None else self.token_id(text, name)

  def encode(self, text: str) -> list[int]:
    """Ids of `text`, special tokens written in it included, none added."""
    return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

  def render_chat(self, messages: Sequence[Mapping[str, str]],
                  add_generation_prompt: bool = False) -> str:
    """The chat template applied to `messages` (a list of role/content)."""
    if self.chat_template is None:
      raise TokenizerFilesError(
          f"{os.path.join(self.directory, CONFIG_FILE)}: no chat_template; "
          "use a plain prompt template, or a tokenizer directory with one")
    template = _compile(self.chat_template)
    variables = {**{k: v for k, v in self.special_tokens.items()},
                 **dict(self.template_vars)}
    return template.render(messages=list(messages),
                           add_generation_prompt=add_generation_prompt,
                           **variables)


_COMPILED: dict[str, Any] = {}


def _compile(source: str):
  """The compiled template, cached by source (compiling is slow)."""
  if source not in _COMPILED:
    import jinja2  # pylint: disable=g-import-not-at-top
    from jinja2 import sandbox  # pylint: disable=g-import-not-at-top

    def raise_exception(message):
      raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None,
               sort_keys=False):
      return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                        separators=separators, sort_keys=sort_keys)

    def strftime_now(format_string):
      return datetime.datetime.now().strftime(format_string)

    env = sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    _COMPILED[source] = env.from_string(source)
  return _COMPILED[source]


def load(directory: str | os.PathLike,
         template_vars: Mapping[str, Any] | None = None) -> HFTokenizerFiles:
  """Loads tokenizer.json and (if present) tokenizer_config.json.

  Args:
    directory: a Hugging Face model or tokenizer directory.
    template_vars: extra variables for the chat template, e.g.
      `{"date_string": "26 Jul 2024"}`.

  Raises:
    TokenizerFilesError: no tokenizer.json, or an unreadable config.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  directory = os.fspath(directory)
  path = os.path.join(directory, TOKENIZER_FILE)
  if not os.path.exists(path):
    raise TokenizerFilesError(f"{path}: not found; ttcjax reads only the fast "
                              "tokenizer format (tokenizer.json)")
  tokenizer = tokenizers.Tokenizer.from_file(path)
  config_path = os.path.join(directory, CONFIG_FILE)
  config: dict[str, Any] = {}
  if os.path.exists(config_path):
    try:
      with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    except json.JSONDecodeError as e:
      raise TokenizerFilesError(f"{config_path}:{e.lineno}: invalid JSON: "
                                f"{e.msg}") from None
  template = config.get("chat_template")
  jinja_path = os.path.join(directory, JINJA_FILE)
  if os.path.exists(jinja_path):  # transformers >= 4.47 saves it apart
    with open(jinja_path, encoding="utf-8") as f:
      template = f.read()
  if isinstance(template, list):  # named templates: take 'default'
    named = {t.get("name"): t.get("template") for t in template}
    if "default" not in named:
      raise TokenizerFilesError(f"{config_path}: chat_template lists "
                                f"{sorted(named)} but no 'default'")
    template = named["default"]
  special = {name: _token_text(config.get(name)) for name in
             ("bos_token", "eos_token", "pad_token", "unk_token")}
  return HFTokenizerFiles(
      tokenizer=tokenizer, directory=directory, chat_template=template,
      special_tokens={k: v for k, v in special.items() if v is not None},
      template_vars=dict(template_vars or {}))
