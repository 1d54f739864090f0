"""Frames/s on real video: the project's pipeline in the configurations that matter (the last release's,
runtime-live's defaults, the fast INT8 path) and a faithful re-creation of the original notebook loop, side by
side on the same decoded frames."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.model_bench import agreement
from benchmarks.timing import Mode, log, rounded, shown_path, summarize_ms
from runtime.backends import resolve_provider
from runtime.detector import HaarDetector
from runtime.errors import SourceError
from runtime.pipeline import STAGES, Pipeline

# The original notebook's loop: Haar on the full frame with these settings, labels from this dict.
ORIGINAL_SCALE_FACTOR = 1.3
ORIGINAL_MIN_NEIGHBORS = 5
ORIGINAL_FACE_WH = (48, 48)
ORIGINAL_LABELS = {0: "Angry", 1: "Disgusted", 2: "Fearful", 3: "Happy", 4: "Neutral", 5: "Sad", 6: "Surprised"}
ORIGINAL_CASCADE = "haarcascade_frontalface_default.xml"
STAGE_KEYS = ("decode", *STAGES, "other")  # project stage shares: decode, detect, classify, track, composite, other
CONFIGS = ("release", "default", "fast")  # the pipeline configurations, in the order they run
RELEASE_DETECT_EVERY = 5  # the last release's default: a whole-frame search every 5th frame, on the spot
TARGET_FACE_POINTS = 0.01  # the target's configuration finds a face in frames within one point of release's
TARGET_AGREEMENT = 0.99  # and its model agrees with fp32 on at least this share of real faces


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


@dataclass(frozen=True)
class PipelineConfig:
    """One configuration of the project's pipeline, timed side by side with the others.

    Attributes:
        name: ``default``, ``fast`` or ``release`` (see :func:`pipeline_configs`).
        what: The configuration in words.
        model: The ONNX file (None when skipped).
        provider: The engine asked for (``auto``, ``cpu``, ``cuda`` or ``openvino``).
        threads: Inference threads (0: as runtime-live, :func:`runtime.pipeline.inference_threads`).
        search_lag: The Pipeline's ``search_lag`` (None: its default).
        detect_every: The Pipeline's ``detect_every`` (None: its default).
        tilt_deg: The detector's ``tilt_deg`` (None: its default).
        skipped: Why it does not run (None: it runs).
    """

    name: str
    what: str
    model: Path | None
    provider: str
    threads: int = 0
    search_lag: int | None = None
    detect_every: int | None = None
    tilt_deg: float | None = None
    skipped: str | None = None

    def make(self) -> Pipeline:
        """A fresh pipeline in this configuration (every other setting: runtime-live's defaults)."""
        options: dict[str, Any] = {k: v for k, v in (("search_lag", self.search_lag),
                                                      ("detect_every", self.detect_every)) if v is not None}
        if self.tilt_deg is not None:
            options["detector"] = HaarDetector(tilt_deg=self.tilt_deg)
        return Pipeline(self.model, provider=self.provider, threads=self.threads, **options)


def pipeline_configs(model: Path, int8: Path, provider: str, threads: int) -> list[PipelineConfig]:
    """The configurations that matter, in the order they run.

    - ``release``: the last release's pipeline: whole-frame search on the spot (``search_lag=0``)
      every 5th frame, upright only (``tilt_deg=0``), the fp32 file on onnxruntime's CPU provider;
    - ``default``: what runtime-live runs with no flags: the fp32 file, ``provider`` (``auto`` by
      default) and the Pipeline's defaults;
    - ``fast``: the INT8 file on the best engine ``provider`` allows (``auto``: CUDA, else OpenVINO,
      else CPU), the Pipeline's defaults otherwise.

    Args:
        model: The fp32 file.
        int8: Its INT8 sibling (skipped when missing).
        provider: The benchmark's ``--provider``.
        threads: Inference threads.
    """
    best = resolve_provider(provider)
    return [
        PipelineConfig("release", "last release: search on the spot, fp32 on cpu", model, "cpu", threads,
                       search_lag=0, detect_every=RELEASE_DETECT_EVERY, tilt_deg=0.0),
        PipelineConfig("default", f"runtime-live defaults: fp32, provider {provider}", model, provider, threads),
        PipelineConfig("fast", f"int8 on {best}", int8 if int8.is_file() else None, best, threads,
                       skipped=None if int8.is_file() else f"no {int8.name} beside the model (export-onnx --int8)"),
    ]


def bench_project(
    clip: Clip, n: int, config: PipelineConfig, faces: np.ndarray, reference: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """The project's pipeline in one configuration, headless with emoji compositing, on the first ``n`` frames.

    Args:
        clip: The decoded clip.
        n: Frames to run (0: all).
        config: The configuration.
        faces: Real faces: the pipeline's classifier's argmax agreement with ``reference`` is measured on them.
        reference: fp32 on onnxruntime CPU's class of each face.

    Returns:
        The figures and the per-frame milliseconds.
    """
    frames = clip.frames[:n] if n else clip.frames
    pipe = config.make()
    try:
        pipe.detector.detect(frames[0])  # warm-up outside the pipeline's own counters
        pipe.classifier.predict(np.zeros((1, *pipe.classifier.spec.input_shape), np.float32))
        ms, with_face = [], 0
        for frame in frames:
            work = frame.copy()  # annotate draws in place; the copy stays out of the timing
            t0 = time.perf_counter()
            _, found = pipe(work)
            ms.append((time.perf_counter() - t0) * 1e3)
            with_face += bool(len(found))
    finally:
        pipe.close()
    a = np.asarray(ms)
    stats = summarize_ms(a)
    stage_ms = {"decode": float(clip.decode_ms[: len(a)].mean())}
    stage_ms.update({k: pipe.stage_s[k] * 1e3 / len(a) for k in STAGES})
    stage_ms["other"] = max(0.0, float(a.mean()) - sum(stage_ms[k] for k in STAGES))
    total = sum(stage_ms.values())
    det = pipe.detector
    return {
        "name": config.name,
        "what": config.what,
        "skipped": None,
        "model": shown_path(pipe.classifier.path),
        "provider": pipe.classifier.provider,
        "frames": len(a),
        "fps": rounded(1e3 / a.mean()),
        "fps_with_decode": rounded(1e3 / (a.mean() + stage_ms["decode"])),
        **{k: v for k, v in stats.items() if k != "iterations"},
        "frames_with_face": rounded(with_face / len(a), 4),
        "model_agreement": agreement(pipe.classifier.predict, faces, reference)["agreement"],
        "detector": {**{k: getattr(det, k, None) for k in ("detect_width", "scale_factor", "min_neighbors",
                                                            "min_size", "tilt_deg")},
                     "detect_every": pipe.detect_every, "search_lag": pipe.search_lag,
                     "full_detections": pipe.full_detections},
        "stage_ms": {k: rounded(v) for k, v in stage_ms.items()},
        "stage_share": {k: rounded(v / total, 4) for k, v in stage_ms.items()},
        "ratio": None,
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


def target_config(configs: list[dict[str, Any]]) -> str | None:
    """The configuration the pipeline targets are judged on: the fastest whose frames with a face are within
    one point of ``release``'s and whose model agrees with fp32 on at least 99 % of the real faces."""
    ran = [c for c in configs if not c["skipped"]]
    release = next((c for c in ran if c["name"] == "release"), None)
    eligible = [c for c in ran if c["model_agreement"] >= TARGET_AGREEMENT and (
        release is None or abs(c["frames_with_face"] - release["frames_with_face"]) <= TARGET_FACE_POINTS + 1e-9)]
    return max(eligible, key=lambda c: c["fps"])["name"] if eligible else None


def bench_clip(
    clip: Clip, mode: Mode, configs: list[PipelineConfig], faces: np.ndarray, reference: np.ndarray,
    keras_model: Any, keras_skipped: str | None,
) -> dict[str, Any]:
    """Every pipeline configuration and the original loop on one clip, and their ratios on the frames both ran.

    Args:
        clip: The decoded clip.
        mode: Frames of each.
        configs: The project's configurations (:func:`pipeline_configs`).
        faces: Real faces for each configuration's model agreement.
        reference: fp32 on onnxruntime CPU's class of each face.
        keras_model: The Keras model of the original loop (None: skipped).
        keras_skipped: Why Keras is missing.
    """
    h, w = clip.frames[0].shape[:2]
    log(f"{clip.path.name}: {len(clip.frames)} frames {w}x{h} decoded")
    results, times = [], {}
    for config in configs:
        if config.skipped:
            results.append({"name": config.name, "what": config.what, "skipped": config.skipped})
            continue
        log(f"{clip.path.name}: project pipeline, {config.name} ({config.what})")
        result, times[config.name] = bench_project(clip, mode.frames, config, faces, reference)
        results.append(result)
        log(f"{clip.path.name}: {config.name} {result['fps']:.1f} frames/s, p99 {result['p99_ms']:.2f} ms, "
            f"face in {100 * result['frames_with_face']:.1f}% of frames, agreement {result['model_agreement']:.4f}")
    entry: dict[str, Any] = {
        "path": shown_path(clip.path), "default": clip.default, "width": w, "height": h,
        "frames_decoded": len(clip.frames),
        "decode": {**summarize_ms(clip.decode_ms), "fps": rounded(1e3 / clip.decode_ms.mean())},
        "configs": results,
        "target_config": target_config(results),
        "original": {"skipped": keras_skipped},
        "ratio_frames": 0,
    }
    if keras_model is not None:
        log(f"{clip.path.name}: original notebook loop")
        original, original_ms = bench_original(clip, mode.original_frames, keras_model)
        entry["original"] = original
        for result in results:
            if not result["skipped"]:
                k = min(len(times[result["name"]]), len(original_ms))
                result["ratio"] = rounded(original_ms[:k].mean() / times[result["name"]][:k].mean(), 4)
                entry["ratio_frames"] = k
    return entry
