"""runtime-live: capture -> Haar -> one batched ONNX call -> emoji on every face.

Live with a window, or headless (``--no-window``) writing an annotated video or image (or one
per input file, ``--output-dir``), JSON Lines, a CSV table and a timeline chart. On exit it prints
ONE line of JSON summary to stdout. Ctrl-C, SIGTERM, q and Esc stop cleanly: the video is
finalised and every JSON line is complete. A file of known length shows a progress bar on a
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from models import SHIPPED_NAMES
from runtime.cli_support import (
    THREADS,
    ArgumentParser,
    Number,
    UserError,
    check_output_path,
    default_of,
    path_arg,
    run_main,
)
from runtime.display import camera_present, display_problem
from runtime.errors import EXIT_FAILED, EmocamError
from runtime.outputs import VIDEO_FOURCC, Outputs
from runtime.sources import DEMO, IMAGE_SUFFIXES, OPEN_TIMEOUT_S, ImageSource
from runtime.stops import Stop, StopSignals
from runtime.summary import RunStats, photo_line, print_summary, summary

DEMO_OUTPUT = "runtime-live-demo.jpg"  # where the headless demo writes when no --output is given
AUTO = "auto"  # --source default: camera 0 with a window if there is both, else the demo


def add_detector_flags(g) -> None:
    """The detector's flags (Haar and the whole-frame search cadence), shared by runtime-live and runtime-batch.

    Args:
        g: The parser or argument group that takes them.
    """
    from runtime.detector import HaarDetector
    from runtime.pipeline import Pipeline

    g.add_argument("--detect-width", type=Number(int, 0, 16384), default=default_of(HaarDetector, "detect_width"),
                   help="width of the frame Haar sees (0: full size)")
    g.add_argument("--scale-factor", type=Number(float, 1.01, 3.0), default=default_of(HaarDetector, "scale_factor"),
                   help="Haar image-pyramid step")
    g.add_argument("--min-neighbors", type=Number(int, 0, 100), default=default_of(HaarDetector, "min_neighbors"),
                   help="Haar hits a face needs")
    g.add_argument("--min-size", type=Number(int, 1, 16384), default=default_of(HaarDetector, "min_size"),
                   help="smallest face side, in frame pixels")
    g.add_argument("--tilt-deg", type=Number(float, 0, 45), default=default_of(HaarDetector, "tilt_deg"),
                   help="also search the frame turned this many degrees either way, for tilted heads (0: upright only)")
    g.add_argument("--detect-every", type=Number(int, 1, 10000), default=default_of(Pipeline, "detect_every"),
                   help="search the whole frame every Nth frame; between, re-find known faces near their boxes")
    g.add_argument("--search-lag", type=Number(int, 0, 1000), default=default_of(Pipeline, "search_lag"),
                   help="frames a whole-frame search runs beside (on its own thread) before its new faces join; "
                        "0: search on the frame itself")


def _parser() -> ArgumentParser:
    from runtime.annotate import EmojiAnnotator
    from runtime.backends import PROVIDERS
    from runtime.classifier import EmotionClassifier
    from runtime.media import CODECS
    from runtime.tracker import FaceTracker

    p = ArgumentParser(prog="runtime-live", description="Facial emotion to emoji, live or headless.")
    p.add_argument("--source", default=AUTO,
                   help="auto (camera 0 with a window if present, else the demo), demo, a camera index, "
                        "a video file, a stream URL, an image, or a folder of photos and videos")
    p.add_argument("--model", type=path_arg, default=None,
                   help=f"ONNX model from export-onnx, or a shipped one: {SHIPPED_NAMES} (MODEL_CARD.md compares "
                   "their accuracy and speed)")
    p.add_argument("--provider", choices=PROVIDERS, default=default_of(EmotionClassifier, "provider"),
                   help="inference engine: auto (CUDA, else OpenVINO when installed, else CPU), cpu (onnxruntime), "
                        "cuda (onnxruntime-gpu: the [gpu] extra) or openvino (the [openvino] extra)")
    p.add_argument("--threads", type=THREADS, default=default_of(EmotionClassifier, "threads"),
                   help="inference threads (0: one per core, but one fewer beside the background search)")
    p.add_argument("--no-window", action="store_true", help="headless: no window (servers, CI)")
    p.add_argument("--output", type=path_arg, default=None,
                   help=f"write the annotated video ({', '.join(VIDEO_FOURCC)}) or image (.jpg, .png, ...); "
                        "a partial .mkv or .avi still plays after a SIGKILL, a partial .mp4 does not")
    p.add_argument("--jsonl", type=path_arg, default=None, help="write one JSON line per frame")
    p.add_argument("--csv", type=path_arg, default=None,
                   help="write one CSV row per face per frame (frame, time, file, track, box, label, probabilities)")
    p.add_argument("--timeline", type=path_arg, default=None,
                   help="draw each face's emotions over time and the share of time per emotion (.png, .svg, .pdf; "
                        'needs matplotlib: pip install "emocam[plot]")')
    p.add_argument("--output-dir", type=path_arg, default=None,
                   help="write one annotated file per input file into this folder (made if missing), named as "
                        "the input; for a folder of photos or videos")
    p.add_argument("--video-codec", choices=CODECS, default="auto",
                   help='video outputs: h264 plays in browsers and keeps the sound (PyAV: pip install "emocam[video]"),'
                        " mpeg4 is OpenCV's; auto: h264 when PyAV is installed")
    p.add_argument("--max-frames", type=Number(int, 1, 10**12), default=None, help="stop after N frames")
    p.add_argument("--open-timeout", type=Number(float, 0.1, 3600), default=OPEN_TIMEOUT_S,
                   help="seconds a video, stream or pipe may take to open")
    add_detector_flags(p.add_argument_group("detector"))
    g = p.add_argument_group("classifier and display")
    g.add_argument("--margin", type=Number(float, 0.0, 1.0), default=default_of(EmotionClassifier, "margin"),
                   help="crop margin around each face (fraction of its size); 0 matches FER2013's framing")
    g.add_argument("--smoothing", type=Number(float, 0.0, 0.99), default=default_of(FaceTracker, "smoothing"),
                   help="weight of the past in per-face probability smoothing")
    g.add_argument("--emoji-dir", type=path_arg, default=None,
                   help="folder with one <label>.png per class (your own avatars)")
    g.add_argument("--placement", choices=["over", "beside"], default=default_of(EmojiAnnotator, "placement"),
                   help="emoji over the face or beside it")
    g.add_argument("--labels", action="store_true", help="also write label and confidence on each face")
    g.add_argument("--panel", action="store_true", help="side panel with the dominant emotion's emoji, large")
    g.add_argument("--reconnect", type=Number(int, 0, 1000), default=0,
                   help="live sources: reconnect N times (with backoff) if they stop")
    from runtime.views import address_arg

    g = p.add_argument_group("web view and virtual camera")
    g.add_argument("--serve", type=address_arg, default=None, metavar="HOST:PORT",
                   help="show the annotated video, the faces and the share of each emotion on a web page at "
                        "http://HOST:PORT/ (host 127.0.0.1 unless given; another host needs the printed token); "
                        "files play at their frame rate")
    g.add_argument("--virtual-camera", action="store_true",
                   help='send the annotated video to a virtual webcam for video calls (pip install '
                        '"emocam[virtualcam]"; v4l2loopback on Linux, OBS on Windows and macOS)')
    return p


FILE_OUTPUTS = ("output", "jsonl", "csv", "timeline")  # the flags that name one output file each


def _file_outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Each output file of the run, with its flag: ``[("--output", path), ...]``."""
    return [(f"--{name}", getattr(args, name)) for name in FILE_OUTPUTS if getattr(args, name) is not None]


