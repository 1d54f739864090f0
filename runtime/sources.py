"""Frame sources: camera index, video file, stream URL, image, folder of images, the demo.

Every source is an iterator of :class:`Frame`. Files are read in order with no frame dropped;
live sources (cameras, URLs) are read on their own thread and always yield the newest frame,
counting the stale ones they drop.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from runtime.cli_support import NATIVE_THREAD_PREFIX
from runtime.errors import SourceError
from runtime.files import display
from runtime.image import ImageError, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # decoded by OpenCV's imdecode
DEMO = "demo"  # --source value for the bundled public-domain photo
MAX_CAMERA_INDEX = 9999  # OpenCV takes a C int; real indices are small
OPEN_TIMEOUT_S = 30.0  # how long a video, stream or pipe may take to open (and give its first frame)
MAX_FPS = 1000.0  # a video file's frame rate above this is a misread time base, not a rate


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        index: Position in the source, from 0.
        timestamp_s: Seconds from the start (media time for files, wall time for live sources).
        image: The pixels as decoded (BGR, grayscale or BGRA uint8).
        name: The file a frame of a folder came from (a photo, or a video), else "".
        path: The file it was read from (None for a camera or a stream).
        fps: That file's nominal frame rate (0 for a photo or when unknown).
    """

    index: int
    timestamp_s: float
    image: np.ndarray
    name: str = ""
    path: Path | None = None
    fps: float = 0.0

    @property
    def photo(self) -> bool:
        """Whether it is a photo (an image file: of an image source or a folder), not a video's or a camera's frame."""
        return self.path is not None and self.path.suffix.lower() in IMAGE_SUFFIXES


