"""Safe file primitives for outputs: temporary files renamed when whole, checked writes, true causes.

OpenCV crashes on a path that is not valid UTF-8, so paths handed to it go through
:func:`opencv_path`; messages show any path through :func:`display`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat
import tempfile
from pathlib import Path

from runtime.cli_support import os_error_text, temp_stem
from runtime.errors import OutputError

LOW_SPACE_BYTES = 1 << 20  # free space below which a failed write is put down to a full disk


def is_stream(path: Path) -> bool:
    """True when ``path`` is a stream to write to directly: a terminal, a pipe, ``/dev/stdout``, a socket."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one file: the same resolved path, or the same inode (links)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def opencv_path(path: Path) -> tuple[str, int | None]:
    """A ``str`` path OpenCV can take for ``path``, and a folder descriptor to close afterwards.

    OpenCV crashes on a path that is not valid UTF-8. For such a path (on Linux) the file is
    reached through ``/proc/self/fd/<folder descriptor>/<name>`` instead, which keeps the file
    name's suffix (OpenCV picks the container from it).

    Raises:
        OutputError: The name is not UTF-8 and this system has no ``/proc/self/fd``.
    """
    text = str(path)
    if is_utf8(text):
        return text, None
    name = path.name
    if not is_utf8(name):
        raise OutputError(f"{display(path)}: the file name is not valid UTF-8: rename it")
    if not os.path.isdir("/proc/self/fd"):
        raise OutputError(f"{display(path)}: the folder name is not valid UTF-8: rename it")
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"/proc/self/fd/{dir_fd}/{name}", dir_fd


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: Path | str) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def failure_cause(path: Path, exc: OSError | None = None) -> str:
    """The likeliest true cause of a failed write to ``path``, for when the writer does not say."""
    folder = path.parent
    if not folder.is_dir():
        return f"the output folder {display(folder)} was removed during the run"
    if exc is not None and exc.errno not in (None, errno.EIO):
        return os_error_text(exc, display(path))
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
            return f"no space left on device ({display(folder)})"
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"file too large for the file-size limit (ulimit -f: {limit} bytes) ({display(path)})"
    return f"the writer failed ({display(path)})"


class TempFile:
    """A temporary file beside ``dest``, renamed onto it by :meth:`commit`, else removed."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        safe = temp_stem(dest.name) if is_utf8(dest.name) else "emocam-output"  # OpenCV may open it by name
        try:
            fd, name = tempfile.mkstemp(prefix=f".{safe}.partial-", suffix=dest.suffix, dir=dest.parent)
        except OSError as exc:
            raise OutputError(f"cannot write {display(dest)}: {os_error_text(exc)}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the result gets the usual permissions
        self.fd: int | None = fd
        self.path = Path(name)

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def commit(self) -> None:
        """Flush to disk and rename onto the destination.

        Raises:
            OutputError: The data cannot be flushed or the rename fails (the folder is gone).
        """
        try:
            fd = self.fd if self.fd is not None else os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                if fd != self.fd:
                    os.close(fd)
            self.close_fd()
            os.replace(self.path, self.dest)
        except OSError as exc:
            raise OutputError(f"could not finish {display(self.dest)}: {failure_cause(self.dest, exc)}") from None

    def discard(self) -> None:
        self.close_fd()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out (raises OSError on a failed write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]