def _check_paths(args: argparse.Namespace, source_files: Sequence[Path]) -> None:
    """Refuse outputs that are the same file as each other or as any file the run reads (for
    ``--output-dir``: any file it would write, one per input file)."""
    from runtime.files import display, same_file
    from runtime.media import per_file_outputs

    outputs = _file_outputs(args)
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[i + 1:]:
            if same_file(path, other):
                raise UserError(f"{flag} and {other_flag} name the same file: give them different paths")
    if args.output_dir is not None:
        planned = per_file_outputs(args.output_dir, source_files)
        outputs += [("--output-dir", path) for path in planned]
        names = {os.path.realpath(path) for path in planned}
        for flag, path in _file_outputs(args):
            if os.path.realpath(path) in names:
                raise UserError(f"{flag} {display(path)} is also a file of --output-dir: give another path")
    inputs: dict = {}  # each input file by its resolved path and by its inode (hard links): one stat each
    for path in source_files:
        inputs[os.path.realpath(path)] = path
        with contextlib.suppress(OSError):
            st = os.stat(path)
            inputs[(st.st_dev, st.st_ino)] = path
    for flag, path in outputs:
        source = inputs.get(os.path.realpath(path))
        if source is None and inputs:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                source = inputs.get((st.st_dev, st.st_ino))
        if source is None:
            continue
        if flag == "--output-dir":
            raise UserError(f"--output-dir {display(args.output_dir)} would write {display(path.name)} over the "
                            f"input file {display(source)}: give another folder")
        raise UserError(f"{flag} {display(path)} is the input file {display(source)}: writing it would destroy the "
                        "input; give another path")


