"""runtime-live: capture -> Haar -> one batched ONNX call -> emoji on every face.

Live with a window, or headless (``--no-window``) writing an annotated video/image and JSON
Lines. On exit it prints ONE line of JSON summary to stdout. Ctrl-C, SIGTERM, q and Esc stop
cleanly: the video is finalised and every JSON line is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from runtime.cli_support import THREADS, ArgumentParser, Number, UserError, check_output_path, path_arg, run_main
from runtime.errors import EXIT_FAILED, EmocamError
from runtime.outputs import VIDEO_FOURCC, Outputs
from runtime.sources import DEMO, IMAGE_SUFFIXES, OPEN_TIMEOUT_S, ImageSource

DEMO_OUTPUT = "runtime-live-demo.jpg"  # where the headless demo writes when no --output is given
AUTO = "auto"  # --source default: camera 0 with a window if there is both, else the demo
# Signals that stop the run cleanly (outputs finalised): every catchable one whose default would kill the
# process: Ctrl-C, kill, a closed terminal or SSH session, Ctrl-\, the user signals, timers, a CPU-time limit.
STOP_SIGNALS = tuple(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU",
) if hasattr(signal, name))


def _default(cls: type, name: str) -> object:
    """The default of ``cls``'s ``name`` argument: the classes hold the defaults, the flags repeat none."""
    return inspect.signature(cls).parameters[name].default


def _parser() -> ArgumentParser:
    from runtime.annotate import EmojiAnnotator
    from runtime.backends import PROVIDERS
    from runtime.classifier import EmotionClassifier
    from runtime.detector import HaarDetector
    from runtime.pipeline import Pipeline
    from runtime.tracker import FaceTracker

    p = ArgumentParser(prog="runtime-live", description="Facial emotion to emoji, live or headless.")
    p.add_argument("--source", default=AUTO,
                   help="auto (camera 0 with a window if present, else the demo), demo, a camera index, "
                        "a video file, a stream URL, an image, or a folder of images")
    p.add_argument("--model", type=path_arg, default=None,
                   help="ONNX model from export-onnx, or a shipped one: fp32 (the default) or int8 (faster on a CPU)")
    p.add_argument("--provider", choices=PROVIDERS, default=_default(EmotionClassifier, "provider"),
                   help="inference engine: auto (CUDA, else OpenVINO when installed, else CPU), cpu (onnxruntime), "
                        "cuda (onnxruntime-gpu: the [gpu] extra) or openvino (the [openvino] extra)")
    p.add_argument("--threads", type=THREADS, default=_default(EmotionClassifier, "threads"),
                   help="inference threads (0: one per core)")
    p.add_argument("--no-window", action="store_true", help="headless: no window (servers, CI)")
    p.add_argument("--output", type=path_arg, default=None,
                   help=f"write the annotated video ({', '.join(VIDEO_FOURCC)}) or image (.jpg, .png, ...); "
                        "a partial .mkv or .avi still plays after a SIGKILL, a partial .mp4 does not")
    p.add_argument("--jsonl", type=path_arg, default=None, help="write one JSON line per frame")
    p.add_argument("--max-frames", type=Number(int, 1, 10**12), default=None, help="stop after N frames")
    p.add_argument("--open-timeout", type=Number(float, 0.1, 3600), default=OPEN_TIMEOUT_S,
                   help="seconds a video, stream or pipe may take to open")
    g = p.add_argument_group("detector")
    g.add_argument("--detect-width", type=Number(int, 0, 16384), default=_default(HaarDetector, "detect_width"),
                   help="width of the frame Haar sees (0: full size)")
    g.add_argument("--scale-factor", type=Number(float, 1.01, 3.0), default=_default(HaarDetector, "scale_factor"),
                   help="Haar image-pyramid step")
    g.add_argument("--min-neighbors", type=Number(int, 0, 100), default=_default(HaarDetector, "min_neighbors"),
                   help="Haar hits a face needs")
    g.add_argument("--min-size", type=Number(int, 1, 16384), default=_default(HaarDetector, "min_size"),
                   help="smallest face side, in frame pixels")
    g.add_argument("--detect-every", type=Number(int, 1, 10000), default=_default(Pipeline, "detect_every"),
                   help="search the whole frame every Nth frame; between, re-find known faces near their boxes")
    g = p.add_argument_group("classifier and display")
    g.add_argument("--margin", type=Number(float, 0.0, 1.0), default=_default(EmotionClassifier, "margin"),
                   help="crop margin around each face (fraction of its size); 0 matches FER2013's framing")
    g.add_argument("--smoothing", type=Number(float, 0.0, 0.99), default=_default(FaceTracker, "smoothing"),
                   help="weight of the past in per-face probability smoothing")
    g.add_argument("--emoji-dir", type=path_arg, default=None,
                   help="folder with one <label>.png per class (your own avatars)")
    g.add_argument("--placement", choices=["over", "beside"], default=_default(EmojiAnnotator, "placement"),
                   help="emoji over the face or beside it")
    g.add_argument("--labels", action="store_true", help="also write label and confidence on each face")
    g.add_argument("--panel", action="store_true", help="side panel with the dominant emotion's emoji, large")
    g.add_argument("--reconnect", type=Number(int, 0, 1000), default=0,
                   help="live sources: reconnect N times (with backoff) if they stop")
    return p


