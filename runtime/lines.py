"""Outputs written whole: text lines appended one record at a time (JSON Lines, CSV), and files
written in one piece (an image, a chart).

A file is written to a temporary file beside it and renamed into place when finished; a stream
(a pipe, ``/dev/stdout``: see :func:`runtime.files.is_stream`) is written to directly. A line is
written whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from runtime.cli_support import os_error_text
from runtime.errors import EXIT_USAGE, OutputError
from runtime.files import TempFile, display, failure_cause, is_stream, open_stream, write_all


def _open_stream_output(path: Path) -> int:
    """:func:`runtime.files.open_stream`, with its failures as one-line errors (a pipe with no reader)."""
    try:
        return open_stream(path)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError(f"cannot write {display(path)}: the pipe has no reader; start the reader first",
                              EXIT_USAGE) from None
        raise OutputError(f"cannot write {display(path)}: {os_error_text(exc)}") from None


class LineWriter:
    """Text lines appended to a file (renamed into place by :meth:`close`) or a stream, each write whole
    or not at all: a failed write is cut off, and the file ends after the last whole one.

    Subclasses turn a record into bytes (:meth:`encode`) and may start the file with a
    :attr:`header`.

    Args:
        path: Destination file, or a stream to write to.
    """

    header = b""  # written first, with the first record

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._tmp: TempFile | None = None
        self._fd: int | None = None
        self.stream = is_stream(path)  # a pipe or device: written to directly, not renamed onto
        self.waiting_on_reader = False  # inside a write to a stream (a stop signal may end it: see runtime.live)
        self.started = False  # the header and a first record are written

    def encode(self, record: dict) -> bytes:
        """The bytes of one record (whole lines)."""
        raise NotImplementedError

    def write(self, record: dict) -> None:
        """Append one record.

        Raises:
            OutputError: The line could not be written; the file ends after the last whole line.
            BrokenPipeError: The reader of a streamed output went away.
        """
        data = self.encode(record)
        if self._fd is None:
            self.open()
        if not self.started:
            data = self.header + data
        start = None if self.stream else os.lseek(self._fd, 0, os.SEEK_CUR)
        self.waiting_on_reader = self.stream  # a pipe's reader may stop reading: this write may block for good
        try:
            write_all(self._fd, data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if start is not None:  # cut the torn line off: the file ends after the last whole one
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
            raise OutputError(f"could not write {display(self.path)}: {failure_cause(self.path, exc)}") from None
        finally:
            self.waiting_on_reader = False
        self.lines += 1
        self.started = True

    def open(self) -> None:
        """Open the file now (the first :meth:`write` does otherwise): a pipe with no reader is an
        error at once, never a wait that no signal can end.

        Raises:
            OutputError: It cannot be opened (no reader on a pipe, no permission, no space).
        """
        if self._fd is not None:
            return
        if self.stream:
            self._fd = _open_stream_output(self.path)
        else:
            self._tmp = TempFile(self.path)
            self._fd = self._tmp.fd

    def close(self) -> bool:
        """Finalise: rename the file into place. True when a file was written (a first line came).

        Raises:
            OutputError: It could not be finalised; the destination is as it was.
        """
        if self._tmp is not None:
            tmp, self._tmp, self._fd = self._tmp, None, None
            tmp.commit()
            return True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            return True
        return False

    def discard(self) -> None:
        """Drop what was written (after a failure): the destination stays as it was."""
        if self._tmp is not None:
            self._tmp.discard()
            self._tmp = self._fd = None


class JsonlWriter(LineWriter):
    """One JSON line per record, each line written whole or not at all.

    Strict JSON: a NaN or infinite number is an error, never a bare ``NaN`` (callers write null).

    Args:
        path: Destination file (renamed into place by :meth:`close`), or a stream to write to.
    """

    def encode(self, record: dict) -> bytes:
        return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``: through a temporary file renamed onto it, or straight
    into a stream (a pipe, ``/dev/stdout``).

    Raises:
        OutputError: The write failed (the real cause is named); the destination is as it was.
    """
    if is_stream(path):
        fd = _open_stream_output(path)
        try:
            write_all(fd, data)
        except OSError as exc:
            raise OutputError(f"could not write {display(path)}: {os_error_text(exc)}") from None
        finally:
            os.close(fd)
        return
    tmp = TempFile(path)
    try:
        write_all(tmp.fd, data)
    except OSError as exc:
        tmp.discard()
        raise OutputError(f"could not write {display(path)}: {failure_cause(path, exc)}") from None
    tmp.commit()
