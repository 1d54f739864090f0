"""Outputs that never lose data: the annotated video or image, and the JSON Lines file.

Every output is written to a temporary file beside its destination and renamed onto it only
when it is finalised and checked, so a run that fails or is killed never destroys an earlier
result of the same name. Every write is checked; a failure names its real cause (no space
left, the file-size limit, the folder gone) and leaves the destination as it was.

An output that already exists and is not a regular file (``/dev/stdout``, a pipe) is streamed
to directly: it cannot be renamed onto. A video needs a seekable regular file.

What ``SIGKILL`` leaves: the destination untouched, and the partial temporary file
``.NAME.partial-XXXX.SUFFIX`` beside it. MP4 writes its index at the end, so a partial
``.mp4`` does not play; ``.mkv`` and ``.avi`` do (up to the last frame written).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import tempfile
from pathlib import Path

import cv2
import numpy as np

from runtime.cli_support import os_error_text, temp_stem
from runtime.errors import OutputError
from runtime.image import ImageError, encode_image

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}  # container -> codec
MPEG4_MAX_SIDE = 8191  # MPEG-4 Part 2 codes frame sides in 13 bits; FFmpeg also refuses 1-pixel sides
LOW_SPACE_BYTES = 1 << 20  # free space below which a failed write is put down to a full disk
CHECK_EVERY = 16  # video frames between checks that the temporary file is still there, with room to grow


def is_stream(path: Path) -> bool:
    """True when ``path`` exists and is not a regular file (a terminal, a pipe, ``/dev/stdout``)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    import stat

    return not stat.S_ISREG(st.st_mode)


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
    if _is_utf8(text):
        return text, None
    name = path.name
    if not _is_utf8(name):
        raise OutputError(f"{display(path)}: the file name is not valid UTF-8: rename it")
    if not os.path.isdir("/proc/self/fd"):
        raise OutputError(f"{display(path)}: the folder name is not valid UTF-8: rename it")
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"/proc/self/fd/{dir_fd}/{name}", dir_fd


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: Path | str) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _failure_cause(path: Path, exc: OSError | None = None) -> str:
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