def put_until_stopped(into: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` into the bounded queue ``into``, waiting for room until ``stop`` is set (a reader
    thread never blocks forever on a consumer that went away). Returns whether it went in."""
    while not stop.is_set():
        try:
            into.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


class FrameSource:
    """Base class: an iterable of frames with a little metadata."""

    live: bool = False  # frames arrive in real time and stale ones are dropped
    paths: Sequence[Path] = ()  # the files read, if any (an output must never be one of them)
    fps: float = 0.0  # nominal frame rate (0 if unknown)
    dropped: int = 0  # stale live frames dropped
    description: str = ""
    length: int | None = None  # frames it will give, when known (files); None for live sources

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def demo_image_path() -> Path:
    """The bundled demo photo (Grace Hopper, public domain)."""
    return Path(str(resources.files("runtime") / "assets" / "demo.jpg"))


class ImageSource(FrameSource):
    """One image file, or every image of a folder in name order (undecodable files skipped)."""

    def __init__(self, paths: list[Path], description: str) -> None:
        self.paths = paths
        self.description = description
        self.skipped: list[str] = []
        self.length = len(paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            try:
                img = read_image(path)
            except ImageError as exc:
                self.skipped.append(display(path.name))
                print(f"warning: skipped {display(path)}: it {exc}", file=sys.stderr)
                continue
            yield Frame(index, float(index), img, display(path.name), path)
            index += 1


class VideoSource(FrameSource):
    """A video file (or a pipe), every frame in order, decoded on its own thread.

    The main thread only ever waits on a small queue, never inside OpenCV: Ctrl-C and the stop
    signals work even when a pipe's writer stalls mid-stream (a read inside OpenCV cannot be
    interrupted), and decoding the next frames overlaps with processing this one.
    """

    AHEAD = 2  # frames decoded ahead of the one being processed

    def __init__(self, cap: cv2.VideoCapture, description: str, first: np.ndarray, path: Path | None = None) -> None:
        self.cap = cap
        self.paths = [path] if path is not None else []  # the file read (outputs must never be it)
        self.description = description
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.length = count if count > 0 else None  # from the container's index: none for a pipe
        self.name = ""  # set for a video of a folder: its frames carry the file's name
        self._first = first
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=self.AHEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reader(self) -> None:
        """Decode frames into the queue until the video ends (None marks the end) or :meth:`close`."""
        while not self._stop.is_set():
            ok, frame = self.cap.read()
            item = frame if ok else None
            put_until_stopped(self._queue, item, self._stop)
            if item is None:
                return

    def __iter__(self) -> Iterator[Frame]:
        if self._first is None:
            return
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        first, self._first = self._first, None
        self._thread = threading.Thread(target=self._reader, name=f"{NATIVE_THREAD_PREFIX}decode", daemon=True)
        self._thread.start()
        path = self.paths[0] if self.paths else None
        yield Frame(0, 0.0, first, self.name, path, self.fps)
        index = 1
        while (frame := self._queue.get()) is not None:  # a plain wait: a signal interrupts it
            yield Frame(index, index * period, frame, self.name, path, self.fps)
            index += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._thread is None or not self._thread.is_alive():
            self.cap.release()
        # else the reader is stuck inside OpenCV (a stalled pipe): releasing under it would crash, and the
        # command leaves with os._exit (see runtime.cli_support.NATIVE_THREAD_PREFIX).


def _opencv_read_path(path: Path) -> tuple[str, int | None]:
    """A ``str`` path OpenCV can open for reading ``path``, and a descriptor to close after opening.

    OpenCV crashes on a name that is not valid UTF-8; such a file is opened here and handed over
    as ``/proc/self/fd/N`` (FFmpeg finds the format from the content).
    """
    text = str(path)
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        pass
    if not os.path.isdir("/proc/self/fd"):
        raise SourceError(f"source {display(path)}: its name is not valid UTF-8: rename it")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # O_NONBLOCK: a FIFO must not block here
    return f"/proc/self/fd/{fd}", fd


class OpenTimeout(SourceError):
    """A source that did not open (or give its first frame) in the time allowed."""


def open_interruptibly(opener: Callable[[], FrameSource], what: str, timeout_s: float) -> FrameSource:
    """Run ``opener`` on a thread and wait for it, so that Ctrl-C and a time limit work.

    Opening a stream URL, or a named pipe with no writer yet, blocks inside OpenCV where no signal
    reaches Python; here the main thread waits instead, and can be interrupted.

    Raises:
        SourceError: It did not open within ``timeout_s`` (or ``opener``'s own error).
    """
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["source"] = opener()
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"{NATIVE_THREAD_PREFIX}open", daemon=True).start()
    if not done.wait(timeout_s):
        raise OpenTimeout(f"{what} did not open within {timeout_s:g} s: check it is reachable (or has a writer), "
                          "or allow it longer")
    if "error" in box:
        raise box["error"]
    return box["source"]


def _open_video(path: Path) -> VideoSource:
    cv_path, fd = _opencv_read_path(path)
    try:
        cap = cv2.VideoCapture(cv_path)
    finally:
        if fd is not None:
            os.close(fd)
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise SourceError(f"{display(path)} does not decode as a video or image: give a playable video file")
    source = VideoSource(cap, f"video {display(path)}", first, path)
    if not 0 < source.fps <= MAX_FPS and stat.S_ISREG(os.stat(path).st_mode):  # OpenCV read a time base as
        source.fps = _guessed_rate(path)  # the rate (some Matroska files): ask FFmpeg (never a pipe: read once)
    return source


def _guessed_rate(path: Path) -> float:
    """The frame rate FFmpeg guesses for ``path``'s video through PyAV (the ``[video]`` extra), or 0 without it."""
    try:
        import av

        with av.open(os.fsdecode(path)) as container:
            rate = container.streams.video[0].guessed_rate
    except Exception:  # no PyAV, or a file it cannot open: the rate stays unknown
        return 0.0
    return float(rate) if rate and 0 < float(rate) <= MAX_FPS else 0.0


class LiveSource(FrameSource):
    """A camera or stream read on its own thread; iteration yields the newest frame only.

    Args:
        opener: Makes a new, opened ``cv2.VideoCapture`` (called again to reconnect).
        description: What it is, for messages.
        reconnect: How many times to reopen the source after it stops delivering frames
            (0: end the stream instead), with exponential backoff from ``backoff_s``.
        backoff_s: First wait before reopening.
    """

    live = True

    def __init__(self, opener: Callable[[], cv2.VideoCapture], description: str, reconnect: int = 0,
                 backoff_s: float = 0.5) -> None:
        self._opener = opener
        self.description = description
        self.reconnect = reconnect
        self.backoff_s = backoff_s
        self.reconnects = 0
        self._cap = opener()
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok:
            self._cap.release()
            raise SourceError(f"{description} opened but delivers no frames: check it is not in use by another program")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = first
        self._seq = 1
        self._done = False
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name=f"{NATIVE_THREAD_PREFIX}capture", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        failures = 0
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if ok:
                failures = 0
                with self._cond:
                    self._latest = frame
                    self._seq += 1
                    self._cond.notify_all()
                continue
            if failures >= self.reconnect:
                break
            failures += 1
            wait = self.backoff_s * 2 ** (failures - 1)
            print(f"warning: {self.description} stopped; reconnecting in {wait:.1f} s "
                  f"(try {failures}/{self.reconnect})", file=sys.stderr)
            self._cap.release()
            if self._stop.wait(wait):
                break
            self._cap = self._opener()
            self.reconnects += 1
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        index, taken = 0, 0
        while True:
            with self._cond:
                while self._seq == taken and not self._done:
                    self._cond.wait(0.5)
                if self._seq == taken:
                    return
                self.dropped += self._seq - taken - 1
                taken, frame = self._seq, self._latest
            yield Frame(index, time.monotonic() - self._t0, frame)
            index += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._cap.release()


def _camera_opener(index: int) -> Callable[[], cv2.VideoCapture]:
    def open_camera() -> cv2.VideoCapture:
        return cv2.VideoCapture(index)

    return open_camera


def open_source(source: str, reconnect: int = 0, open_timeout_s: float = OPEN_TIMEOUT_S) -> FrameSource:
    """Open a frame source from its command-line spelling.

    Args:
        source: ``demo``, a camera index (``0``), a URL (``rtsp://...``, ``http://...``), an
            image file, a folder of images, or a video file (a named pipe too).
        reconnect: For live sources: reconnect attempts after the stream stops.
        open_timeout_s: Longest wait for a video, stream or pipe to open and give a frame.

    Raises:
        SourceError: The camera does not exist, the URL does not open, the file does not exist or
            does not decode, or the folder has no images.
    """
    if not source.strip():
        raise SourceError("the source is empty: give a camera index, a video, an image, a folder, a URL or 'demo'")
    if source == DEMO:
        return ImageSource([demo_image_path()], "demo image (Grace Hopper, public domain)")
    if source.isascii() and source.isdecimal():
        index = int(source)
        if index > MAX_CAMERA_INDEX:
            raise SourceError(f"no camera at index {source}: camera indices go up to {MAX_CAMERA_INDEX}")
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"no camera at index {index}: plug one in, try another index, or give a file")
        cap.release()
        return LiveSource(_camera_opener(index), f"camera {index}", reconnect)
    if "://" in source:
        return open_interruptibly(lambda: _open_stream(source, reconnect), f"stream {source}", open_timeout_s)
    path = Path(source)
    name = display(path)
    if path.is_dir():
        from runtime.folders import open_folder

        return open_folder(path)
    if not path.exists():
        raise SourceError(f"source {name} does not exist: give a camera index, a video, an image, a folder or 'demo'")
    if not os.access(path, os.R_OK):
        raise SourceError(f"source {name} is not readable: check its permissions")
    regular = stat.S_ISREG(os.stat(path).st_mode)
    if path.suffix.lower() in IMAGE_SUFFIXES and regular:
        try:
            read_image(path)
        except ImageError as exc:
            raise SourceError(f"image {name} {exc}") from None
        return ImageSource([path], f"image {name}")
    return open_interruptibly(lambda: _open_video(path), f"video {name}", open_timeout_s)


def _open_stream(url: str, reconnect: int) -> LiveSource:
    cap = cv2.VideoCapture(url)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"could not open stream {url}: check the URL and that the server is reachable")
    cap.release()
    source = LiveSource(lambda: cv2.VideoCapture(url), f"stream {url}", reconnect)
    local = url_file(url)
    source.paths = [local] if local is not None else []
    return source


def url_file(url: str) -> Path | None:
    """The local file a ``file:`` URL names (an output must never be it), else None."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme.lower() == "file" and parts.path else None
