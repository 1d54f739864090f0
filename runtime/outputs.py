"""Outputs that never lose data: the annotated video or image, and the JSON Lines file.

Every output is written to a temporary file beside its destination and renamed onto it only
when it is finalised and checked, so a run that fails or is killed never destroys an earlier
result of the same name. Every write is checked; a failure names its real cause (no space
left, the file-size limit, the folder gone) and leaves the destination as it was.

A stream (a pipe, a device, ``/dev/stdout`` and other paths under ``/dev`` or ``/proc``, see
:func:`runtime.files.is_stream`) is written to directly: it must not be renamed onto. A video
needs a seekable regular file.

What ``SIGKILL`` leaves: the destination untouched, and the partial temporary file
``.NAME.partial-XXXX.SUFFIX`` beside it. MP4 writes its index at the end, so a partial
``.mp4`` does not play; ``.mkv`` and ``.avi`` do (up to the last frame written).
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import OutputError
from runtime.files import TempFile, display, failure_cause, is_stream, opencv_path
from runtime.image import ImageError, encode_image
from runtime.lines import JsonlWriter, LineWriter, write_bytes

__all__ = ["JsonlWriter", "LineWriter", "write_bytes", "ImageWriter", "VideoWriter", "Outputs"]

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}  # container -> codec
MPEG4_MAX_SIDE = 8191  # MPEG-4 Part 2 codes frame sides in 13 bits; FFmpeg also refuses 1-pixel sides
CHECK_EVERY = 16  # video frames between checks that the temporary file is still there, with room to grow


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
        write_bytes(self.path, data)
        return True

    def discard(self) -> None:
        self.last = None


def space_problem(tmp: Path, dest: Path) -> str | None:
    """Why the growing temporary video ``tmp`` of ``dest`` cannot go on (it vanished, the disk is full,
    the file-size limit is reached), or None. Video writers report none of these themselves."""
    try:
        size = os.stat(tmp).st_size
    except OSError as exc:
        return failure_cause(dest, exc)
    full = False
    with contextlib.suppress(OSError):
        st = os.statvfs(tmp.parent)
        full = st.f_bavail * st.f_frsize == 0
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if full or (limit != resource.RLIM_INFINITY and size >= limit):
        return failure_cause(dest)
    return None


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
        self._tmp: TempFile | None = None
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
        self._tmp = TempFile(self.path)
        self._tmp.close_fd()  # OpenCV opens it by name
        cv_path, self._dir_fd = opencv_path(self._tmp.path)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.suffix])
        self._writer = cv2.VideoWriter(cv_path, fourcc, self.fps, self.size_wh)
        if not self._writer.isOpened():
            cause = failure_cause(self.path)
            if cause.startswith("the writer failed"):
                cause = f"OpenCV's {self.suffix} writer refused {w}x{h} frames: try .avi"
            self._abandon()
            raise OutputError(f"cannot write video {display(self.path)}: {cause}")

    def _check(self) -> None:
        """Fail early when the file vanished, the disk is full or the file-size limit is reached
        (the writer itself would go on silently, and the run would end with an unplayable file)."""
        problem = space_problem(self._tmp.path, self.path)
        if problem:
            self._abandon()
            raise OutputError(f"could not write {display(self.path)}: {problem}")

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
            cause = failure_cause(self.path)
            self._tmp.discard()
            raise OutputError(
                f"could not write {display(self.path)}: {cause}; {found} of {self.frames} frames were readable, "
                "and it was not kept"
            )
        self._tmp.commit()
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


class Outputs:
    """Every output of a run: the annotated video or image (or one per input file), the JSON Lines,
    the CSV table and the timeline chart.

    Each is written to a temporary file and renamed into place by :meth:`close` (see
    :mod:`runtime.outputs`); :meth:`discard` drops them all after a failure, leaving every
    destination as it was (files of an output folder already finished stay: they are whole).

    Args:
        output: The annotated video or image (None: none).
        jsonl: The JSON Lines file (None: none).
        fps: The source's frame rate, for a video output.
        csv: The CSV table (:mod:`runtime.tables`).
        timeline: The chart (:mod:`runtime.timeline`).
        labels: The model's class names (the CSV's and the chart's columns).
        output_dir: A folder for one annotated file per input file (:class:`runtime.media.PerFileMedia`).
        codec: ``auto``, ``h264`` or ``mpeg4`` for video outputs (:func:`runtime.media.video_codec`).
        audio_from: The source video whose sound goes into an H.264 ``output``.
        x_label: The chart's time axis (``time (s)``, or ``photo`` for photos).
    """

    def __init__(self, output: Path | None, jsonl: Path | None, fps: float, *, csv: Path | None = None,
                 timeline: Path | None = None, labels: tuple[str, ...] = (), output_dir: Path | None = None,
                 codec: str = "auto", audio_from: Path | None = None, x_label: str = "time (s)") -> None:
        from runtime.media import PerFileMedia, media_writer
        from runtime.tables import CsvWriter
        from runtime.timeline import Timeline

        self.media = media_writer(output, fps, codec, audio_from) if output is not None else None
        self.per_file = PerFileMedia(output_dir, codec) if output_dir is not None else None
        self.jsonl = JsonlWriter(jsonl) if jsonl is not None else None
        self.csv = CsvWriter(csv, labels) if csv is not None else None
        self.timeline = Timeline(timeline, labels, x_label) if timeline is not None else None
        for lines in (self.jsonl, self.csv):
            if lines is not None and lines.stream:
                lines.open()  # a pipe with no reader fails now, not in the middle of the loop
        self.written: list[Path] = []  # finalised, checked files

    @property
    def _writers(self) -> list:
        return [w for w in (self.jsonl, self.csv, self.media, self.per_file, self.timeline) if w is not None]

    @property
    def waiting_on_reader(self) -> bool:
        """True while a write to a stream may be waiting on a reader that stopped reading."""
        return any(w is not None and w.waiting_on_reader for w in (self.jsonl, self.csv))

    def write(self, image: np.ndarray, record: dict, frame=None) -> None:
        """One frame's JSON line, CSV rows, chart data and annotated image (raises OutputError, BrokenPipeError).

        Args:
            image: The annotated frame.
            record: The frame's record (as written to the JSON Lines).
            frame: The :class:`runtime.sources.Frame` (its file, for an output folder).
        """
        for lines in (self.jsonl, self.csv, self.timeline):
            if lines is not None:
                lines.write(record)
        if self.media is not None:
            self.media.write(image)
        if self.per_file is not None:
            self.per_file.write(image, frame)

    def close(self) -> None:
        """Finalise every output; the first failure discards the rest and is raised."""
        for writer in self._writers:
            try:
                if writer is self.per_file:
                    writer.close()
                    self.written.extend(writer.written)
                elif writer.close():
                    self.written.append(writer.path)
            except Exception:
                self.discard()
                raise

    def discard(self) -> None:
        for writer in self._writers:
            writer.discard()
