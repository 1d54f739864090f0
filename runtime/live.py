"""runtime-live: capture -> Haar -> one batched ONNX call -> emoji on every face.

Live with a window, or headless (``--no-window``) writing an annotated video/image and JSON
Lines. On exit it prints ONE line of JSON summary to stdout. Ctrl-C, SIGTERM, q and Esc stop
cleanly: the video is finalised and every JSON line is complete.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.cli_support import ArgumentParser, UserError, atomic_path, check_output_path, run_main
from runtime.sources import DEMO, IMAGE_SUFFIXES, ImageSource

VIDEO_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}  # container -> fourcc
DEMO_OUTPUT = "runtime-live-demo.jpg"  # where the headless demo writes when no --output is given
AUTO = "auto"  # --source default: camera 0 with a window if there is both, else the demo


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="runtime-live", description="Facial emotion to emoji, live or headless.")
    p.add_argument("--source", default=AUTO,
                   help="auto (camera 0 with a window if present, else the demo), demo, a camera index, "
                        "a video file, a stream URL, an image, or a folder of images")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX model from export-onnx, or a shipped one: fp32 (the default) or int8 (faster on a CPU)")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto", help="onnxruntime execution provider")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    p.add_argument("--no-window", action="store_true", help="headless: no window (servers, CI)")
    p.add_argument("--output", type=Path, default=None,
                   help="write the annotated video (.mp4/.avi) or image (.jpg/.png)")
    p.add_argument("--jsonl", type=Path, default=None, help="write one JSON line per frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    g = p.add_argument_group("detector")
    g.add_argument("--detect-width", type=int, default=320, help="width of the frame Haar sees (0: full size)")
    g.add_argument("--scale-factor", type=float, default=1.1, help="Haar image-pyramid step")
    g.add_argument("--min-neighbors", type=int, default=5, help="Haar hits a face needs")
    g.add_argument("--min-size", type=int, default=40, help="smallest face side, in frame pixels")
    g.add_argument("--detect-every", type=int, default=5,
                   help="search the whole frame every Nth frame; between, re-find known faces near their boxes")
    g = p.add_argument_group("classifier and display")
    g.add_argument("--margin", type=float, default=0.0,
                   help="crop margin around each face (fraction of its size); 0 matches FER2013's framing")
    g.add_argument("--smoothing", type=float, default=0.6, help="weight of the past in per-face probability smoothing")
    g.add_argument("--emoji-dir", type=Path, default=None,
                   help="folder with one <label>.png per class (your own avatars)")
    g.add_argument("--placement", choices=["over", "beside"], default="over", help="emoji over the face or beside it")
    g.add_argument("--labels", action="store_true", help="also write label and confidence on each face")
    g.add_argument("--panel", action="store_true", help="side panel with the dominant emotion's emoji, large")
    g.add_argument("--reconnect", type=int, default=0,
                   help="live sources: reconnect N times (with backoff) if they stop")
    return p


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _camera_present(index: int = 0) -> bool:
    import cv2

    cap = cv2.VideoCapture(index)
    try:
        return cap.isOpened()
    finally:
        cap.release()


class _Stop(Exception):
    """Raised by the signal handler to leave the frame loop cleanly."""


class _StopSignals:
    """SIGINT and SIGTERM handler: leave the frame loop, but never inside a critical section.

    While ``hold`` is set (writing one frame's video frame and JSON line, or finalising the
    outputs) a signal is only recorded, so the video and the JSON Lines never disagree by a
    frame; :meth:`release` raises it once the section is done.
    """

    def __init__(self) -> None:
        self.hold = False
        self.received: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name
        if not self.hold:
            raise _Stop()

    def release(self) -> None:
        self.hold = False
        if self.received is not None:
            raise _Stop()


class Outputs:
    """The annotated video or image and the JSON Lines file; always finalised by :meth:`close`."""

    def __init__(self, output: Path | None, jsonl: Path | None, fps: float) -> None:
        self.output = output
        self.fps = fps if fps > 0 else 25.0
        self.writer = None
        self.size_wh: tuple[int, int] | None = None
        self.last: np.ndarray | None = None
        self.video = output is not None and output.suffix.lower() in VIDEO_SUFFIXES
        self.jsonl_path = jsonl
        self.jsonl = None  # opened with the first frame: a run that fails before it leaves no empty file

    def write(self, frame: np.ndarray, record: dict) -> None:
        import cv2

        if self.jsonl_path is not None:
            if self.jsonl is None:
                self.jsonl = self.jsonl_path.open("w", encoding="utf-8")
            self.jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.jsonl.flush()
        if self.output is None:
            return
        if not self.video:
            self.last = frame
            return
        if self.writer is None:
            h, w = frame.shape[:2]
            self.size_wh = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.output.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.output), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise UserError(f"cannot write video {self.output}: OpenCV has no encoder for it; use .mp4 or .avi")
        if (frame.shape[1], frame.shape[0]) != self.size_wh:
            frame = cv2.resize(frame, self.size_wh)
        self.writer.write(frame)

    def close(self) -> None:
        import cv2

        if self.jsonl is not None:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.release()
        if self.output is not None and not self.video and self.last is not None:
            with atomic_path(self.output) as tmp:
                if not cv2.imwrite(str(tmp), self.last):
                    raise UserError(f"could not encode {self.output}: use .jpg or .png")


def main(argv: Sequence[str] | None = None) -> int:
    """runtime-live: facial emotion to emoji, live or headless."""
    args = _parser().parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if args.detect_every < 1:
        raise UserError("--detect-every must be at least 1")
    if args.reconnect < 0 or args.threads < 0:
        raise UserError("--reconnect and --threads must be >= 0")
    if not 0 <= args.smoothing < 1:
        raise UserError(f"--smoothing {args.smoothing} is out of range: use [0, 1)")
    if args.output is not None and args.jsonl is not None and args.output.resolve() == args.jsonl.resolve():
        raise UserError("--output and --jsonl name the same file: give them different paths")
    if args.output is not None and args.output.suffix.lower() not in VIDEO_SUFFIXES.keys() | IMAGE_SUFFIXES:
        raise UserError(f"--output {args.output}: use a video (.mp4, .avi) or image (.jpg, .png) suffix")

    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our errors say what went wrong
    display = _has_display()
    source_name = args.source
    if source_name == AUTO:
        source_name = "0" if (not args.no_window and display and _camera_present(0)) else DEMO
        if source_name == DEMO:
            args.no_window = True
            print("runtime-live: no camera with a display here: annotating the built-in demo image", file=sys.stderr)
    if source_name == DEMO and args.output is None and args.no_window:
        args.output = Path(DEMO_OUTPUT)
    if not args.no_window and not display:
        raise UserError("no display available (DISPLAY is not set): pass --no-window, with --output to save the result")
    for path, what in ((args.output, "--output"), (args.jsonl, "--jsonl")):
        if path is not None:
            check_output_path(path, what)
    if args.output is not None and args.output.suffix.lower() in IMAGE_SUFFIXES and source_name.isdigit():
        raise UserError("--output with an image suffix keeps one frame: use .mp4 for a camera")

    from runtime.classifier import EmotionClassifier
    from runtime.detector import HaarDetector
    from runtime.pipeline import Pipeline
    from runtime.sources import open_source
    from runtime.tracker import FaceTracker

    pipe = Pipeline(
        detector=HaarDetector(None, args.detect_width, args.scale_factor, args.min_neighbors, args.min_size),
        classifier=EmotionClassifier(args.model, args.provider, args.threads, args.margin),
        tracker=FaceTracker(smoothing=args.smoothing),
        emoji_dir=args.emoji_dir,
        placement=args.placement,
        show_labels=args.labels,
        panel=args.panel,
        detect_every=args.detect_every,
    )
    source = open_source(source_name, reconnect=args.reconnect)
    print(f"runtime-live: {source.description} -> model {pipe.classifier.path.name} on {pipe.classifier.provider}",
          file=sys.stderr)
    window = "runtime-live (q or Esc quits)"
    frame_ms: list[float] = []
    faces_total = frames_with_faces = 0
    stopped_by = "end of source"
    stops = _StopSignals()
    previous = {sig: signal.signal(sig, stops) for sig in (signal.SIGINT, signal.SIGTERM)}
    outputs = None
    t_start = time.perf_counter()
    try:
        outputs = Outputs(args.output, args.jsonl, source.fps)
        stills = isinstance(source, ImageSource)  # unrelated images: no tracking across them
        for frame in source:
            t0 = time.perf_counter()
            if stills:
                pipe.reset()
            annotated, faces = pipe(frame.image)
            frame_ms.append((time.perf_counter() - t0) * 1000)
            faces_total += len(faces)
            frames_with_faces += bool(len(faces))
            record = {"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 4), "faces": faces.to_records()}
            if frame.name:
                record["file"] = frame.name
            stops.hold = True  # a frame's video frame and its JSON line are written together or not at all
            outputs.write(annotated, record)
            stops.release()
            if not args.no_window:
                fps = len(frame_ms) / max(1e-9, time.perf_counter() - t_start)
                shown = annotated.copy()
                cv2.putText(shown, f"{fps:.1f} fps", (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2,
                            cv2.LINE_AA)
                try:
                    cv2.imshow(window, shown)
                    key = cv2.waitKey(0 if not source.live and source.fps == 0 else 1)  # images: until a key
                except cv2.error:
                    raise UserError("this OpenCV cannot open windows (headless build): pass --no-window") from None
                if key & 0xFF in (ord("q"), 27):
                    stopped_by = "key"
                    break
            if args.max_frames is not None and len(frame_ms) >= args.max_frames:
                stopped_by = "max frames"
                break
    except KeyboardInterrupt:
        stopped_by = "SIGINT"
    except _Stop:
        stopped_by = stops.received or "SIGTERM"
    finally:
        stops.hold = True  # a second signal must not cut the finalising of the outputs short
        source.close()
        if outputs is not None:
            outputs.close()
        if not args.no_window:
            cv2.destroyAllWindows()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    wall = time.perf_counter() - t_start
    if not frame_ms and getattr(source, "skipped", None):
        raise UserError(f"{source.description}: no file decoded as an image (skipped {len(source.skipped)})")
    ms = np.asarray(frame_ms or [0.0])
    summary = {
        "frames": len(frame_ms),
        "faces": faces_total,
        "frames_with_faces": frames_with_faces,
        "wall_s": round(wall, 3),
        "fps": round(len(frame_ms) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "provider": pipe.classifier.provider,
        "source": source.description,
        "dropped": source.dropped,
        "stopped_by": stopped_by,
        "output": str(args.output) if args.output else None,
        "jsonl": str(args.jsonl) if args.jsonl else None,
    }
    if args.output is not None:
        print(f"runtime-live: wrote {args.output.resolve()}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0


cli = run_main(main, "runtime-live")
