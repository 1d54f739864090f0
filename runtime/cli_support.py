"""What every command of the project shares: one-line errors, exit codes, bounded numbers, safe
streams, atomic writes.

Any :class:`runtime.errors.EmocamError` that reaches a command's entry point (library errors in
plain words, and :class:`UserError`, the command line's own, worded with flags) becomes one line
naming the problem and the fix on stderr, and the error's exit code (2 for a mistake the user can
fix), with no traceback. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from runtime.errors import EXIT_FAILED as EXIT_FAILED  # re-exported: the commands import exit codes from here
from runtime.errors import EXIT_USAGE, EmocamError

EXIT_INTERRUPTED = 130  # Ctrl-C, after finalising outputs
#: Threads named so may be blocked inside a native library (OpenCV opening a stream, reading a camera):
#: a command that ends while one is alive leaves with ``os._exit``, as C++ destructors running beside
#: such a thread abort the process ("terminate called without an active exception").
NATIVE_THREAD_PREFIX = "emocam-native-"
EXIT_BROKEN_PIPE = 141  # the reader of stdout (or of a piped output) went away: 128 + SIGPIPE, as shell tools


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP for a few lines of the main thread; one that arrives
    meanwhile is only noted, then raised again when the block ends, to stop the program as it would
    have. (An ignored signal stays ignored.)

    For the steps a stop must not split: a native call that a handled signal would make fail (the
    engine building a session reads as a broken model), or a temporary file made and not yet noted
    (it would be left behind). Blocking the signal with ``pthread_sigmask`` would not do: another
    thread would take it, and the main thread would still raise at its next instruction.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


class UserError(EmocamError):
    """A command-line mistake, worded with the flags (``--source``): the CLI layer's own error.

    Library code raises the plain-worded :class:`runtime.errors.EmocamError` subclasses instead.

    Attributes:
        exit_code: The process exit code to use (2 unless told otherwise).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message, exit_code)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where there is a default worth showing (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        notes = []
        bounds = getattr(action.type, "bounds_text", None)
        if bounds and bounds not in text:
            notes.append(f"range {bounds}")
        shown = action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool)
        if shown and action.option_strings and "default" not in text:
            notes.append("default: %(default)s")
        return f"{text} ({', '.join(notes)})" if notes else text


class Number:
    """An argparse ``type``: a finite int or float within ``[lo, hi]``, named in ``--help``.

    ``nan``, ``inf``, ``1e20`` for an int, or any value out of range is refused by argparse with
    one line that gives the range. ``lo_open`` makes the low end exclusive (``(0, 1]``).

    Example (as ``parser.add_argument("--threads", type=Number(int, 0, 256))``):
        >>> Number(int, 0, 256)("8")
        8
        >>> Number(float, 0, 1, lo_open=True).bounds_text
        '(0, 1]'
    """

    def __init__(self, kind: type, lo: float, hi: float, lo_open: bool = False) -> None:
        if kind not in (int, float):
            raise TypeError(f"Number takes int or float, got {kind}")
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.__name__ = kind.__name__  # argparse names the type in some messages
        left = "(" if lo_open else "["
        show = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")
        self.bounds_text = f"{left}{show(lo)}, {show(hi)}]"

    def __call__(self, text: str) -> int | float:
        word = "an integer" if self.kind is int else "a number"
        want = f"{word} in {self.bounds_text}"
        try:
            value = self.kind(text.strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {want}") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {want}")
        below = value <= self.lo if self.lo_open else value < self.lo
        if below or value > self.hi:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give {want}")
        return value

    def __repr__(self) -> str:
        return f"Number({self.kind.__name__}, {self.lo}, {self.hi})"


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a path: refuses the empty string (``Path("")`` would be ``.``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: give a file or folder name")
    return Path(text)


#: Shared bounds, so every command says the same thing about the same flag.
SEED = Number(int, 0, 2**32 - 1)  # numpy's and TensorFlow's seeds are 32-bit unsigned
THREADS = Number(int, 0, 256)  # onnxruntime intra-op threads (0: one per core)


def version_text(prog: str) -> str:
    """``prog``'s ``--version`` line: the command, the project and its version (``runtime.__version__``)."""
    from runtime import __version__

    return f"{prog} (emocam) {__version__}"


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line, whose help shows defaults, and which
    answers ``--version`` (every command of the project has it)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=version_text(self.prog),
                          help="print the version and exit")

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
        guard_std_streams()
        try:
            code = main(argv)
            sys.stdout.flush()
        except EmocamError as exc:  # UserError included: one line, no traceback
            sys.stderr.write(f"{prog}: error: {one_line(str(exc))}\n")
            code = exc.exit_code
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            code = EXIT_INTERRUPTED
        except ModuleNotFoundError as exc:  # an optional extra's module (keras on a base install): which extra
            message = missing_extra(exc.name)
            if message is None:
                raise
            sys.stderr.write(f"{prog}: error: {message}\n")
            code = EXIT_USAGE
        except BrokenPipeError:
            _silence_stdout()
            sys.stderr.write(f"{prog}: stopped: the reader of its output went away (broken pipe)\n")
            code = EXIT_BROKEN_PIPE
        except OSError as exc:  # a path the system refuses (too long, a loop, no permission...): still one line
            sys.stderr.write(f"{prog}: error: {one_line(os_error_text(exc))}: check the path and try again\n")
            code = EXIT_FAILED if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT) else EXIT_USAGE
        try:
            sys.stdout.flush()
        except OSError:  # the reader of stdout went away after the last line: nothing more to say
            _silence_stdout()
        files = sys.modules.get("runtime.files")  # not imported: no temporary file was made
        if files is not None:
            files.remove_leftovers()  # a stop signal between a temporary file's making and its owner's try
        if any(t.name.startswith(NATIVE_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate()):
            sys.stderr.flush()
            os._exit(int(code or 0))
        return int(code or 0)

    entry.__doc__ = main.__doc__
    return entry


class _SafeStream:
    """A text stream whose writes never raise: stderr closed or broken must not turn into a traceback."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # EPIPE, EBADF, or a closed file object
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def guard_std_streams() -> None:
    """Make stdin, stdout and stderr safe to use, whatever the caller left them as.

    A closed descriptor 0, 1 or 2 is reopened on ``/dev/null``: otherwise the next file this
    process opens takes that number, and C libraries' log lines (OpenCV, onnxruntime) would land
    in the user's output. ``sys.stderr`` then never raises (a closed or broken stderr loses the
    message, not the run). ``SIGXFSZ`` (a file-size limit, ``ulimit -f``) is ignored so that a
    write past the limit fails with ``EFBIG`` and is reported, instead of killing the process.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    if not isinstance(sys.stderr, _SafeStream):
        sys.stderr = _SafeStream(sys.stderr)
    if hasattr(signal, "SIGXFSZ"):
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave it
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