def _validate(args: argparse.Namespace) -> None:
    """Checks that need no OpenCV: paths, suffixes and extras (numbers are bounded by the parser)."""
    from runtime.cli_support import missing_extra
    from runtime.files import is_stream
    from runtime.media import video_codec
    from runtime.timeline import SUFFIXES, plot_available

    if not args.source.strip():
        raise UserError("--source is empty: give a camera index, a video, an image, a folder, a URL or 'demo'")
    if args.output is not None and args.output_dir is not None:
        raise UserError("--output and --output-dir both name where the annotated result goes: give one of them")
    if args.output is not None:
        suffix = args.output.suffix.lower()
        if suffix not in VIDEO_FOURCC.keys() | IMAGE_SUFFIXES:
            raise UserError(f"--output {args.output}: use a video ({', '.join(VIDEO_FOURCC)}) or image "
                            "(.jpg, .png) suffix")
        if suffix in VIDEO_FOURCC and is_stream(args.output):
            raise UserError(f"--output {args.output} is not a regular file: a video needs a seekable file")
        if suffix in VIDEO_FOURCC:
            video_codec(suffix, args.video_codec)  # H.264 asked for without PyAV, or in .avi: one line
    if args.video_codec == "h264":
        video_codec(".mp4", "h264")
    if args.timeline is not None:
        if args.timeline.suffix.lower() not in SUFFIXES:
            raise UserError(f"--timeline {args.timeline}: use a {', '.join(SUFFIXES)} suffix")
        if not plot_available():
            raise UserError(f"--timeline: {missing_extra('matplotlib')}")
    if args.output_dir is not None and (is_stream(args.output_dir) or (args.output_dir.exists()
                                                                        and not args.output_dir.is_dir())):
        raise UserError(f"--output-dir {args.output_dir} is not a folder: give a folder (it is made if missing)")
    _check_paths(args, [])
    for what, path in _file_outputs(args):
        if not is_stream(path):
            check_output_path(path, what)
    from runtime.views import check_views

    check_views(args)  # --serve's address free, pyvirtualcam installed


def _check_source(args: argparse.Namespace, source) -> None:
    """Outputs that do not fit the source that opened: one file for many videos, a folder for a camera."""
    videos = getattr(source, "videos", [])
    if args.output is not None and videos:
        raise UserError(f"--output keeps one file, and {source.description} has {len(videos)} videos: "
                        "use --output-dir DIR (one result per file)")
    if args.timeline is not None and len(videos) > 1:
        raise UserError("--timeline draws one video, and the folder has several: give one video, or use --csv "
                        "(one row per face, with its file)")
    if args.output_dir is not None:
        if source.live or not source.paths:
            raise UserError("--output-dir writes one result per input file: for a camera or a stream use --output")
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--output-dir {args.output_dir} cannot be made ({exc.strerror}): choose another "
                            "folder") from None
        check_output_path(args.output_dir / "probe", "--output-dir")
    _codec_note(args, source)


