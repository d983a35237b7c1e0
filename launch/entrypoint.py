r"""The container's entrypoint: decode the job's argv and run the entry point.

    python launch/entrypoint.py --ttcjax_argv=<token>      # what jobs pass
    python launch/entrypoint.py search --workdir=... ...   # by hand

The token (`launch.argv.encode_argv`) carries the entry point and its argv
intact through XManager's shell quoting (see `launch/argv.py`). Before the
entry point runs, `ttcjax.distributed.maybe_initialize()` starts
`jax.distributed` on multi-host slices, so the entry points themselves need
not know how they were launched. The entry point then runs in this process
as `python -m ttcjax.main.<entry>` would run it.
"""

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from launch import argv as argv_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse(args: list[str]) -> tuple[str, list[str]]:
  """(entry, argv) from a token or from `<entry> <args...>`."""
  if len(args) == 1 and args[0].startswith(argv_lib.ARGV_FLAG + "="):
    return argv_lib.decode_argv(args[0])
  if not args or args[0] not in argv_lib.ENTRIES:
    raise SystemExit(f"usage: entrypoint.py {argv_lib.ARGV_FLAG}=<token> | "
                     f"<{'|'.join(argv_lib.ENTRIES)}> [args...]; got "
                     f"{args[:1]}")
  return args[0], args[1:]


def main() -> None:
  entry, args = parse(sys.argv[1:])
  from ttcjax import distributed  # pylint: disable=g-import-not-at-top
  distributed.maybe_initialize()
  module = f"ttcjax.main.{entry}"
  sys.argv = [module, *args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