class _TempFile:
    """A temporary file beside ``dest``, renamed onto it by :meth:`commit`, else removed."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        safe = temp_stem(dest.name) if _is_utf8(dest.name) else "emocam-output"  # OpenCV may open it by name
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
            raise OutputError(f"could not finish {display(self.dest)}: {_failure_cause(self.dest, exc)}") from None

    def discard(self) -> None:
        self.close_fd()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is out (raises OSError on a failed write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "write returned 0")
        view = view[n:]


class JsonlWriter:
    """One JSON line per record, each line written whole or not at all.

    Strict JSON: a NaN or infinite number is an error, never a bare ``NaN`` (callers write null).

    Args:
        path: Destination file (renamed into place by :meth:`close`), or a stream to write to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._tmp: _TempFile | None = None
        self._fd: int | None = None
        self.stream = is_stream(path)  # a pipe or device: written to directly, not renamed onto

    def write(self, record: dict) -> None:
        """Append one record.

        Raises:
            OutputError: The line could not be written; the file ends after the last whole line.
            BrokenPipeError: The reader of a streamed output went away.
        """
        data = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        if self._fd is None:
            self.open()
        start = None if self.stream else os.lseek(self._fd, 0, os.SEEK_CUR)
        try:
            _write_all(self._fd, data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if start is not None:  # cut the torn line off: the file ends after the last whole one
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
            raise OutputError(f"could not write {display(self.path)}: {_failure_cause(self.path, exc)}") from None
        self.lines += 1

    def open(self) -> None:
        """Open the file now (the first :meth:`write` does otherwise): a pipe with no reader is an
        error at once, never a wait that no signal can end.

        Raises:
            OutputError: It cannot be opened (no reader on a pipe, no permission, no space).
        """
        if self._fd is not None:
            return
        if self.stream:
            try:  # O_NONBLOCK: opening a pipe with no reader fails (ENXIO) instead of blocking
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
                os.set_blocking(self._fd, True)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    raise OutputError(f"cannot write {display(self.path)}: the pipe has no reader; "
                                      "start the reader first") from None
                raise OutputError(f"cannot write {display(self.path)}: {os_error_text(exc)}") from None
        else:
            self._tmp = _TempFile(self.path)
            self._fd = self._tmp.fd

    def close(self) -> bool:
        """Finalise: rename the file into place. True when a file was written (a first line came).

        Raises:
            OutputError: It could not be finalised; the destination is as it was.
        """
        if self._tmp is not None:
            try:
                self._tmp.commit()
            except OutputError:
                self._tmp.discard()
                raise
            self._tmp = self._fd = None
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


class ImageWriter:
    """The annotated image: the last frame given, encoded and written when closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: np.ndarray | None = None

    def write(self, frame: np.ndarray) -> None:
        self.last = frame

    def close(self) -> bool:
        """Encode and write the last frame. True when a file was written.

        Raises:
            OutputError: OpenCV cannot encode it, or the write failed (the real cause is named).
        """
        if self.last is None:
            return False
        try:
            data = encode_image(self.last, self.path.suffix.lower())
        except ImageError as exc:
            raise OutputError(f"cannot write {display(self.path)}: {exc}") from None
        if is_stream(self.path):
            try:
                with open(self.path, "wb") as f:
                    f.write(data)
            except OSError as exc:
                raise OutputError(f"could not write {display(self.path)}: {os_error_text(exc)}") from None
            return True
        tmp = _TempFile(self.path)
        try:
            _write_all(tmp.fd, data)
        except OSError as exc:
            tmp.discard()
            raise OutputError(f"could not write {display(self.path)}: {_failure_cause(self.path, exc)}") from None
        try:
            tmp.commit()
        except OutputError:
            tmp.discard()
            raise
        return True

    def discard(self) -> None:
        self.last = None


def video_size_problem(suffix: str, size_wh: tuple[int, int]) -> str | None:
    """Why ``suffix``'s codec cannot take frames of ``size_wh``, or None."""
    w, h = size_wh
    if VIDEO_FOURCC.get(suffix) == "mp4v":
        if min(w, h) < 2:
            return f"{w}x{h} frames are too small for the MPEG-4 encoder (2 pixels a side at least): use .avi"
        if max(w, h) > MPEG4_MAX_SIDE:
            return f"{w}x{h} frames are too large for MPEG-4 (at most {MPEG4_MAX_SIDE} pixels a side): use .avi"
    return None


class VideoWriter:
    """The annotated video, through OpenCV's writer, into a temporary file renamed when whole.

    OpenCV's writer reports nothing about failed writes, so the file is watched while it grows
    (still there, still growing) and, once released, decoded back: the frames in it must be the
    frames given. Only then is it renamed onto the destination.

    Args:
        path: Destination (``.mp4``, ``.m4v``, ``.mkv``, ``.avi``).
        fps: Frame rate written into the file.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.suffix = path.suffix.lower()
        if self.suffix not in VIDEO_FOURCC:
            raise OutputError(f"{display(path)}: use a video suffix ({', '.join(VIDEO_FOURCC)})")
        if is_stream(path):
            raise OutputError(f"{display(path)} is not a regular file: a video needs a file (seekable)")
        self.fps = fps if 0 < fps <= 1000 else 25.0
        self.frames = 0
        self.size_wh: tuple[int, int] | None = None
        self._writer = None
        self._tmp: _TempFile | None = None
        self._dir_fd: int | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame (resized to the first frame's size if it differs).

        Raises:
            OutputError: The encoder refused the size, or the file stopped growing or vanished.
        """
        if self._writer is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self.size_wh:
            frame = cv2.resize(frame, self.size_wh)
        self._writer.write(frame)
        self.frames += 1
        if self.frames % CHECK_EVERY == 0:
            self._check()

    def _open(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        self.size_wh = (w, h)
        problem = video_size_problem(self.suffix, self.size_wh)
        if problem:
            raise OutputError(f"cannot write video {display(self.path)}: {problem}")
        self._tmp = _TempFile(self.path)
        self._tmp.close_fd()  # OpenCV opens it by name
        cv_path, self._dir_fd = opencv_path(self._tmp.path)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.suffix])
        self._writer = cv2.VideoWriter(cv_path, fourcc, self.fps, self.size_wh)
        if not self._writer.isOpened():
            cause = _failure_cause(self.path)
            if cause.startswith("the writer failed"):
                cause = f"OpenCV's {self.suffix} writer refused {w}x{h} frames: try .avi"
            self._abandon()
            raise OutputError(f"cannot write video {display(self.path)}: {cause}")

    def _check(self) -> None:
        """Fail early when the file vanished, the disk is full or the file-size limit is reached
        (the writer itself would go on silently, and the run would end with an unplayable file)."""
        try:
            size = os.stat(self._tmp.path).st_size
        except OSError as exc:
            self._abandon()
            raise OutputError(f"could not write {display(self.path)}: {_failure_cause(self.path, exc)}") from None
        full = False
        with contextlib.suppress(OSError):
            st = os.statvfs(self._tmp.path.parent)
            full = st.f_bavail * st.f_frsize == 0
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if full or (limit != resource.RLIM_INFINITY and size >= limit):
            self._abandon()
            raise OutputError(f"could not write {display(self.path)}: {_failure_cause(self.path)}")

    def _readable_frames(self) -> int:
        """Frames the finished file holds by its own index (0 when it does not open), once its
        first and last frames are seen to decode. Cheap: two frames are decoded, not all."""
        cv_path, dir_fd = opencv_path(self._tmp.path)
        cap = cv2.VideoCapture(cv_path)
        try:
            if not cap.isOpened() or not cap.grab():
                return 0
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if self.frames > 1:
                cap.set(cv2.CAP_PROP_POS_FRAMES, min(count, self.frames) - 1)
                if not cap.grab():
                    return 0
            return count
        finally:
            cap.release()
            if dir_fd is not None:
                os.close(dir_fd)

    def close(self) -> bool:
        """Release the writer, check every frame is in the file, rename it into place.

        Returns:
            True when a video was written (at least one frame came).

        Raises:
            OutputError: The file is not whole (the real cause is named); the destination is as it was.
        """
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        try:
            found = self._readable_frames() if self._tmp.path.exists() else 0
        except OutputError:
            found = 0
        if found < self.frames - 1:  # Matroska's count is an estimate from its duration: one frame of slack
            cause = _failure_cause(self.path)
            self._tmp.discard()
            raise OutputError(
                f"could not write {display(self.path)}: {cause}; {found} of {self.frames} frames were readable, "
                "and it was not kept"
            )
        try:
            self._tmp.commit()
        except OutputError:
            self._tmp.discard()
            raise
        return True

    def _abandon(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None
        if self._tmp is not None:
            self._tmp.discard()

    def discard(self) -> None:
        """Drop the partial video (after a failure): the destination stays as it was."""
        self._abandon()
