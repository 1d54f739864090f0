"""Frame sources: camera index, video file, stream URL, image, folder of images, the demo.

Every source is an iterator of :class:`Frame`. Files are read in order with no frame dropped;
live sources (cameras, URLs) are read on their own thread and always yield the newest frame,
counting the stale ones they drop.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from runtime.cli_support import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # read with cv2.imread
DEMO = "demo"  # --source value for the bundled public-domain photo


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        index: Position in the source, from 0.
        timestamp_s: Seconds from the start (media time for files, wall time for live sources).
        image: The pixels as decoded (BGR, grayscale or BGRA uint8).
        name: The file a frame of an image folder came from, else "".
    """

    index: int
    timestamp_s: float
    image: np.ndarray
    name: str = ""


class FrameSource:
    """Base class: an iterable of frames with a little metadata."""

    live: bool = False  # frames arrive in real time and stale ones are dropped
    fps: float = 0.0  # nominal frame rate (0 if unknown)
    dropped: int = 0  # stale live frames dropped
    description: str = ""

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

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None or img.size == 0:
                self.skipped.append(path.name)
                print(f"warning: skipped {path}: not a decodable image", file=sys.stderr)
                continue
            if img.dtype != np.uint8:  # 16-bit PNG/TIFF
                img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
            yield Frame(index, float(index), img, path.name)
            index += 1


class VideoSource(FrameSource):
    """A video file, every frame in order."""

    def __init__(self, cap: cv2.VideoCapture, description: str, first: np.ndarray) -> None:
        self.cap = cap
        self.description = description
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._first = first

    def __iter__(self) -> Iterator[Frame]:
        index, frame = 0, self._first
        self._first = None
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        while frame is not None:
            yield Frame(index, index * period, frame)
            index += 1
            ok, frame = self.cap.read()
            if not ok:
                break

    def close(self) -> None:
        self.cap.release()


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

    def __init__(self, opener, description: str, reconnect: int = 0, backoff_s: float = 0.5) -> None:  # noqa: ANN001
        self._opener = opener
        self.description = description
        self.reconnect = reconnect
        self.backoff_s = backoff_s
        self.reconnects = 0
        self._cap = opener()
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok:
            self._cap.release()
            raise UserError(f"{description} opened but delivers no frames: check it is not in use by another program")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = first
        self._seq = 1
        self._done = False
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._reader, name="capture", daemon=True)
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


def _camera_opener(index: int):  # noqa: ANN202
    def open_camera() -> cv2.VideoCapture:
        return cv2.VideoCapture(index)

    return open_camera


def open_source(source: str, reconnect: int = 0) -> FrameSource:
    """Open a frame source from its command-line spelling.

    Args:
        source: ``demo``, a camera index (``0``), a URL (``rtsp://...``, ``http://...``), an
            image file, a folder of images, or a video file.
        reconnect: For live sources: reconnect attempts after the stream stops.

    Raises:
        UserError: The camera does not exist, the URL does not open, the file does not exist or
            does not decode, or the folder has no images.
    """
    if source == DEMO:
        return ImageSource([demo_image_path()], "demo image (Grace Hopper, public domain)")
    if source.isdigit():
        index = int(source)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"no camera at index {index}: plug one in, try another index, or use --source FILE")
        cap.release()
        return LiveSource(_camera_opener(index), f"camera {index}", reconnect)
    if "://" in source:
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"could not open stream {source}: check the URL and that the server is reachable")
        cap.release()
        return LiveSource(lambda: cv2.VideoCapture(source), f"stream {source}", reconnect)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}): give another folder")
        return ImageSource(files, f"folder {path} ({len(files)} images)")
    if not path.exists():
        raise UserError(f"source {path} does not exist: give a camera index, a video, an image, a folder or 'demo'")
    if not os.access(path, os.R_OK):
        raise UserError(f"source {path} is not readable: check its permissions")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
            raise UserError(f"image {path} does not decode: it is empty, truncated or not an image")
        return ImageSource([path], f"image {path}")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise UserError(f"{path} does not decode as a video or image: give a playable video file")
    return VideoSource(cap, f"video {path}", first)
