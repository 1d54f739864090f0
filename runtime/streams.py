"""Many streams, one process: ``runtime-live --source A --source B ...``.

Each source is read on its own thread (a file's frames all, in order; a camera's or a URL's newest
only, the stale ones dropped and counted). On every **tick** the loop takes one frame from each
stream that has one, detects and crops its faces with that stream's own :class:`Pipeline`
(:meth:`Pipeline.prepare`: its own detector state, background search and tracker), sends the
crops of ALL streams through **one** model call (``classifier.predict`` on the concatenated
crops), and finishes each stream's frame with its share of the probabilities
(:meth:`Pipeline.finish`). The model's answer for a face does not depend on the other faces of its
call, so each stream's records are those of a run on that source alone.

Each stream keeps its own outputs and counts. Every JSON line has a ``stream`` field and every CSV
row a ``stream`` column. ``--output``, ``--jsonl`` and ``--csv`` take a pattern with ``{stream}``
(``out-{stream}.mp4``) or an existing folder (``out/<stream>.mp4``); ``--jsonl`` and ``--csv`` may
also name one file that all streams share (their lines interleaved, each naming its stream). The
summary gives the figures of each stream, the ticks and the model calls per tick. With a window,
the streams are shown tiled in one window.

Streams are named after their sources (a file's stem, ``cam0`` for camera 0, the host of a URL),
made unique with ``-2``, ``-3``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import queue
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.cli_support import NATIVE_THREAD_PREFIX, UserError, check_output_path
from runtime.multi import split_sources
from runtime.sources import put_until_stopped
from runtime.tables import CsvWriter

PATTERN = "{stream}"
FILE_QUEUE = 4  # frames of a file decoded ahead on its reader thread
_END = object()  # a reader's mark: the source has ended


def stream_names(sources: Sequence[str]) -> list[str]:
    """A short, unique, file-name-safe name per source: a file's stem, ``cam0``, a URL's host."""
    from urllib.parse import urlsplit

    names: list[str] = []
    for text in sources:
        if text.isascii() and text.isdecimal():
            base = f"cam{int(text)}"
        elif "://" in text:
            base = urlsplit(text).hostname or "stream"
        else:
            base = Path(text.rstrip("/")).stem or "source"
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "stream"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def per_stream_path(path: Path | None, name: str, suffix: str) -> Path | None:
    """``path`` for stream ``name``: the pattern filled in, or ``<folder>/<name><suffix>``, or ``path`` itself."""
    if path is None:
        return None
    text = str(path)
    if PATTERN in text:
        return Path(text.replace(PATTERN, name))
    if path.is_dir():
        return path / f"{name}{suffix}"
    return path


def _shared(path: Path | None) -> bool:
    """Whether ``path`` is one file for all streams (no pattern, not a folder)."""
    return path is not None and PATTERN not in str(path) and not path.is_dir()


class StreamCsvWriter(CsvWriter):
    """:class:`runtime.tables.CsvWriter` with a first column, ``stream``, naming each row's stream."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        super().__init__(path, labels)
        self.header = b"stream," + self.header

    def encode(self, record: dict) -> bytes:
        from runtime.tables import rows

        return self._lines([[record.get("stream", ""), *row] for row in rows(record, self.labels)])


class Reader:
    """A source read on its own thread: every frame of a file, in order; a live source's newest only.

    Args:
        source: The :class:`runtime.sources.FrameSource`.
        wake: Set whenever a frame (or the end) arrives, so the tick loop can wait on all readers at once.
    """

    def __init__(self, source, wake: threading.Event) -> None:
        self.source = source
        self.live = source.live
        self.dropped = 0  # live frames replaced by a newer one before a tick took them
        self._queue: queue.Queue = queue.Queue(maxsize=FILE_QUEUE)
        self._slot: object = None  # live: the newest frame not yet taken
        self._lock = threading.Lock()
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"{NATIVE_THREAD_PREFIX}stream", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self.source:
                if self._stop.is_set():
                    return
                self._put(frame)
        except Exception as exc:  # handed to the tick loop
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: object) -> None:
        if self.live and item is not _END and not isinstance(item, BaseException):
            with self._lock:
                self.dropped += self._slot is not None
                self._slot = item
        else:
            put_until_stopped(self._queue, item, self._stop)
        self._wake.set()

    def take(self, wait: bool) -> object:
        """The next frame (a file's: waiting for it when ``wait``; a live source's newest, or None),
        or ``_END``; an exception the reader met is raised here."""
        if self.live:
            with self._lock:
                item, self._slot = self._slot, None
            if item is None:
                try:
                    item = self._queue.get_nowait()  # the end, or an error
                except queue.Empty:
                    return None
        else:
            try:
                item = self._queue.get() if wait else self._queue.get_nowait()
            except queue.Empty:
                return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self.source.close()
        self._thread.join(timeout=2.0)


