"""The command line of several streams: ``--source`` given more than once. Standard library only
(``runtime-live`` asks :func:`several_sources` before anything is imported); the streams themselves
are :mod:`runtime.streams`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def several_sources(argv: Sequence[str] | None) -> bool:
    """Whether a command line gives ``--source`` more than once (the streams' mode of runtime-live)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    count = 0
    for arg in argv:
        if arg == "--":
            break
        count += arg == "--source" or arg.startswith("--source=")
    return count > 1


def split_sources(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The ``--source`` values, and the rest of the command line with the first source only."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--source", action="append", default=[])
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    return known.source, ["--source", known.source[0], *rest]
