"""Safe file primitives for outputs: temporary files renamed when whole, checked writes, true causes.

OpenCV crashes on a path that is not valid UTF-8, so paths handed to it go through
:func:`opencv_path`; messages show any path through :func:`display`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import resource
import stat
import tempfile
from pathlib import Path

from runtime.cli_support import os_error_text, signals_held, temp_stem
from runtime.errors import EXIT_USAGE, OutputError

LOW_SPACE_BYTES = 1 << 20  # free space below which a failed write is put down to a full disk
_LIVE: set[Path] = set()  # temporary files made and not yet renamed into place or removed


def remove_leftovers() -> list[Path]:
    """Remove every temporary file that was neither renamed into place nor removed, and return them.

    Its owner removes a temporary file on any exception, but a stop signal can arrive after the
    file is made and before its owner holds it (the owner's ``try`` not yet entered): the commands
    call this on their way out (:func:`runtime.cli_support.run_main`), and it runs at exit too.
    """
    left = sorted(_LIVE)
    for path in left:
        with contextlib.suppress(OSError):
            os.unlink(path)
        _LIVE.discard(path)
    return left


atexit.register(remove_leftovers)


#: Paths that name a descriptor this process already holds: written through that descriptor itself.
_FD_PATH = re.compile(r"/dev/(stdout|stderr)|/dev/fd/(\d+)|/proc/(?:self|thread-self)/fd/(\d+)")


def _system_path(path: Path) -> str | None:
    """The ``/dev/...`` or ``/proc/...`` path that ``path`` is, or leads to through symbolic links, else None."""
    absolute = os.path.abspath(os.fsdecode(path))
    for _ in range(8):  # a link (or a chain of them) to /dev/stdout or /proc/self/fd/N
        if absolute.startswith(("/dev/", "/proc/")):
            return absolute
        if not os.path.islink(absolute):
            return None
        absolute = os.path.normpath(os.path.join(os.path.dirname(absolute), os.readlink(absolute)))
    return None


def is_stream(path: Path) -> bool:
    """True when ``path`` is written to directly, never renamed over: a terminal, a pipe, a socket, a
    device, or a path under ``/dev`` or ``/proc`` (or a link to one): ``/dev/stdout`` leads to a
    regular file when stdout is redirected to one, and renaming over it would replace the link."""
    if _system_path(path) is not None:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)


def open_stream(path: Path) -> int:
    """A descriptor to write the stream ``path`` through.

    ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` and ``/proc/self/fd/N`` (or links to them) are
    this process's own descriptors: they are duplicated, so that what is written there and what is
    printed share one file offset and keep their order. Other streams are opened without blocking
    (a pipe with no reader fails at once with ``ENXIO``), then set to blocking writes.

    Raises:
        OSError: It cannot be opened.
    """
    match = _FD_PATH.fullmatch(_system_path(path) or "")
    if match:
        return os.dup({"stdout": 1, "stderr": 2}.get(match[1] or "") or int(match[2] or match[3]))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
    os.set_blocking(fd, True)
    return fd


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
    """A temporary file beside ``dest``, renamed onto it by :meth:`commit`, else removed.

    The one mechanism behind every output of the project: runtime-live's writers, and
    :func:`runtime.cli_support.atomic_path` for the trainer, exporter and benchmark.

    Args:
        dest: The final file.
        suffix: Suffix of the temporary file (default: ``dest``'s own, which some writers need).
    """

    def __init__(self, dest: Path, suffix: str | None = None) -> None:
        self.dest = dest
        # A symbolic link is followed: its target gets the new content (and the link stays a link).
        self.target = Path(os.path.realpath(dest)) if os.path.islink(dest) else dest
        safe = temp_stem(dest.name) if is_utf8(dest.name) else "emocam-output"  # OpenCV may open it by name
        with signals_held():  # made and noted in one step: remove_leftovers() finds it whatever happens next
            try:
                fd, name = tempfile.mkstemp(prefix=f".{safe}.partial-", dir=self.target.parent,
                                            suffix=dest.suffix if suffix is None else suffix)
            except OSError as exc:  # the folder takes no new file: the user can fix that
                raise OutputError(f"cannot write {display(dest)}: {os_error_text(exc)}: choose a writable folder",
                                  EXIT_USAGE) from None
            _LIVE.add(Path(name))
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
        """Flush to disk and rename onto the destination; on failure the temporary file is removed.

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
            os.replace(self.path, self.target)
            _LIVE.discard(self.path)
        except OSError as exc:
            cause = failure_cause(self.dest, exc)  # before the partial file is removed (it may fill the disk)
            self.discard()
            raise OutputError(f"could not finish {display(self.dest)}: {cause}") from None

    def discard(self) -> None:
        self.close_fd()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        _LIVE.discard(self.path)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out (raises OSError on a failed write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]
