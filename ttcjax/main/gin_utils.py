"""gin for ttcjax entry points: registration, parsing with clear errors, output.

gin stays out of the core packages: their hyper-parameters are plain frozen
dataclasses, registered here with `gin.external_configurable` under the module
`ttcjax`, so a gin file binds `ModelConfig.d_model = 64` (or, spelled out,
`ttcjax.ModelConfig.d_model`). Entry points call

    gin_utils.register(gin_utils.core_configurables() | their_own)
    gin_utils.parse(gin_files, gin_bindings)
    run = gin_utils.build(TrainRun)
    gin_utils.write_operative_config(workdir)

and every failure of those steps is a `GinConfigError` that names the flag,
file or binding at fault, raised before any real work starts.

Search paths: a --gin_file is looked up as given (relative to the working
directory), then under each extra search path, then under the repository's
`gin_configs/`; an `include` under the search paths first, so
`include 'models/tiny.gin'` works from any directory.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tokenize
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from absl import logging
from etils import epath
import gin

CONFIG_FILENAME = "config.gin"
GIN_MODULE = "ttcjax"
REPO_GIN_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))), "gin_configs")

_REQUIRED_RE = re.compile(
    r"^(?P<key>\S+) set to `%gin\.REQUIRED` but not subsequently overridden")
_UNDEFINED_MACRO_RE = re.compile(r"No bindings specified for '(?P<name>[^/']+)"
                                 r"/gin\.macro'")
_NO_PARAM_RE = re.compile(r"Configurable '(?P<cfg>[^']+)' doesn't have a "
                          r"parameter named '(?P<param>[^']+)'")
_NO_CONFIGURABLE_RE = re.compile(r"No configurable matching '(?P<cfg>[^']+)'")
_REQUIRED_DECL_RE = r"^\s*{name}\s*=\s*%gin\.REQUIRED\b"
_INCLUDE_RE = re.compile(r"^\s*include\s+['\"](?P<path>[^'\"]+)['\"]", re.M)


class GinConfigError(ValueError):
  """A gin file, binding or macro is wrong; the message says which."""


def core_configurables() -> dict[str, type]:
  """The core hyper-parameter dataclasses, by the name gin files use."""
  # Imported here: registering is the entry point's choice, not the import's.
  from ttcjax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ttcjax.partitioning import MeshConfig  # pylint: disable=g-import-not-at-top
  from ttcjax.tasks.arithmetic import ArithmeticConfig  # pylint: disable=g-import-not-at-top
  from ttcjax.tasks.countdown import CountdownConfig  # pylint: disable=g-import-not-at-top
  from ttcjax.training.config import TrainConfig  # pylint: disable=g-import-not-at-top
  return {"ModelConfig": ModelConfig, "TrainConfig": TrainConfig,
          "MeshConfig": MeshConfig, "ArithmeticConfig": ArithmeticConfig,
          "CountdownConfig": CountdownConfig}


def register(configurables: Mapping[str, Callable[..., Any]]) -> None:
  """Registers classes/functions with gin under `ttcjax.<name>`; idempotent."""
  for name, fn_or_cls in configurables.items():
    try:
      gin.get_configurable(fn_or_cls)
    except ValueError:  # not registered yet
      gin.external_configurable(fn_or_cls, name=name, module=GIN_MODULE)


def define_flags() -> tuple[flags.FlagHolder, flags.FlagHolder,
                            flags.FlagHolder]:
  """Defines --gin_file, --gin_bindings and --gin_search_paths."""
  return (
      flags.DEFINE_multi_string(
          "gin_file", [], "gin config file; repeat, applied in order (e.g. "
          "models/<size>.gin, then runs/<mode>.gin, or one experiment)."),
      flags.DEFINE_multi_string(
          "gin_bindings", [], "one gin binding, applied after the files, e.g. "
          "'TRAIN_STEPS = 100'; repeat for more."),
      flags.DEFINE_multi_string(
          "gin_search_paths", [], "extra directories in which gin files and "
          "includes are looked up (the repo's gin_configs/ always is)."),
  )


def search_paths(extra: Sequence[str] = ()) -> list[str]:
  """Where gin files are looked up, in order: as given, extra, gin_configs/."""
  paths = [""] + [os.fspath(p) for p in extra]
  if os.path.isdir(REPO_GIN_CONFIGS):
    paths.append(REPO_GIN_CONFIGS)
  return list(dict.fromkeys(paths))


def resolve(path: str, paths: Sequence[str]) -> str | None:
  """The first existing `<search path>/<path>`, or None."""
  if os.path.isabs(path):
    return path if os.path.isfile(path) else None
  for prefix in paths:
    candidate = os.path.join(prefix, path)
    if os.path.isfile(candidate):
      return candidate
  return None


def _described(paths: Sequence[str]) -> str:
  return ", ".join(repr(p or os.getcwd()) for p in paths)


def _suggest(word: str, candidates) -> str:
  close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
  return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _registry():
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  return gin_config._REGISTRY  # pylint: disable=protected-access


def _parameters(name: str) -> list[str]:
  """Parameter names of a registered configurable (for suggestions)."""
  try:
    entry = _registry().get_match(name)
    return list(inspect.signature(entry.wrapped).parameters) if entry else []
  except (ValueError, TypeError, KeyError):
    return []


def _explain(message: str) -> str:
  """gin's message with a suggestion for a misspelt configurable/param."""
  first = message.split("\n", 1)[0]
  suggestion = ""
  match = _NO_PARAM_RE.search(first)
  if match:
    suggestion = _suggest(match["param"], _parameters(match["cfg"]))
  match = _NO_CONFIGURABLE_RE.search(first)
  if match:
    names = {s.rsplit(".", 1)[-1] for s, _ in _registry().items()}
    suggestion = _suggest(match["cfg"].rsplit(".", 1)[-1], names)
  if suggestion:
    first = first.rstrip(".") + suggestion
  rest = message.split("\n", 1)[1:]
  return "\n".join([first] + rest)