class Stream:
    """One source with its own pipeline state, outputs and counts.

    Args:
        name: The stream's name (in its records and output names).
        source: Its frame source.
        pipe: Its :class:`runtime.pipeline.Pipeline` (the model shared with the other streams).
    """

    def __init__(self, name: str, source, pipe) -> None:
        self.name = name
        self.source = source
        self.pipe = pipe
        self.reader: Reader | None = None
        self.outputs = None  # runtime.outputs.Outputs: the annotated video or image
        self.lines: list = []  # its own JSON Lines and CSV writers
        self.frames = 0
        self.faces = 0
        self.frames_with_faces = 0
        self.frame_ms: list[float] = []
        self.done = False
        self.stopped_by = "end of source"
        self.last_image: np.ndarray | None = None  # the last annotated frame (the tiled window)


class MultiStream:
    """Ticks over several streams, one model call per tick (see :mod:`runtime.streams`).

    Args:
        streams: The streams, each with its pipeline; they share one classifier.
        max_frames: Stop each stream after this many frames (None: at its end).
        shared_lines: Writers that take every stream's records (one ``--jsonl`` / ``--csv`` for all).
    """

    def __init__(self, streams: Sequence[Stream], max_frames: int | None = None, shared_lines: Sequence = ()) -> None:
        if not streams:
            raise ValueError("no stream")
        self.streams = list(streams)
        self.classifier = streams[0].pipe.classifier
        if any(s.pipe.classifier is not self.classifier for s in streams):
            raise ValueError("the streams must share one classifier (one model call per tick)")
        self.max_frames = max_frames
        self.shared_lines = list(shared_lines)
        self.ticks = 0
        self.model_calls = 0
        self.faces_per_call: list[int] = []
        self._wake = threading.Event()

    def start(self) -> None:
        """Start each source's reader thread."""
        for stream in self.streams:
            stream.reader = Reader(stream.source, self._wake)

    def _gather(self) -> list[tuple[Stream, object]]:
        """This tick's frames: the next of every file stream, the newest of every live stream that has one."""
        while True:
            self._wake.clear()
            got = []
            for stream in self.streams:
                if stream.done:
                    continue
                item = stream.reader.take(wait=not stream.reader.live)
                if item is _END:
                    stream.done = True
                elif item is not None:
                    got.append((stream, item))
            if got or all(s.done for s in self.streams):
                return got
            self._wake.wait(0.5)  # only live streams left, none with a new frame yet

    def tick(self) -> list[tuple[Stream, object, object]]:
        """One tick: each stream's frame detected, ALL faces in one model call, each frame finished.

        Returns:
            ``(stream, frame, faces)`` for every stream that had a frame (empty: all ended).
        """
        got = self._gather()
        if not got:
            return []
        t0 = time.perf_counter()
        prepared = []
        for stream, frame in got:
            stream.pipe.start_frame(frame.path, frame.photo)  # as runtime-live
            prepared.append(stream.pipe.prepare(frame.image, copy=True))
        counts = [len(faces) for faces, _ in prepared]
        probs = self.classifier.predict(np.concatenate([crops for _, crops in prepared]))
        self.model_calls += sum(counts) > 0  # no face at all: no call (predict returns at once)
        self.faces_per_call.append(sum(counts))
        self.ticks += 1
        out, start = [], 0
        elapsed = (time.perf_counter() - t0) * 1000 / len(got)
        for (stream, frame), (faces, _), n in zip(got, prepared, counts, strict=True):
            done = stream.pipe.finish(faces, probs[start:start + n])
            start += n
            stream.frames += 1
            stream.faces += n
            stream.frames_with_faces += bool(n)
            stream.frame_ms.append(elapsed)
            if self.max_frames is not None and stream.frames >= self.max_frames:
                stream.done, stream.stopped_by = True, "max frames"
            out.append((stream, frame, done))
        return out

    def close(self) -> None:
        for stream in self.streams:
            if stream.reader is not None:
                stream.reader.close()
            stream.pipe.close()


# ---- runtime-live --source A --source B ... -----------------------------------------------------------


