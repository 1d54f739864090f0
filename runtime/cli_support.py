"""What every command of the project shares: one-line errors, exit codes, atomic writes.

A user mistake is a :class:`UserError`: the command prints one line naming the problem and the
fix on stderr and exits 2, with no traceback. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

EXIT_USAGE = 2  # bad arguments or bad input: the user can fix it
EXIT_FAILED = 1  # the job ran and failed (e.g. an export that did not verify)
EXIT_INTERRUPTED = 130  # Ctrl-C, after finalising outputs


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix.

    Attributes:
        exit_code: The process exit code to use (2 unless told otherwise).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where there is a default worth showing (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line and whose help shows defaults."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's own API
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print one line and exit 2 (argparse prints the whole usage block)."""
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def run_main(main: Callable[[Sequence[str] | None], int | None], prog: str) -> Callable[..., int]:
    """Wrap a command's ``main`` so that user errors are one line, never a traceback.

    Args:
        main: The command body; returns an exit code or None for 0.
        prog: The command name used as the prefix of error lines.

    Returns:
        A console-script entry point.
    """

    def entry(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(argv)
        except UserError as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            code = exc.exit_code
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            code = EXIT_INTERRUPTED
        sys.stdout.flush()
        return int(code or 0)

    entry.__doc__ = main.__doc__
    return entry


def check_output_path(path: Path, what: str = "output") -> Path:
    """Fail early, with the fix, if ``path`` cannot be written.

    Raises:
        UserError: The folder is missing or not writable, or the path is a folder.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{what} folder {parent} does not exist: create it or choose another path")
    if path.is_dir():
        raise UserError(f"{what} path {path} is a folder: give a file name")
    try:  # a real probe: os.access() says yes to root even where writing fails
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise UserError(f"{what} folder {parent} is not writable ({exc.strerror}): choose another path") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    A crash or an exception leaves ``dest`` as it was (never truncated) and removes the
    temporary file.

    Args:
        dest: The final file.
        suffix: Suffix of the temporary file (default: ``dest``'s own, which some writers need).
    """
    dest = Path(dest)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix, dir=dest.parent
        )
    except OSError as exc:
        raise UserError(f"cannot write {dest} ({exc.strerror}): choose a writable folder") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets normal permissions
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