def _codec_note(args: argparse.Namespace, source) -> None:
    """Say so when a video output will be MPEG-4 without sound only because PyAV is missing."""
    from runtime.av_video import H264_SUFFIXES, av_available
    from runtime.sources import VideoSource

    if args.video_codec != "auto":
        return
    videos = args.output is not None and args.output.suffix.lower() in H264_SUFFIXES
    videos |= args.output_dir is not None and bool(getattr(source, "videos", None) or isinstance(source, VideoSource))
    if videos and not av_available():
        print('runtime-live: note: video is written as MPEG-4 Part 2 without sound, which browsers do not play: '
              'pip install "emocam[video]" for H.264 with the sound', file=sys.stderr)


def _choose_source(args: argparse.Namespace) -> str:
    """The source to open (resolving ``auto``), adjusting ``--no-window`` and ``--output`` for the demo."""
    problem = display_problem()
    display = problem is None
    source_name = args.source
    if source_name == AUTO:
        source_name = "0" if (not args.no_window and display and camera_present(0)) else DEMO
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
    from runtime.pipeline import Pipeline, inference_threads
    from runtime.tracker import FaceTracker

    threads = inference_threads(args.threads, args.detect_every, args.search_lag)
    return Pipeline(
        detector=HaarDetector(detect_width=args.detect_width, scale_factor=args.scale_factor,
                              min_neighbors=args.min_neighbors, min_size=args.min_size, tilt_deg=args.tilt_deg),
        classifier=EmotionClassifier(args.model, provider=args.provider, threads=threads, margin=args.margin),
        tracker=FaceTracker(smoothing=args.smoothing),
        emoji_dir=args.emoji_dir,
        placement=args.placement,
        show_labels=args.labels,
        panel=args.panel,
        detect_every=args.detect_every,
        search_lag=args.search_lag,
        stills=True,  # a photo gets the thorough search (_loop says which files are not photos)
    )


