"""Frames/s on real video: the project's pipeline and a faithful re-creation of the original notebook loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.timing import Mode, log, rounded, shown_path, summarize_ms
from runtime.errors import SourceError
from runtime.pipeline import STAGES

# The original notebook's loop: Haar on the full frame with these settings, labels from this dict.
ORIGINAL_SCALE_FACTOR = 1.3
ORIGINAL_MIN_NEIGHBORS = 5
ORIGINAL_FACE_WH = (48, 48)
ORIGINAL_LABELS = {0: "Angry", 1: "Disgusted", 2: "Fearful", 3: "Happy", 4: "Neutral", 5: "Sad", 6: "Surprised"}
ORIGINAL_CASCADE = "haarcascade_frontalface_default.xml"
STAGE_KEYS = ("decode", *STAGES, "other")  # project stage shares: decode, detect, classify, track, composite, other


@dataclass
class Clip:
    """A clip decoded into memory.

    Attributes:
        path: The file.
        default: Whether it is the default clip.
        frames: Decoded BGR frames, in order.
        decode_ms: Milliseconds ``VideoCapture.read`` took for each frame.
    """

    path: Path
    default: bool
    frames: list[np.ndarray]
    decode_ms: np.ndarray


def decode_clip(path: Path, limit: int, default: bool = False) -> Clip:
    """Decode the first ``limit`` frames of a video (0: all), timing each read.

    Raises:
        SourceError: The file does not open or yields no frame.
    """
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    ms: list[float] = []
    try:
        while cap.isOpened() and (not limit or len(frames) < limit):
            t0 = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            ms.append((time.perf_counter() - t0) * 1e3)
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise SourceError(f"video {path} does not decode as a video: give a playable clip")
    return Clip(path, default, frames, np.asarray(ms))


def bench_project(clip: Clip, n: int, make_pipeline: Callable[[], Any]) -> tuple[dict[str, Any], np.ndarray]:
    """The project's pipeline, headless with emoji compositing, on the first ``n`` frames.

    Args:
        clip: The decoded clip.
        n: Frames to run (0: all).
        make_pipeline: Builds a fresh :class:`runtime.pipeline.Pipeline`.

    Returns:
        The figures and the per-frame milliseconds.
    """
    frames = clip.frames[:n] if n else clip.frames
    pipe = make_pipeline()
    pipe.detector.detect(frames[0])  # warm-up outside the pipeline's own counters
    pipe.classifier.predict(np.zeros((1, *pipe.classifier.spec.input_shape), np.float32))
    ms, with_face = [], 0
    for frame in frames:
        work = frame.copy()  # annotate draws in place; the copy stays out of the timing
        t0 = time.perf_counter()
        _, faces = pipe(work)
        ms.append((time.perf_counter() - t0) * 1e3)
        with_face += bool(len(faces))
    a = np.asarray(ms)
    stats = summarize_ms(a)
    stage_ms = {"decode": float(clip.decode_ms[: len(a)].mean())}
    stage_ms.update({k: pipe.stage_s[k] * 1e3 / len(a) for k in STAGES})
    stage_ms["other"] = max(0.0, float(a.mean()) - sum(stage_ms[k] for k in STAGES))
    total = sum(stage_ms.values())
    det = pipe.detector
    return {
        "frames": len(a),
        "fps": rounded(1e3 / a.mean()),
        "fps_with_decode": rounded(1e3 / (a.mean() + stage_ms["decode"])),
        **{k: v for k, v in stats.items() if k != "iterations"},
        "frames_with_face": rounded(with_face / len(a), 4),
        "provider": pipe.classifier.provider,
        "detector": {**{k: getattr(det, k, None) for k in ("detect_width", "scale_factor", "min_neighbors",
                                                            "min_size")},
                     "detect_every": getattr(pipe, "detect_every", 1)},
        "stage_ms": {k: rounded(v) for k, v in stage_ms.items()},
        "stage_share": {k: rounded(v / total, 4) for k, v in stage_ms.items()},
    }, a


def original_frame(frame: np.ndarray, model: Any, cascade_path: str) -> int:
    """One pass of the original notebook's loop body on ``frame`` (drawn on in place).

    As in the notebook: a new ``CascadeClassifier`` every frame, Haar on the full-size gray
    frame (scaleFactor 1.3, minNeighbors 5), ``model.predict`` per face on the raw crop resized
    to 48x48, a rectangle and a ``cv2.putText`` label. Left out: ``imshow`` of a 1200x860 cubic
    resize and ``waitKey`` (display; the project's pipeline is timed headless too), and
    ``predict``'s progress bar (``verbose=0``, the Keras 2 default of the notebook's day).

    Returns:
        The number of faces found.
    """
    bounding_box = cv2.CascadeClassifier(cascade_path)
    gray_frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    num_faces = bounding_box.detectMultiScale(
        gray_frame, scaleFactor=ORIGINAL_SCALE_FACTOR, minNeighbors=ORIGINAL_MIN_NEIGHBORS
    )
    for x, y, w, h in num_faces:
        cv2.rectangle(frame, (int(x), int(y - 50)), (int(x + w), int(y + h + 10)), (255, 0, 0), 2)
        roi_gray_frame = gray_frame[y : y + h, x : x + w]
        cropped_img = np.expand_dims(np.expand_dims(cv2.resize(roi_gray_frame, ORIGINAL_FACE_WH), -1), 0)
        emotion_prediction = model.predict(cropped_img, verbose=0)
        maxindex = int(np.argmax(emotion_prediction))
        cv2.putText(frame, ORIGINAL_LABELS.get(maxindex, str(maxindex)), (int(x + 20), int(y - 60)),
                    cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2, cv2.LINE_AA)
    return len(num_faces)


def bench_original(clip: Clip, n: int, model: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The original notebook loop on the first ``n`` frames (0: all) of the same decoded clip.

    Returns:
        The figures and the per-frame milliseconds.
    """
    cascade_path = str(Path(cv2.data.haarcascades) / ORIGINAL_CASCADE)
    frames = clip.frames[:n] if n else clip.frames
    model.predict(np.zeros((1, *ORIGINAL_FACE_WH, 1), np.uint8), verbose=0)  # builds predict's function once
    ms, with_face = [], 0
    for frame in frames:
        work = frame.copy()
        t0 = time.perf_counter()
        found = original_frame(work, model, cascade_path)
        ms.append((time.perf_counter() - t0) * 1e3)
        with_face += bool(found)
    a = np.asarray(ms)
    stats = summarize_ms(a)
    return {
        "skipped": None,
        "frames": len(a),
        "fps": rounded(1e3 / a.mean()),
        **{k: v for k, v in stats.items() if k != "iterations"},
        "frames_with_face": rounded(with_face / len(a), 4),
        "detector": {"detect_width": 0, "scale_factor": ORIGINAL_SCALE_FACTOR,
                     "min_neighbors": ORIGINAL_MIN_NEIGHBORS, "cascade_per_frame": True},
    }, a