def _display_problem() -> str | None:
    """Why OpenCV could not open a window here, or None when it can (as far as can be told).

    On Linux OpenCV's window talks to an X server (Qt's xcb); one it cannot reach makes Qt abort
    the whole process, so the server is tried first: its Unix socket, or TCP for ``host:N``.
    """
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set"
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdecimal():
        return f"DISPLAY={display} is not a display name like :0"
    import socket
    import struct

    if host in ("", "unix"):
        targets = [(socket.AF_UNIX, f"/tmp/.X11-unix/X{number}"), (socket.AF_UNIX, f"\0/tmp/.X11-unix/X{number}")]
    else:
        targets = [(socket.AF_INET, (host, 6000 + int(number)))]
    for family, address in targets:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:  # the X11 connection set-up: an X server answers 0 (failed), 1 (success) or 2 (authenticate)
                sock.connect(address)
                sock.sendall(struct.pack("<cxHHHHxx", b"l", 11, 0, 0, 0))
                if sock.recv(1)[:1] in (b"\x00", b"\x01", b"\x02"):
                    return None
            except OSError:
                continue
    return f"no X server answers on DISPLAY={display}"


def _camera_present(index: int = 0) -> bool:
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        return cap.isOpened()
    finally:
        cap.release()


class _Stop(BaseException):  # not an Exception: no "except Exception" on the way may swallow it
    """Raised by the signal handler to leave the frame loop cleanly."""