def _files_text(files: Sequence[str], paths: Sequence[str]) -> dict[str, str]:
  """Text of the (resolved) files and everything they include, by path."""
  texts, todo = {}, list(files)
  while todo:
    found = todo.pop()
    if found is None or found in texts:
      continue
    with open(found, encoding="utf-8") as f:
      texts[found] = f.read()
    todo.extend(resolve(m["path"], _include_order(paths))
                for m in _INCLUDE_RE.finditer(texts[found]))
  return texts


def _finalize_error(message: str, files: Sequence[str],
                    bindings: Sequence[str], paths: Sequence[str]) -> str:
  """Rewrites gin's finalize errors (REQUIRED, undefined macros) clearly."""
  match = _REQUIRED_RE.search(message)
  if match:
    key = match["key"]
    if key.endswith("/macro.value"):
      name = key[:-len("/macro.value")]
      pattern = re.compile(_REQUIRED_DECL_RE.format(name=re.escape(name)),
                           re.M)
      where = [p for p, text in _files_text(files, paths).items()
               if pattern.search(text)]
      bound = {b.split("=", 1)[0].strip() for b in bindings if "=" in b}
      return (f"gin macro {name} is %gin.REQUIRED"
              f"{' (declared in ' + ', '.join(where) + ')' if where else ''}"
              f" but never bound: add --gin_bindings='{name} = ...' or bind "
              f"it in an experiment file after the include"
              f"{_suggest(name, bound).replace('did you mean', 'you bound')}")
    return (f"gin binding {key} is %gin.REQUIRED but never bound: add "
            f"--gin_bindings='{key} = ...'")
  match = _UNDEFINED_MACRO_RE.search(message)
  if match:
    name = match["name"]
    hint = (" MODEL comes from a model file: pass --gin_file=models/<size>"
            ".gin (tiny, small, 1b, 7b) before the run file."
            if name == "MODEL" else
            f" Define it, e.g. --gin_bindings='{name} = ...'.")
    return f"gin macro %{name} is used but never defined.{hint}"
  return _explain(message)


def _include_order(paths: Sequence[str]) -> list[str]:
  return [p for p in paths if p] + [""]


