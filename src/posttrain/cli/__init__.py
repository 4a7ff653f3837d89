"""The ``posttrain`` command line: thin argument parsing over the library modules, and the one place commands are
registered.

Every user error surfaces as ``error: <one line>`` on stderr with exit status 2. Each command module imports
its library code inside the command function, so ``posttrain --help`` starts without loading torch.
"""

from __future__ import annotations

import sys

from ..errors import PosttrainError
from . import core, export, generate_set, grid, instruct, judge, pcp, self_training, stepgame, tasks
from .parser import EPILOG, OneLineErrorParser

__all__ = ["EPILOG", "OneLineErrorParser", "build_parser", "main"]


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(
        prog="posttrain",
        description="Post-training of language models when labels are scarce (IT/IM instruction tuning, ...).",
        epilog=EPILOG,
    )
    from ..version import __version__

    parser.add_argument("--version", action="version", version=f"posttrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    core.register(sub)
    stepgame.register(sub)
    tasks.register(sub)
    grid.register(sub)
    self_training.register(sub)
    pcp.register(sub)
    instruct.register(sub)
    judge.register(sub)
    generate_set.register(sub)
    export.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except PosttrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