def bench_clip(clip: Clip, mode: Mode, make_pipeline: Callable[[], Any], keras_model: Any,
               keras_skipped: str | None) -> dict[str, Any]:
    """Project pipeline and original loop on one clip, and their ratio on the frames both ran."""
    h, w = clip.frames[0].shape[:2]
    log(f"{clip.path.name}: {len(clip.frames)} frames {w}x{h} decoded; project pipeline")
    project, project_ms = bench_project(clip, mode.frames, make_pipeline)
    entry: dict[str, Any] = {
        "path": shown_path(clip.path), "default": clip.default, "width": w, "height": h,
        "frames_decoded": len(clip.frames),
        "decode": {**summarize_ms(clip.decode_ms), "fps": rounded(1e3 / clip.decode_ms.mean())},
        "project": project,
        "original": {"skipped": keras_skipped},
        "ratio": None,
        "ratio_frames": 0,
    }
    if keras_model is not None:
        log(f"{clip.path.name}: original notebook loop")
        original, original_ms = bench_original(clip, mode.original_frames, keras_model)
        k = min(len(project_ms), len(original_ms))
        entry["original"] = original
        entry["ratio"] = rounded(original_ms[:k].mean() / project_ms[:k].mean(), 4)
        entry["ratio_frames"] = k
    return entry

