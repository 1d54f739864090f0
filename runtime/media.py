"""Which writer makes each annotated output: one file (``--output``), or one per input file (``--output-dir``).

Videos in ``.mp4``, ``.m4v`` and ``.mkv`` are H.264 with the source's sound when PyAV (the
``[video]`` extra) is installed (:mod:`runtime.av_video`), else OpenCV's MPEG-4 Part 2 without
sound; ``.avi`` is Motion JPEG. Photos are encoded by OpenCV from their suffix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from runtime.av_video import H264_SUFFIXES, AvVideoWriter, av_available
from runtime.cli_support import missing_extra
from runtime.errors import EXIT_USAGE, OutputError
from runtime.files import display
from runtime.outputs import VIDEO_FOURCC, ImageWriter, VideoWriter
from runtime.sources import IMAGE_SUFFIXES, Frame

CODECS = ("auto", "h264", "mpeg4")  # --video-codec: auto is h264 with PyAV, else mpeg4


def video_codec(suffix: str, codec: str = "auto") -> str:
    """The codec a video output of ``suffix`` gets: ``h264``, ``mpeg4`` or ``mjpeg`` (``.avi``).

    Raises:
        OutputError: H.264 was asked for and PyAV is missing, or the container cannot hold it.
    """
    suffix = suffix.lower()
    if suffix == ".avi":
        if codec == "h264":
            raise OutputError(f"H.264 is written as {', '.join(H264_SUFFIXES)}, not .avi: use .mp4", EXIT_USAGE)
        return "mjpeg"
    if codec == "h264" and not av_available():
        raise OutputError(missing_extra("av") or "PyAV is missing", EXIT_USAGE)
    if codec == "auto":
        return "h264" if av_available() else "mpeg4"
    return codec


def plain_file(path: Path | None) -> Path | None:
    """``path`` when it is a regular file that can be read a second time (for its sound), else None."""
    try:
        return path if path is not None and stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def media_writer(path: Path, fps: float, codec: str = "auto", audio_from: Path | None = None):
    """The writer of one annotated output: an image, or a video (see :func:`video_codec`).

    Args:
        path: The output file; its suffix picks the kind.
        fps: The video's frame rate (the source's).
        codec: ``auto``, ``h264`` or ``mpeg4``.
        audio_from: The source video whose sound goes into an H.264 output (None: no sound).
    """
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FOURCC:
        return ImageWriter(path)
    if video_codec(suffix, codec) == "h264":
        return AvVideoWriter(path, fps, plain_file(audio_from))
    return VideoWriter(path, fps)


def output_name(source: Path) -> str:
    """The name of ``source``'s result in ``--output-dir``: its own name, with ``.mp4`` added to a video
    in a container the writers do not make (``talk.mov`` -> ``talk.mov.mp4``), so no two collide."""
    name = os.fsdecode(source.name)
    suffix = source.suffix.lower()
    return name if suffix in IMAGE_SUFFIXES or suffix in VIDEO_FOURCC else f"{name}.mp4"


def per_file_outputs(folder: Path, sources: Iterable[Path]) -> list[Path]:
    """Where ``--output-dir folder`` writes the result of each source file."""
    return [folder / output_name(Path(s)) for s in sources]


class PerFileMedia:
    """``--output-dir``: one annotated file per input file, each finalised when its input is done.

    A photo's result is written as soon as it is annotated; a video's when its last frame is (or
    the run stops). A failure drops only the file being written: the finished ones are whole, and stay.

    Args:
        folder: The output folder (it exists).
        codec: ``auto``, ``h264`` or ``mpeg4`` for the videos.
    """

    def __init__(self, folder: Path, codec: str = "auto") -> None:
        self.path = folder
        self.codec = codec
        self.written: list[Path] = []
        self._current = None
        self._source: Path | None = None

    def write(self, image: np.ndarray, frame: Frame) -> None:
        """Add ``frame``'s annotated ``image`` to the result of the file it came from.

        Raises:
            OutputError: The frame has no file, or the write failed.
        """
        if frame.path is None:
            raise OutputError("a frame without a file cannot go to an output folder", EXIT_USAGE)
        if frame.path != self._source:
            self.finish()
            self._source = frame.path
            self._current = media_writer(self.path / output_name(frame.path), frame.fps, self.codec, frame.path)
        self._current.write(image)
        if isinstance(self._current, ImageWriter):  # a photo is one frame: its result is finished now
            self.finish()

    def finish(self) -> None:
        """Finalise the file being written (its input is done)."""
        current, self._current, self._source = self._current, None, None
        if current is not None and current.close():
            self.written.append(current.path)

    def close(self) -> bool:
        """Finalise the last file. True when any file was written."""
        self.finish()
        return bool(self.written)

    def discard(self) -> None:
        """Drop the file being written; the finished ones stay."""
        current, self._current, self._source = self._current, None, None
        if current is not None:
            current.discard()

    def describe(self) -> str:
        return f"{len(self.written)} files to {display(self.path)}"