def _check_includes(flag_value: str, path: str, paths: Sequence[str],
                    seen: frozenset[str] = frozenset()) -> None:
  """Raises GinConfigError naming the first include of `path` not found,
  or a file that is not UTF-8 text."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise GinConfigError(f"--gin_file={flag_value}: {path}:{line}: not "
                         f"UTF-8 text (byte {e.start})") from None
  for match in _INCLUDE_RE.finditer(text):
    line = text.count("\n", 0, match.start()) + 1
    found = resolve(match["path"], _include_order(paths))
    if found is None:
      raise GinConfigError(
          f"--gin_file={flag_value}: {path}:{line}: include "
          f"'{match['path']}' not found (looked in "
          f"{_described(_include_order(paths))})")
    if found not in seen:
      _check_includes(flag_value, found, paths, seen | {path})


def _set_include_paths(paths: Sequence[str]) -> None:
  """Makes gin look includes up under the search paths first, then as given.

  Search paths go first: for a path that is not a file under the working
  directory, gin's second reader imports its directory as a Python package,
  which fails outright on a namespace package of the same name (`models/`).
  """
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  ordered = _include_order(paths)
  prefixes[:] = ordered + [p for p in prefixes if p not in ordered]


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str],
          extra_search_paths: Sequence[str] = ()) -> None:
  """Replaces the gin config with the files, then the bindings, and locks it.

  Register the configurables first: gin checks every binding against the
  signature of its configurable while parsing.

  Args:
    gin_files: gin files, applied in order.
    gin_bindings: single bindings (one per --gin_bindings flag), applied
      after the files.
    extra_search_paths: directories to look gin files up in (see module doc).

  Raises:
    GinConfigError: a file is missing or wrong, a binding names an unknown
      configurable or parameter, a %gin.REQUIRED macro or binding is never
      bound, or a used macro is never defined. The message names the flag,
      file and binding.
  """
  paths = search_paths(extra_search_paths)
  _set_include_paths(paths)
  resolved = []
  for name in gin_files:
    resolved.append(resolve(name, paths))
    if resolved[-1] is None:
      raise GinConfigError(f"--gin_file={name}: no such gin file (looked in "
                           f"{_described(paths)})")
  gin.clear_config()  # also unlocks a config finalized before
  for name, path in zip(gin_files, resolved):
    _check_includes(name, path, paths)
  for name, path in zip(gin_files, resolved):
    try:
      gin.parse_config_file(os.path.abspath(path))
    # TypeError: gin's package-resource reader on a missing include;
    # KeyError: a selector matching two configurables.
    # tokenize.TokenError: a file cut short inside brackets.
    except (ValueError, SyntaxError, OSError, ImportError, TypeError,
            KeyError, tokenize.TokenError) as e:
      raise GinConfigError(f"--gin_file={name}: {_explain(str(e))}") from None
  for binding in gin_bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError, ImportError, KeyError, TypeError,
            tokenize.TokenError) as e:
      raise GinConfigError(
          f"--gin_bindings={binding!r}: {_explain(str(e))}") from None
  try:
    gin.finalize()
  except (ValueError, RuntimeError) as e:
    raise GinConfigError(
        _finalize_error(str(e), resolved, gin_bindings, paths)) from None


def build(fn_or_cls: Callable[..., Any]) -> Any:
  """Calls a registered configurable with the parsed bindings.

  Raises:
    GinConfigError: an argument is missing or fails its dataclass's
      validation; gin's message names the configurable being called.
  """
  try:
    return gin.get_configurable(fn_or_cls)()
  except (TypeError, ValueError) as e:
    raise GinConfigError(f"gin config does not build "
                         f"{getattr(fn_or_cls, '__name__', fn_or_cls)}: "
                         f"{e}") from None


def write_operative_config(workdir: epath.PathLike,
                           filename: str = CONFIG_FILENAME) -> epath.Path:
  """Writes `gin.operative_config_str()` to `workdir/filename` atomically.

  Only process 0 writes (every process holds the same config). The file
  parses back (`--gin_file=<workdir>/config.gin`) into the same run.

  Returns:
    The path of the file.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir) / filename
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{filename}.tmp"
    tmp.write_text(gin.operative_config_str())
    tmp.replace(path)
    logging.info("wrote %s", path)
  return path