class _StopSignals:
    """SIGINT and SIGTERM handler: leave the frame loop, but never inside a critical section.

    While ``hold`` is set (writing one frame's video frame and JSON line, or finalising the
    outputs) a signal is only recorded, so the video and the JSON Lines never disagree by a
    frame; :meth:`release` raises it once the section is done. The exception: a write to a pipe
    whose reader has stopped reading would never end, so a signal then stops the run at once
    (a line up to the pipe's atomic size, 4 KiB, is never torn: the write had not begun).
    """

    def __init__(self) -> None:
        self.hold = False
        self.received: str | None = None
        self.blocked: Callable[[], bool] = lambda: False  # True while a write may wait on a stalled reader

    def __call__(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name
        if not self.hold or self.blocked():
            raise _Stop()

    def release(self) -> None:
        self.hold = False
        if self.received is not None:
            raise _Stop()


def _check_paths(args: argparse.Namespace, source_files: Sequence[Path]) -> None:
    """Refuse outputs that are the same file as each other or as any file the run reads."""
    from runtime.files import display, same_file

    if args.output is not None and args.jsonl is not None and same_file(args.output, args.jsonl):
        raise UserError("--output and --jsonl name the same file: give them different paths")
    for path, flag in ((args.output, "--output"), (args.jsonl, "--jsonl")):
        if path is None:
            continue
        for source in source_files:
            if same_file(path, source):
                raise UserError(f"{flag} {display(path)} is the input file {display(source)}: writing it would "
                                "destroy the input; give another path")


def _validate(args: argparse.Namespace) -> None:
    """Checks that need no OpenCV: paths and suffixes (numbers are bounded by the parser)."""
    from runtime.files import is_stream

    if not args.source.strip():
        raise UserError("--source is empty: give a camera index, a video, an image, a folder, a URL or 'demo'")
    if args.output is not None:
        suffix = args.output.suffix.lower()
        if suffix not in VIDEO_FOURCC.keys() | IMAGE_SUFFIXES:
            raise UserError(f"--output {args.output}: use a video ({', '.join(VIDEO_FOURCC)}) or image "
                            "(.jpg, .png) suffix")
        if suffix in VIDEO_FOURCC and is_stream(args.output):
            raise UserError(f"--output {args.output} is not a regular file: a video needs a seekable file")
    _check_paths(args, [])
    for path, what in ((args.output, "--output"), (args.jsonl, "--jsonl")):
        if path is not None and not is_stream(path):
            check_output_path(path, what)


def _choose_source(args: argparse.Namespace) -> str:
    """The source to open (resolving ``auto``), adjusting ``--no-window`` and ``--output`` for the demo."""
    problem = _display_problem()
    display = problem is None
    source_name = args.source
    if source_name == AUTO:
        source_name = "0" if (not args.no_window and display and _camera_present(0)) else DEMO
        if source_name == DEMO:
            args.no_window = True
            print("runtime-live: no camera with a display here: annotating the built-in demo image", file=sys.stderr)
    if source_name == DEMO and args.output is None and args.no_window:
        args.output = Path(DEMO_OUTPUT)
    if not args.no_window and not display:
        raise UserError(f"no display available ({problem}): pass --no-window, with --output to save the result")
    if args.output is not None and args.output.suffix.lower() in IMAGE_SUFFIXES and source_name.isdigit():
        raise UserError("--output with an image suffix keeps one frame: use .mp4 for a camera")
    return source_name


def _build_pipeline(args: argparse.Namespace):  # -> Pipeline, imported late to keep --help fast
    from runtime.classifier import EmotionClassifier
    from runtime.detector import HaarDetector
    from runtime.pipeline import Pipeline
    from runtime.tracker import FaceTracker

    return Pipeline(
        detector=HaarDetector(detect_width=args.detect_width, scale_factor=args.scale_factor,
                              min_neighbors=args.min_neighbors, min_size=args.min_size),
        classifier=EmotionClassifier(args.model, provider=args.provider, threads=args.threads, margin=args.margin),
        tracker=FaceTracker(smoothing=args.smoothing),
        emoji_dir=args.emoji_dir,
        placement=args.placement,
        show_labels=args.labels,
        panel=args.panel,
        detect_every=args.detect_every,
    )


class _Run:
    """What the frame loop counts, for the summary."""

    def __init__(self) -> None:
        self.frame_ms: list[float] = []
        self.faces = 0
        self.frames_with_faces = 0
        self.stopped_by = "end of source"
        self.t_start = time.perf_counter()


def _loop(args: argparse.Namespace, source, pipe, outputs: Outputs, stops: _StopSignals, run: _Run) -> None:
    """Process frames until the source ends, a key, ``--max-frames`` or a stop signal."""
    import cv2

    window = "runtime-live (q or Esc quits)"
    stills = isinstance(source, ImageSource)  # unrelated images: no tracking across them
    for frame in source:
        t0 = time.perf_counter()
        if stills:
            pipe.reset()
        annotated, faces = pipe(frame.image)
        run.frame_ms.append((time.perf_counter() - t0) * 1000)
        run.faces += len(faces)
        run.frames_with_faces += bool(len(faces))
        record = {"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 4), "faces": faces.to_records()}
        if frame.name:
            record["file"] = frame.name
        stops.hold = True  # a frame's video frame and its JSON line are written together or not at all
        outputs.write(annotated, record)
        stops.release()
        if not args.no_window:
            fps = len(run.frame_ms) / max(1e-9, time.perf_counter() - run.t_start)
            shown = annotated.copy()
            cv2.putText(shown, f"{fps:.1f} fps", (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2, cv2.LINE_AA)
            try:
                cv2.imshow(window, shown)
                key = cv2.waitKey(0 if not source.live and source.fps == 0 else 1)  # images: until a key
            except cv2.error:
                raise UserError("this OpenCV cannot open windows (headless build): pass --no-window") from None
            if key & 0xFF in (ord("q"), 27):
                run.stopped_by = "key"
                return
        if args.max_frames is not None and len(run.frame_ms) >= args.max_frames:
            run.stopped_by = "max frames"
            return


def _quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own log lines: our one-line errors say what went wrong."""
    os.environ.setdefault("OPENCV_FFMPEG_DEBUG", "1")  # with the level below: FFmpeg logs nothing
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _open_source(args: argparse.Namespace, source_name: str):  # -> FrameSource
    """Open the source, and refuse outputs that are one of the files it reads."""
    from runtime.sources import OpenTimeout, open_source

    try:
        source = open_source(source_name, reconnect=args.reconnect, open_timeout_s=args.open_timeout)
    except OpenTimeout as exc:
        raise UserError(f"{exc} with --open-timeout") from None
    try:
        _check_paths(args, source.paths)
    except UserError:
        source.close()
        raise
    return source


def _model_files(args: argparse.Namespace, pipe) -> list[Path]:
    """Every file the pipeline reads besides the source: the model and the emoji (outputs must be none of them)."""
    from runtime.annotate import default_emoji_dir

    emoji_dir = args.emoji_dir if args.emoji_dir is not None else default_emoji_dir()
    return [pipe.classifier.path, *(Path(emoji_dir) / f"{label}.png" for label in pipe.classifier.labels)]


def _process(args: argparse.Namespace, source, pipe) -> tuple[_Run, list[Path]]:
    """The frame loop under the stop signals; then the outputs are finalised, or dropped after a failure.

    Returns:
        What the loop counted, and the files written (finalised and checked).

    Raises:
        EmocamError: A write or the model failed (the outputs were dropped: earlier results stay).
        BrokenPipeError: The reader of a streamed output went away (the outputs were finalised).
    """
    import cv2

    run, stops = _Run(), _StopSignals()
    previous = {sig: signal.signal(sig, stops) for sig in STOP_SIGNALS}
    outputs = None
    failure: Exception | None = None
    keep = False  # finalise the outputs (the run ended or was stopped) or drop them (it failed)
    try:
        outputs = Outputs(args.output, args.jsonl, source.fps)
        jsonl = outputs.jsonl
        stops.blocked = lambda: jsonl is not None and jsonl.waiting_on_reader
        _loop(args, source, pipe, outputs, stops, run)
        keep = True
    except KeyboardInterrupt:
        run.stopped_by, keep = "SIGINT", True
    except _Stop:
        run.stopped_by, keep = stops.received or "SIGTERM", True
    except BrokenPipeError as exc:  # the reader of a streamed output went away: keep what is whole
        failure, keep = exc, True
    except EmocamError as exc:  # a failed write or model
        failure = exc
    except (cv2.error, MemoryError) as exc:  # e.g. a huge frame searched at full size: out of memory
        reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "out of memory"
        failure = EmocamError(f"frame {len(run.frame_ms)} could not be processed ({reason}): for very large frames, "
                              "use a smaller --detect-width or a larger --scale-factor", EXIT_FAILED)
    finally:
        stops.hold = True  # a second signal must not cut the finalising of the outputs short
        source.close()
        if outputs is not None:
            try:
                if keep:
                    outputs.close()
                else:
                    outputs.discard()  # a failed run (or a bug) never replaces an earlier result
            except EmocamError as exc:
                failure = failure or exc
        if not args.no_window:
            with contextlib.suppress(cv2.error):  # a headless OpenCV raises here too
                cv2.destroyAllWindows()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:  # an EmocamError carries its exit code (1 for a failed write)
        raise failure
    return run, outputs.written


def main(argv: Sequence[str] | None = None) -> int:
    """runtime-live: facial emotion to emoji, live or headless."""
    from runtime.files import display

    args = _parser().parse_args(argv)
    _validate(args)
    _quiet_opencv()
    source_name = _choose_source(args)
    pipe = _build_pipeline(args)
    _check_paths(args, _model_files(args, pipe))
    source = _open_source(args, source_name)
    print(f"runtime-live: {source.description} -> model {pipe.classifier.path.name} on {pipe.classifier.provider}",
          file=sys.stderr)
    run, written = _process(args, source, pipe)
    if not run.frame_ms and getattr(source, "skipped", None):
        raise UserError(f"{source.description}: no file decoded as an image (skipped {len(source.skipped)})")
    for path in written:
        print(f"runtime-live: wrote {display(path.resolve() if path.exists() else path)}", file=sys.stderr)
    _print_summary(json.dumps(_summary(args, source, pipe, run)))
    return 0


def _print_summary(line: str, wait_s: float = 5.0) -> None:
    """Print the summary line; to a pipe whose reader has stopped reading, give up after ``wait_s``
    (the outputs are already finalised: a stalled reader must not hold the process forever)."""
    import select
    import stat

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
        piped = stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's capture): print as usual
        piped = False
    if piped and not select.select([], [fd], [], wait_s)[1]:
        print("runtime-live: the summary was not printed: the reader of stdout is not reading", file=sys.stderr)
        return
    print(line, flush=True)


def _summary(args: argparse.Namespace, source, pipe, run: _Run) -> dict:
    wall = time.perf_counter() - run.t_start
    ms = np.asarray(run.frame_ms or [0.0])
    return {
        "frames": len(run.frame_ms),
        "faces": run.faces,
        "frames_with_faces": run.frames_with_faces,
        "wall_s": round(wall, 3),
        "fps": round(len(run.frame_ms) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "provider": pipe.classifier.provider,
        "source": source.description,
        "dropped": source.dropped,
        "stopped_by": run.stopped_by,
        "output": str(args.output) if args.output else None,
        "jsonl": str(args.jsonl) if args.jsonl else None,
    }


cli = run_main(main, "runtime-live")
