"""A folder as a source: its photos and videos, in name order.

A folder of photos is an :class:`runtime.sources.ImageSource`, as before. A folder with videos
is a :class:`FolderSource`: each video is read whole, frame by frame (its frames numbered from 0,
with its own time stamps), and each photo is one frame. A file that does not decode is skipped
with a warning: one bad file never stops the others.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2

from runtime.errors import SourceError
from runtime.files import display
from runtime.image import ImageError, read_image
from runtime.sources import IMAGE_SUFFIXES, Frame, FrameSource, ImageSource, VideoSource, _open_video, _opencv_read_path

#: Files of a folder read as videos (by suffix; anything else that is not a photo is left alone).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp"}


def _frame_count(path: Path) -> int:
    """The frames a video holds by its index (0 when it does not open or does not say)."""
    try:
        name, fd = _opencv_read_path(path)
    except (SourceError, OSError):
        return 0
    cap = cv2.VideoCapture(name)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)) if cap.isOpened() else 0
    finally:
        cap.release()
        if fd is not None:
            os.close(fd)


class FolderSource(FrameSource):
    """The photos and videos of a folder, one file after another (see :mod:`runtime.folders`).

    Args:
        paths: The files, in the order to read them.
        description: What it is, for messages.
    """

    def __init__(self, paths: list[Path], description: str) -> None:
        self.paths = paths
        self.description = description
        self.skipped: list[str] = []
        self.videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
        self.length = sum(1 if p.suffix.lower() in IMAGE_SUFFIXES else _frame_count(p) for p in paths) or None
        self._video: VideoSource | None = None

    def _skip(self, path: Path, why: str) -> None:
        self.skipped.append(display(path.name))
        print(f"warning: skipped {display(path)}: {why}", file=sys.stderr)

    def __iter__(self) -> Iterator[Frame]:
        for path in self.paths:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    image = read_image(path)
                except ImageError as exc:
                    self._skip(path, f"it {exc}")
                    continue
                yield Frame(0, 0.0, image, display(path.name), path)
                continue
            try:
                self._video = _open_video(path)
            except SourceError:
                self._skip(path, "it does not decode as a video")
                continue
            self._video.name = display(path.name)
            try:
                yield from self._video
            finally:
                self._video.close()
                self._video = None

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None


def open_folder(path: Path) -> FrameSource:
    """The photos of a folder (an :class:`ImageSource`), or its photos and videos (a :class:`FolderSource`).

    Raises:
        SourceError: The folder cannot be listed, or has neither photos nor videos.
    """
    name = display(path)
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    except OSError as exc:
        raise SourceError(f"folder {name} cannot be listed ({exc.strerror}): check its permissions") from None
    if not files:
        raise SourceError(f"folder {name} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}) or videos: "
                          "give another folder")
    videos = sum(p.suffix.lower() in VIDEO_SUFFIXES for p in files)
    if not videos:
        return ImageSource(files, f"folder {name} ({len(files)} images)")
    photos = len(files) - videos
    return FolderSource(files, f"folder {name} ({videos} videos" + (f", {photos} images)" if photos else ")"))