def _check_args(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse what several streams cannot do, and output names that collide."""
    from runtime.media import video_codec
    from runtime.outputs import VIDEO_FOURCC
    from runtime.sources import IMAGE_SUFFIXES

    for flag in ("output_dir", "timeline", "serve"):
        if getattr(args, flag, None):
            raise UserError(f"--{flag.replace('_', '-')} takes one source: with several --source use --output, "
                            f"--jsonl and --csv with a {PATTERN} pattern or a folder")
    if getattr(args, "virtual_camera", False):
        raise UserError("--virtual-camera takes one source: give one --source")
    if args.output is not None:
        if _shared(args.output):
            raise UserError(f"--output {args.output} is one file, and there are {len(names)} streams: give a pattern "
                            f"such as out-{PATTERN}.mp4, or a folder")
        suffix = args.output.suffix.lower() if PATTERN in str(args.output) else ".mp4"
        if suffix not in VIDEO_FOURCC.keys() | IMAGE_SUFFIXES:
            raise UserError(f"--output {args.output}: use a video ({', '.join(VIDEO_FOURCC)}) or image suffix")
        if suffix in VIDEO_FOURCC:
            video_codec(suffix, args.video_codec)
    for flag in ("output", "jsonl", "csv"):
        path = getattr(args, flag)
        if path is None:
            continue
        planned = {per_stream_path(path, name, ".mp4" if flag == "output" else f".{flag}") for name in names}
        if not _shared(path) and len(planned) < len(names):
            raise UserError(f"--{flag} {path} gives several streams one file: put {PATTERN} in it")
        for one in planned:
            check_output_path(one, f"--{flag}")


def _pipelines(args: argparse.Namespace, count: int) -> list:
    """A pipeline per stream, all around ONE classifier (and one detector's settings)."""
    from runtime.live import _build_pipeline
    from runtime.pipeline import Pipeline
    from runtime.tracker import FaceTracker

    first = _build_pipeline(args)
    pipes = [first]
    for _ in range(count - 1):
        pipes.append(Pipeline(detector=first.detector, classifier=first.classifier,
                              tracker=FaceTracker(smoothing=args.smoothing), emoji_dir=args.emoji_dir,
                              placement=args.placement, show_labels=args.labels, panel=args.panel,
                              detect_every=args.detect_every, search_lag=args.search_lag, stills=True))
    return pipes


def tile(images: Sequence[np.ndarray | None], names: Sequence[str], width: int = 480) -> np.ndarray:
    """The streams' last frames side by side in a grid, each scaled to ``width`` and named."""
    import cv2

    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    height = round(width * 9 / 16)
    canvas = np.zeros((rows * height, cols * width, 3), np.uint8)
    for i, (image, name) in enumerate(zip(images, names, strict=True)):
        r, c = divmod(i, cols)
        cell = canvas[r * height:(r + 1) * height, c * width:(c + 1) * width]
        if image is not None:
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            h, w = image.shape[:2]
            scale = min(width / w, height / h)
            small = cv2.resize(image[..., :3], (max(1, round(w * scale)), max(1, round(h * scale))))
            cell[:small.shape[0], :small.shape[1]] = small
        cv2.putText(cell, name, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2, cv2.LINE_AA)
    return canvas


def main(argv: Sequence[str] | None = None) -> int:
    """``runtime-live`` with ``--source`` given more than once: every stream in one process, one model call per tick."""
    from runtime import live
    from runtime.errors import EXIT_FAILED, EmocamError
    from runtime.lines import JsonlWriter
    from runtime.outputs import Outputs
    from runtime.records import frame_record
    from runtime.sources import ImageSource, VideoSource
    from runtime.stops import Stop, StopSignals
    from runtime.summary import print_summary

    sources, rest = split_sources(argv)
    args = live._parser().parse_args(rest)
    if any(not s.strip() or s == live.AUTO for s in sources):
        raise UserError("--source: with several sources give each one (a camera index, a video, a URL, a folder)")
    names = stream_names(sources)
    _check_args(args, names)
    live._quiet_opencv()
    if not args.no_window:
        from runtime.display import display_problem

        problem = display_problem()
        if problem is not None:
            raise UserError(f"no display available ({problem}): pass --no-window, with --output to save the results")
    pipes = _pipelines(args, len(sources))
    classifier = pipes[0].classifier
    opened: list = []
    try:
        for text in sources:
            opened.append(live._open_source(argparse.Namespace(**{**vars(args), "source": text}), text))
    except BaseException:
        for source in opened:
            source.close()
        raise
    streams = [Stream(name, source, pipe) for name, source, pipe in zip(names, opened, pipes, strict=True)]
    labels = tuple(classifier.labels)
    shared = []
    if _shared(args.jsonl):
        shared.append(JsonlWriter(args.jsonl))
    if _shared(args.csv):
        shared.append(StreamCsvWriter(args.csv, labels))
    for stream in streams:
        source = stream.source
        output = per_stream_path(args.output, stream.name, ".mp4")
        audio = source.paths[0] if isinstance(source, VideoSource) and source.paths else None
        stream.outputs = Outputs(output, None, source.fps, codec=args.video_codec, audio_from=audio)
        if args.jsonl is not None and not _shared(args.jsonl):
            stream.lines.append(JsonlWriter(per_stream_path(args.jsonl, stream.name, ".jsonl")))
        if args.csv is not None and not _shared(args.csv):
            stream.lines.append(StreamCsvWriter(per_stream_path(args.csv, stream.name, ".csv"), labels))
        print(f"runtime-live: stream {stream.name}: {source.description}", file=sys.stderr)
    print(f"runtime-live: {len(streams)} streams -> model {classifier.path.name} on {classifier.provider}, "
          "one model call per tick", file=sys.stderr)
    multi = MultiStream(streams, args.max_frames, shared)
    stops = StopSignals()
    stops.install()
    stopped_by, failure, keep = None, None, False
    t_start = time.perf_counter()
    window = "runtime-live: streams (q or Esc quits)"
    try:
        multi.start()
        while batch := multi.tick():
            stops.hold = True
            for stream, frame, faces in batch:
                annotated = stream.pipe.annotate(frame.image, faces)
                record = frame_record(frame, faces, stream.name)
                for writer in (*stream.lines, *shared):
                    writer.write(record)
                stream.outputs.write(annotated, record, frame)
                stream.last_image = annotated
            stops.release()
            if not args.no_window:
                import cv2

                cv2.imshow(window, tile([s.last_image for s in streams], [s.name for s in streams]))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stopped_by = "key"
                    break
        keep = True
    except KeyboardInterrupt:
        stopped_by, keep = "SIGINT", True
    except Stop:
        stopped_by, keep = stops.received or "SIGTERM", True
    except BrokenPipeError as exc:
        failure, keep = exc, True
    except EmocamError as exc:
        failure = exc
    finally:
        stops.hold = True
        multi.close()
        written: list[Path] = []
        for writer in [*shared, *(w for s in streams for w in s.lines), *(s.outputs for s in streams)]:
            try:
                if not keep:
                    writer.discard()
                elif isinstance(writer, Outputs):
                    writer.close()
                    written.extend(writer.written)
                elif writer.close():
                    written.append(writer.path)
            except EmocamError as exc:
                failure, keep = failure or exc, False
        if not args.no_window:
            import cv2

            with contextlib.suppress(cv2.error):
                cv2.destroyAllWindows()
        stops.restore()
    if failure is not None:
        raise failure
    wall = time.perf_counter() - t_start
    for path in dict.fromkeys(written):
        print(f"runtime-live: wrote {path}", file=sys.stderr)
    frames = sum(s.frames for s in streams)
    summary = {
        "frames": frames,
        "faces": sum(s.faces for s in streams),
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 2) if wall > 0 else 0.0,
        "ticks": multi.ticks,
        "model_calls": multi.model_calls,
        "model_calls_per_tick": round(multi.model_calls / multi.ticks, 3) if multi.ticks else 0.0,
        "provider": classifier.provider,
        "stopped_by": stopped_by or ("max frames" if all(s.stopped_by == "max frames" for s in streams)
                                     else "end of source"),
        "streams": {s.name: {
            "source": s.source.description, "frames": s.frames, "faces": s.faces,
            "frames_with_faces": s.frames_with_faces, "fps": round(s.frames / wall, 2) if wall > 0 else 0.0,
            "p50_ms": round(float(np.percentile(s.frame_ms or [0.0], 50)), 3),
            "dropped": s.source.dropped + (s.reader.dropped if s.reader else 0), "stopped_by": s.stopped_by,
        } for s in streams},
        "output": str(args.output) if args.output else None,
        "jsonl": str(args.jsonl) if args.jsonl else None,
    }
    if args.csv is not None:
        summary["csv"] = str(args.csv)
    if any(isinstance(s.source, ImageSource) for s in streams) and not frames:
        return EXIT_FAILED
    print_summary(json.dumps(summary))
    return 0