#: The optional extras, by the top-level modules they install (see pyproject.toml).
EXTRAS = {
    "tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "onnxconverter_common": "train",
    "matplotlib": "plot", "av": "video",
}


def missing_extra(module: str | None) -> str | None:
    """The one line for a missing optional ``module`` (which extra to install), or None if it is no extra's."""
    top = (module or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    what = {"train": "training and export need", "plot": "plots need", "video": "H.264 video with sound needs"}[extra]
    return f"{top} is not installed: {what} the [{extra}] extra: pip install \"emocam[{extra}]\""


def _silence_stdout() -> None:
    """Point descriptor 1 at /dev/null, so that the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)


def one_line(text: str) -> str:
    """``text`` on one line: a newline or carriage return (in a file name, say) is shown escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), cut to ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def os_error_text(exc: OSError, path: Path | str | None = None) -> str:
    """A short, true cause for a failed write or read: "no space left on device (/tmp/x)".

    Names the errno's meaning, and for ``EFBIG`` the file-size limit (``ulimit -f``).
    """
    if exc.errno == errno.EFBIG:
        cause = "file too large for the file-size limit (ulimit -f) or the file system"
    elif exc.errno is not None:
        cause = os.strerror(exc.errno).lower()
    else:
        cause = str(exc) or type(exc).__name__
    where = path if path is not None else exc.filename
    return f"{cause} ({where})" if where else cause


def temp_stem(name: str, limit: int = 96) -> str:
    """``name`` cut to ``limit`` characters, for a temporary file's name beside it.

    A temporary name is the final name plus a few characters: left whole, a valid name close to
    the file system's 255-byte limit would make the temporary one too long.
    """
    return name if len(os.fsencode(name)) <= limit else os.fsdecode(os.fsencode(name)[:limit])


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
        fd, probe = tempfile.mkstemp(prefix=f".{temp_stem(path.name)}.", dir=parent)
    except OSError as exc:
        raise UserError(f"{what} folder {parent} cannot be written to ({exc.strerror}): choose another path") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    A crash or an exception leaves ``dest`` as it was (never truncated) and removes the
    temporary file. The file is :class:`runtime.files.TempFile`, the mechanism of every output.

    Args:
        dest: The final file.
        suffix: Suffix of the temporary file (default: ``dest``'s own, which some writers need).
    """
    from runtime.files import TempFile  # built on this module: imported here, not at the top

    tmp = TempFile(Path(dest), suffix)
    tmp.close_fd()  # the caller's writer opens it by name
    try:
        yield tmp.path
        tmp.commit()
    finally:
        tmp.discard()  # after an exception; after a commit there is nothing left to remove


def default_of(cls: type, name: str) -> object:
    """The default of ``cls``'s ``name`` argument: the classes hold the defaults, and flags repeat none.

    Example:
        >>> default_of(argparse.ArgumentParser, "add_help")
        True
    """
    import inspect

    return inspect.signature(cls).parameters[name].default