def _loop(args: argparse.Namespace, source, pipe, outputs: Outputs, stops: StopSignals, run: RunStats) -> None:
    """Process frames until the source ends, a key, ``--max-frames`` or a stop signal."""
    import cv2

    from runtime.progress import Progress
    from runtime.records import frame_record

    window = "runtime-live (q or Esc quits)"
    total = source.length if args.max_frames is None else min(source.length or args.max_frames, args.max_frames)
    progress = Progress(None if source.live else total)
    try:
        for frame in source:
            t0 = time.perf_counter()
            pipe.start_frame(frame.path, frame.photo)  # a new file or a photo: nothing carries over
            annotated, faces = pipe(frame.image)
            if frame.photo and not len(faces):
                run.photos_without_faces.append(frame.name or "photo")
            run.frame_ms.append((time.perf_counter() - t0) * 1000)
            run.faces += len(faces)
            run.frames_with_faces += bool(len(faces))
            record = frame_record(frame, faces)
            run.last_record = record
            stops.hold = True  # a frame's video frame and its JSON line are written together or not at all
            outputs.write(annotated, record, frame)
            stops.release()
            progress.update(len(run.frame_ms))
            if not args.no_window:
                fps = len(run.frame_ms) / max(1e-9, time.perf_counter() - run.t_start)
                shown = annotated.copy()
                cv2.putText(shown, f"{fps:.1f} fps", (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2,
                            cv2.LINE_AA)
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
    finally:
        progress.finish()


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
        _check_source(args, source)
    except UserError:
        source.close()
        raise
    return source


def _model_files(args: argparse.Namespace, pipe) -> list[Path]:
    """Every file the pipeline reads besides the source: the model and the emoji (outputs must be none of them)."""
    from runtime.annotate import default_emoji_dir

    emoji_dir = args.emoji_dir if args.emoji_dir is not None else default_emoji_dir()
    return [pipe.classifier.path, *(Path(emoji_dir) / f"{label}.png" for label in pipe.classifier.labels)]


def _outputs(args: argparse.Namespace, source, labels: tuple[str, ...]) -> Outputs:
    """The run's outputs, for this source (its frame rate, its sound, what its time stamps are)."""
    from runtime.media import plain_file
    from runtime.sources import VideoSource

    audio = plain_file(source.paths[0]) if isinstance(source, VideoSource) and source.paths else None
    return Outputs(args.output, args.jsonl, source.fps, csv=args.csv, timeline=args.timeline, labels=labels,
                   output_dir=args.output_dir, codec=args.video_codec, audio_from=audio,
                   x_label="photo" if isinstance(source, ImageSource) else "time (s)")


def _process(args: argparse.Namespace, source, pipe) -> tuple[RunStats, list[Path]]:
    """The frame loop under the stop signals; then the outputs are finalised, or dropped after a failure.

    Returns:
        What the loop counted, and the files written (finalised and checked).

    Raises:
        EmocamError: A write or the model failed (the outputs were dropped: earlier results stay).
        BrokenPipeError: The reader of a streamed output went away (the outputs were finalised).
    """
    import cv2

    run, stops = RunStats(), StopSignals()
    stops.install()
    outputs = None
    failure: Exception | None = None
    keep = False  # finalise the outputs (the run ended or was stopped) or drop them (it failed)
    try:
        from runtime.views import with_views

        outputs = with_views(args, source, pipe, _outputs(args, source, tuple(pipe.classifier.labels)))
        stops.blocked = lambda: outputs.waiting_on_reader
        _loop(args, source, pipe, outputs, stops, run)
        keep = True
    except KeyboardInterrupt:
        run.stopped_by, keep = "SIGINT", True
    except Stop:
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
        pipe.close()  # the background search thread
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
        stops.restore()
    if failure is not None:  # an EmocamError carries its exit code (1 for a failed write)
        raise failure
    return run, [] if outputs is None else outputs.written  # stopped before the outputs were opened: none


def main(argv: Sequence[str] | None = None) -> int:
    """runtime-live: facial emotion to emoji, live or headless."""
    from runtime.multi import several_sources

    if several_sources(argv):  # --source A --source B ...: every stream in one process (runtime.streams)
        from runtime.streams import main as streams_main

        return streams_main(argv)
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
        raise UserError(f"{source.description}: no file decoded (skipped {len(source.skipped)})")
    one_photo = isinstance(source, ImageSource) and source.length == 1
    _report(args, source, run, written, one_photo)
    print_summary(json.dumps(summary(args, source, pipe, run, written, one_photo)))
    return 0


def _report(args: argparse.Namespace, source, run: RunStats, written: list[Path], one_photo: bool) -> None:
    """The lines for a person on stderr: what was written, and for one photo its faces."""
    from runtime.files import display

    in_folder = [p for p in written if args.output_dir is not None and p.parent == args.output_dir]
    for path in written:
        if path not in in_folder:
            print(f"runtime-live: wrote {display(path.resolve() if path.exists() else path)}", file=sys.stderr)
    if args.output_dir is not None:
        print(f"runtime-live: wrote {len(in_folder)} files to {display(args.output_dir.resolve())}", file=sys.stderr)
    if one_photo and run.last_record is not None:
        print(f"runtime-live: {photo_line(run.last_record.get('file', 'photo'), run.last_record['faces'])}",
              file=sys.stderr)
    elif run.photos_without_faces:  # photos of a folder: one line names those without a face
        names = run.photos_without_faces
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        print(f"runtime-live: no face found in {len(names)} photo{'s' if len(names) > 1 else ''}: {shown}",
              file=sys.stderr)


cli = run_main(main, "runtime-live")
