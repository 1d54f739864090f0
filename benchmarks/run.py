"""benchmark: model throughput, pipeline frames/s against the original notebook loop, one run.

What one run measures, in this order:

1. The machine: CPU model, cores, ISA flags, load average (start and end), library versions.
2. The CPU's fp32 GEMM rate (numpy matmul, best of several): the yardstick for the model.
3. The shipped ONNX model (and its ``<stem>.fp16.onnx`` / ``<stem>.int8.onnx`` siblings) on
   onnxruntime CPU (and CUDA when present) at several batch sizes: ms per batch p50/p99, faces/s,
   GFLOP/s and the fraction of the GEMM rate it reaches.
4. The same network in Keras (random weights unless ``--keras``): ``model.predict`` on one face
   (what the original notebook did per face) and a direct ``model(x, training=False)`` call.
5. Frames/s on real video, decoded once into memory: the project's :class:`runtime.Pipeline`
   (headless, emoji on) and a faithful re-creation of the original notebook loop on the SAME
   frames, with per-frame p50/p99, the ratio, the project's stage shares and the fraction of
   frames with a face found.
6. The targets (goals, never asserted) beside the figures, each marked met or missed.

Output: ``benchmark-<UTC stamp>[-quick].json`` and ``.png`` in ``--out-dir`` plus copies named
``latest.json`` / ``latest.png``, all written atomically; a table on stderr; one JSON line on
stdout. :data:`REQUIRED_FIELDS` is the JSON's schema and :func:`validate` checks a result
against it. Keras parts need TensorFlow (the ``[train]`` extra); without it they are recorded
as skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.cli_support import EXIT_FAILED, SEED, THREADS, ArgumentParser, Number, UserError, atomic_path, run_main
from runtime.pipeline import STAGES
from trainer.cli_common import inference_errors, path_arg, terminate_as_interrupt, write_errors

SCHEMA = "emocam-benchmark/1"  # bump when the meaning of a JSON field changes
_PACKAGE_DIR = Path(__file__).resolve().parent
_PROJECT_ROOT = _PACKAGE_DIR.parent
DEFAULT_OUT_DIR = _PACKAGE_DIR / "results"  # benchmarks/results beside this file
DEFAULT_CLIP = Path("..") / "shared" / "media" / "WolfgangLanger_Pexels.mp4"  # 472 frames, 640x360, one face
DEFAULT_FACES = Path("..") / "shared" / "fer2013" / "test"  # real FER2013 faces for the model runs
FACE_COUNT = 512  # faces fed to the model runs: the largest batch, tiled when fewer are found
TARGET_FRAME_HW = (360, 640)  # frame size the p99 target is stated for
KERAS_INSTALL = 'pip install "emocam[train]"'  # how to get the Keras parts
RANDOM_WEIGHTS = "random weights: timing only"  # Keras weight note without --keras
ISA_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
# The original notebook's loop: Haar on the full frame with these settings, labels from this dict.
ORIGINAL_SCALE_FACTOR = 1.3
ORIGINAL_MIN_NEIGHBORS = 5
ORIGINAL_FACE_WH = (48, 48)
ORIGINAL_LABELS = {0: "Angry", 1: "Disgusted", 2: "Fearful", 3: "Happy", 4: "Neutral", 5: "Sad", 6: "Surprised"}
ORIGINAL_CASCADE = "haarcascade_frontalface_default.xml"
FRAMES = Number(int, 1, 1_000_000)  # --frames / --original-frames: 1 to about 9 hours of 30 frames/s video
MODEL_FIX = "give an .onnx model from export-onnx that runs in onnxruntime"  # the fix when a model fails to run
STAGE_KEYS = ("decode", *STAGES, "other")  # project stage shares: decode, detect, classify, track, composite, other


def _flops_per_face(model: Path | None = None) -> int:
    """FLOPs per face: 2 x the documented multiply-adds (77.3 M) x the network passes per face.

    A model exported with test-time augmentation runs the network several times per face
    (``--tta flip``: 2, ``--tta flip-zoom``: 6); its ``forward_passes`` metadata says how many.
    """
    from trainer.model import MULTIPLY_ADDS

    passes = 1
    if model is not None:
        import onnxruntime as ort

        meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta()
        text = meta.custom_metadata_map.get("forward_passes", "1")
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"model {model} has forward_passes metadata {text[:40]!r}: re-export it with export-onnx")
        passes = int(text)
    return 2 * MULTIPLY_ADDS * passes


# --------------------------------------------------------------------------------------------
# Run modes and timing


@dataclass(frozen=True)
class Budget:
    """How long to time one measurement.

    Attributes:
        warmup: Untimed calls first.
        min_iters: Timed calls at least (unless ``max_s`` runs out first).
        min_s: Seconds of timed calls at least.
        max_s: Stop after this many seconds once ``MIN_SAMPLES`` calls are in.
    """

    warmup: int
    min_iters: int
    min_s: float
    max_s: float


MIN_SAMPLES = 3  # timed calls a measurement always gets, whatever its budget


@dataclass(frozen=True)
class Mode:
    """Sizes and budgets of a full or a ``--quick`` run.

    Attributes:
        quick: True for ``--quick``.
        batches: Batch sizes of the ONNX model runs.
        model: Budget of one (variant, provider, batch) measurement.
        keras: Budget of each one-face Keras measurement.
        gemm_repeats: Timed numpy matmuls; the best counts.
        gemm_n: Side of the square float32 matrices.
        frames: Frames of each clip the project pipeline runs on (0: all).
        original_frames: Frames of each clip the original loop runs on (0: all).
    """

    quick: bool
    batches: tuple[int, ...]
    model: Budget
    keras: Budget
    gemm_repeats: int
    gemm_n: int
    frames: int
    original_frames: int


FULL = Mode(
    quick=False,
    batches=(1, 8, 32, 128, 512),  # one face (a webcam) up to a crowd-sized batch
    model=Budget(warmup=3, min_iters=20, min_s=2.0, max_s=10.0),  # >= 20 calls and 2 s; 10 s caps batch 512
    keras=Budget(warmup=3, min_iters=50, min_s=2.0, max_s=15.0),  # predict() is ~10x slower than a call
    gemm_repeats=7,  # best of 7: the rate the CPU can reach, not its average
    gemm_n=2048,  # 17 GFLOP per matmul: long enough to time, big enough to be compute-bound
    frames=0,  # every frame of every clip
    original_frames=0,  # the original loop on the same, every frame
)
QUICK = Mode(
    quick=True,
    batches=(1, 32, 128),  # the ends and the middle of the curve
    model=Budget(warmup=1, min_iters=5, min_s=0.3, max_s=1.5),
    keras=Budget(warmup=2, min_iters=10, min_s=0.3, max_s=3.0),
    gemm_repeats=3,
    gemm_n=2048,
    frames=60,  # 2.5 s of the default clip
    original_frames=15,  # the original loop is ~5-50x slower per frame
)


def time_calls(fn: Callable[[], object], budget: Budget) -> np.ndarray:
    """Milliseconds per call of ``fn`` after a warm-up, within ``budget``."""
    warm_start = time.perf_counter()
    for _ in range(budget.warmup):
        fn()
        if time.perf_counter() - warm_start > budget.max_s / 4:  # slow calls: one or two warm them enough
            break
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        elapsed = t1 - start
        if len(times) >= budget.min_iters and elapsed >= budget.min_s:
            break
        if elapsed >= budget.max_s and len(times) >= MIN_SAMPLES:
            break
    return np.asarray(times)


def _r(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits, for the JSON."""
    return float(f"{float(value):.{digits}g}")


def summarize_ms(ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Count, p50, p99 and mean of per-call milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {
        "iterations": len(a),
        "p50_ms": _r(np.percentile(a, 50)),
        "p99_ms": _r(np.percentile(a, 99)),
        "mean_ms": _r(a.mean()),
    }


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


def shown_path(path: Path) -> str:
    """``path`` relative to the project root where it lies in or beside it, else absolute.

    ``models/emotion_cnn.onnx``, ``../shared/media/...``: committed results name no machine's folders.
    """
    absolute = Path(path).resolve()
    rel = os.path.relpath(absolute, _PROJECT_ROOT)
    return str(absolute) if rel.startswith(os.path.join(os.pardir, os.pardir)) else rel


def _default_path(rel: Path) -> Path:
    """``rel`` from the working directory if it exists there, else from the project root."""
    return rel if rel.exists() else _PROJECT_ROOT / rel


# --------------------------------------------------------------------------------------------
# Machine, versions, GEMM


def machine_info() -> dict[str, Any]:
    """CPU model, logical and physical cores, ISA flags of interest, platform, load average."""
    text = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
    fields: dict[str, list[str]] = {}
    cores: set[tuple[str, str]] = set()
    physical = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        fields.setdefault(key, []).append(value)
        if key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    flags = set(fields.get("flags", [""])[0].split())
    logical = os.cpu_count() or 1
    return {
        "cpu_model": (fields.get("model name") or [platform.processor() or platform.machine()])[0],
        "logical_cores": logical,
        "physical_cores": len(cores) or logical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
        "cpu_flags": [f for f in ISA_FLAGS if f in flags],
        "platform": platform.platform(),
        "load_avg_1m_start": _load_avg(),
    }


def _load_avg() -> float:
    """The 1-minute load average (0 where the OS has none): other work competing for the CPU."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


def _blas() -> str:
    """numpy's BLAS library and version, as numpy reports it."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older numpy, or a build without the dict mode
        return "unknown"


def versions() -> dict[str, Any]:
    """Versions of Python and of the libraries measured (TensorFlow and Keras filled in later)."""
    import onnxruntime as ort

    try:
        import matplotlib

        mpl: str | None = matplotlib.__version__
    except ImportError:
        mpl = None
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "onnxruntime": ort.__version__,
        "matplotlib": mpl,
        "tensorflow": None,
        "keras": None,
    }


def gemm_rate(n: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """The CPU's fp32 GEMM rate: an ``n x n`` float32 numpy matmul, best of ``repeats``.

    Args:
        n: Side of the square matrices.
        repeats: Timed multiplications after one warm-up.
        seed: Seed of the random matrices.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: starts BLAS's threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "repeats": repeats, "best_s": _r(best), "median_s": _r(float(np.median(times))),
            "gflops": _r(2 * n**3 / best / 1e9)}


# --------------------------------------------------------------------------------------------
# ONNX model throughput


def load_faces(folder: Path | None, count: int, input_shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, str]:
    """``count`` faces as a float32 raw-pixel batch: real FER2013 faces if found, else random.

    Args:
        folder: A FER2013-layout split folder (one sub-folder per class), or None.
        count: Faces wanted; fewer real ones are tiled.
        input_shape: The model's ``(H, W, C)``.
        seed: Seed of the stratified sample and the shuffle.

    Returns:
        The batch and a description of where it came from.
    """
    rng = np.random.default_rng(seed)
    if folder is not None and folder.is_dir() and input_shape[2] == 1:
        from runtime.contract import FER2013_LABELS
        from trainer.data import load_folder_split

        per_class = math.ceil(count / len(FER2013_LABELS))
        split = load_folder_split(folder, FER2013_LABELS, input_shape[:2], limit_per_class=per_class, seed=seed)
        x = split.x[rng.permutation(len(split.x))]
        source = f"{len(x)} real faces from {shown_path(folder)}, tiled to {count}"
    else:
        x = rng.integers(0, 256, (count, *input_shape), dtype=np.uint8)
        source = f"{count} random images (no FER2013 test folder at {shown_path(folder) if folder else None})"
    return np.ascontiguousarray(np.resize(x, (count, *input_shape)), dtype=np.float32), source


def model_variants(model: Path) -> list[tuple[str, Path]]:
    """``fp32`` (the model itself) and the ``<stem>.fp16.onnx`` / ``<stem>.int8.onnx`` beside it."""
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return [("fp32", model)] + [(v, model.with_name(f"{stem}.{v}.onnx")) for v in ("fp16", "int8")]


def bench_providers(provider: str) -> list[str]:
    """The onnxruntime providers to time: ``auto`` is CPU plus CUDA when onnxruntime has it."""
    import onnxruntime as ort

    from runtime.classifier import CUDA

    if provider == "auto":
        return ["cpu", "cuda"] if CUDA in ort.get_available_providers() else ["cpu"]
    return [provider]


def _plain_session(path: Path, provider: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A session with the runtime's options, for a variant whose metadata lacks the model contract."""
    from runtime.classifier import CPU, CUDA, open_session

    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    try:
        session = open_session(str(path), providers, threads)
    except Exception as exc:  # onnxruntime's own exception types for a bad file
        raise UserError(f"{path} does not load in onnxruntime: {str(exc).strip()[:160]}") from None
    if provider == "cuda" and CUDA not in session.get_providers():
        raise UserError("onnxruntime fell back to the CPU for CUDA")
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def open_predictor(path: Path, provider: str, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A ``batch -> probabilities`` function for an ONNX file, as the runtime would open it.

    Returns:
        The function and a note ("" unless the file lacks the model contract, in which case it
        is timed with a plain session with the same options).

    Raises:
        UserError: The file does not load, or CUDA was asked for and is not active.
    """
    from runtime.classifier import EmotionClassifier

    try:
        clf = EmotionClassifier(path, provider=provider, threads=threads)
        return clf.predict, ""
    except UserError as exc:
        if provider == "cuda":
            raise
        return _plain_session(path, provider, threads), f"timed with a plain session: {exc}"


def bench_batches(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batches: Sequence[int], budget: Budget,
    flops_per_face: int, gemm_gflops: float, gemm_applies: bool,
) -> list[dict[str, Any]]:
    """Time ``predict`` at every batch size.

    Args:
        predict: One model call on a batch.
        x: Faces; batch ``b`` is ``x[:b]``.
        batches: Batch sizes.
        budget: Timing budget of each batch size.
        flops_per_face: FLOPs of one face.
        gemm_gflops: The CPU's fp32 GEMM rate.
        gemm_applies: Whether the GEMM fraction means anything (CPU runs only).
    """
    runs = []
    for b in batches:
        xb = np.ascontiguousarray(x[:b])
        stats = summarize_ms(time_calls(lambda xb=xb: predict(xb), budget))
        faces_per_s = b * 1e3 / stats["mean_ms"]  # sustained: total faces / total time
        gflops = faces_per_s * flops_per_face / 1e9
        runs.append({"batch": b, **stats, "faces_per_s": _r(faces_per_s),
                     "faces_per_s_p50": _r(b * 1e3 / stats["p50_ms"]), "gflops": _r(gflops),
                     "gemm_fraction": _r(gflops / gemm_gflops, 4) if gemm_applies else None})
    return runs


def bench_models(
    model: Path, providers: Sequence[str], x: np.ndarray, mode: Mode, threads: int, gemm_gflops: float,
) -> dict[str, Any]:
    """Throughput of the model and its fp16/int8 variants on every provider and batch size.

    Raises:
        UserError: The fp32 model itself does not load (every other failure is recorded).
    """
    flops = _flops_per_face(model)
    variants, runs, failures = [], [], []
    for name, path in model_variants(model):
        entry: dict[str, Any] = {"name": name, "path": shown_path(path), "skipped": None}
        variants.append(entry)
        if not path.is_file():
            entry["skipped"] = f"no {path.name} beside the model (export-onnx --{name} writes it)"
            continue
        entry["bytes"] = path.stat().st_size
        for provider in providers:
            try:
                predict, note = open_predictor(path, provider, threads)
                with inference_errors(f"timing {path.name} on {provider}", MODEL_FIX):
                    variant_runs = bench_batches(
                        predict, x, mode.batches, mode.model, flops, gemm_gflops, provider == "cpu"
                    )
            except UserError as exc:
                if name == "fp32":
                    raise
                failures.append({"variant": name, "provider": provider, "reason": str(exc)})
                continue
            if note:
                entry["note"] = note
            for run in variant_runs:
                runs.append({"variant": name, "provider": provider, **run})
                log(f"{name} {provider} batch {run['batch']}: {run['p50_ms']:.2f} ms p50, "
                    f"{run['faces_per_s']:.0f} faces/s")
    return {"path": shown_path(model), "flops_per_face": flops, "threads": threads, "variants": variants,
            "runs": runs, "peak": peaks(runs), "failures": failures}


def peaks(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run with the most faces/s of every (variant, provider)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        key = (run["variant"], run["provider"])
        if key not in best or run["faces_per_s"] > best[key]["faces_per_s"]:
            best[key] = run
    keep = ("variant", "provider", "batch", "faces_per_s", "gflops", "gemm_fraction")
    return [{k: run[k] for k in keep} for run in best.values()]


def _peak(result: dict[str, Any], variant: str, provider: str = "cpu") -> dict[str, Any] | None:
    return next((p for p in result["model"]["peak"] if p["variant"] == variant and p["provider"] == provider), None)


# --------------------------------------------------------------------------------------------
# Keras


@dataclass
class KerasEnv:
    """TensorFlow/Keras if importable.

    Attributes:
        keras: The ``keras`` module, or None.
        skipped: Why the Keras parts are skipped, or None.
        versions: ``tensorflow`` and ``keras`` versions (None when not importable).
        device: ``gpu`` when TensorFlow sees a GPU (Keras then runs there), else ``cpu``.
    """

    keras: Any
    skipped: str | None
    versions: dict[str, str | None]
    device: str = "cpu"


def import_keras(disabled: bool) -> KerasEnv:
    """Import TensorFlow and Keras; never raise.

    Args:
        disabled: ``--no-keras`` was given.
    """
    none = {"tensorflow": None, "keras": None}
    if disabled:
        return KerasEnv(None, "--no-keras given", none)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter off unless asked for
    try:
        import keras
        import tensorflow as tf
    except Exception as exc:  # ImportError, or a broken TensorFlow install failing in its own way
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return KerasEnv(None, f"TensorFlow/Keras not importable ({first}): {KERAS_INSTALL}", none)
    device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return KerasEnv(keras, None, {"tensorflow": tf.__version__, "keras": keras.__version__}, device)


def load_keras_model(path: Path | None) -> tuple[Any, str]:
    """The documented CNN in Keras: random weights, a ``.keras`` model, or weights loaded into it.

    Returns:
        The model and what its weights are.

    Raises:
        UserError: ``path`` does not load.
    """
    from trainer.model import build_model, load_model

    if path is None:
        return build_model(), RANDOM_WEIGHTS
    if path.name.endswith(".keras"):
        return load_model(path), shown_path(path)
    model = build_model()
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and keras raise many types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"--keras {path}: could not load its weights ({first}): give a .keras file from "
                        "trainer-fit or a .weights.h5 of the same network") from None
    return model, shown_path(path)


def bench_keras(model: Any, face: np.ndarray, budget: Budget, weights: str, device: str) -> dict[str, Any]:
    """``model.predict`` and ``model(x, training=False)`` on one face.

    Args:
        model: A Keras model.
        face: One face ``(H, W, C)`` of raw pixels.
        budget: Timing budget of each.
        weights: What the weights are, for the record.
        device: Where TensorFlow runs them, for the record.
    """
    one = np.ascontiguousarray(face[None], dtype=np.float32)
    out: dict[str, Any] = {"skipped": None, "weights": weights, "device": device}
    calls = {"predict_one": lambda: model.predict(one, verbose=0), "call_one": lambda: model(one, training=False)}
    for key, fn in calls.items():
        stats = summarize_ms(time_calls(fn, budget))
        out[key] = {**stats, "faces_per_s": _r(1e3 / stats["mean_ms"])}
        log(f"keras {key}: {stats['p50_ms']:.2f} ms p50")
    return out


# --------------------------------------------------------------------------------------------
# Pipeline and the original loop


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
        UserError: The file does not open or yields no frame.
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
        raise UserError(f"--video {path} does not decode as a video: give a playable clip")
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
        "fps": _r(1e3 / a.mean()),
        "fps_with_decode": _r(1e3 / (a.mean() + stage_ms["decode"])),
        **{k: v for k, v in stats.items() if k != "iterations"},
        "frames_with_face": _r(with_face / len(a), 4),
        "provider": pipe.classifier.provider,
        "detector": {**{k: getattr(det, k, None) for k in ("detect_width", "scale_factor", "min_neighbors",
                                                            "min_size")},
                     "detect_every": getattr(pipe, "detect_every", 1)},
        "stage_ms": {k: _r(v) for k, v in stage_ms.items()},
        "stage_share": {k: _r(v / total, 4) for k, v in stage_ms.items()},
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
        "fps": _r(1e3 / a.mean()),
        **{k: v for k, v in stats.items() if k != "iterations"},
        "frames_with_face": _r(with_face / len(a), 4),
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
        "decode": {**summarize_ms(clip.decode_ms), "fps": _r(1e3 / clip.decode_ms.mean())},
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
        entry["ratio"] = _r(original_ms[:k].mean() / project_ms[:k].mean(), 4)
        entry["ratio_frames"] = k
    return entry


# --------------------------------------------------------------------------------------------
# Targets, schema


@dataclass(frozen=True)
class Target:
    """A goal printed beside the figures; never asserted.

    Attributes:
        key: Its key under ``targets`` in the JSON.
        goal: The goal in words.
        threshold: The number to reach.
        higher_is_better: True if the value must be >= the threshold, False if <=.
        unit: ``x``, ``ms`` or ``fraction``.
    """

    key: str
    goal: str
    threshold: float
    higher_is_better: bool
    unit: str


TARGETS = (
    Target("pipeline_vs_original", "pipeline >= 20x the original loop (frames/s)", 20.0, True, "x"),
    Target("pipeline_p99_ms", "pipeline p99 <= 8 ms per 640x360 frame", 8.0, False, "ms"),
    Target("fp32_gemm_fraction", "model fp32 >= 90% of the GEMM-derived limit (CPU, best batch)", 0.90, True,
           "fraction"),
    Target("int8_vs_fp32", "INT8 >= 2x fp32 faces/s (CPU, best batch of each)", 2.0, True, "x"),
)


def _main_clip(result: dict[str, Any]) -> dict[str, Any]:
    clips = result["pipeline"]["clips"]
    return next((c for c in clips if c["default"]), clips[0])


def target_values(result: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Each target's measured value (None when not measured) and what it was measured on."""
    values: dict[str, tuple[float | None, str]] = {}
    main = _main_clip(result)
    if main["ratio"] is None:
        values["pipeline_vs_original"] = (None, f"original loop skipped: {main['original']['skipped']}")
    else:
        values["pipeline_vs_original"] = (main["ratio"], f"{Path(main['path']).name}, first {main['ratio_frames']} "
                                                         "frames")
    sized = [c for c in result["pipeline"]["clips"] if (c["height"], c["width"]) == TARGET_FRAME_HW]
    if sized:
        clip = main if main in sized else sized[0]
        values["pipeline_p99_ms"] = (clip["project"]["p99_ms"], f"{Path(clip['path']).name}, "
                                                                f"{clip['project']['frames']} frames")
    else:
        values["pipeline_p99_ms"] = (None, "no 640x360 clip")
    fp32, int8 = _peak(result, "fp32"), _peak(result, "int8")
    values["fp32_gemm_fraction"] = (fp32["gemm_fraction"], f"batch {fp32['batch']}") if fp32 else (None, "no CPU run")
    if fp32 and int8:
        values["int8_vs_fp32"] = (_r(int8["faces_per_s"] / fp32["faces_per_s"], 4),
                                  f"int8 batch {int8['batch']} vs fp32 batch {fp32['batch']}")
    else:
        values["int8_vs_fp32"] = (None, "no INT8 CPU run (no <stem>.int8.onnx beside the model)")
    return values


def evaluate_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``targets`` section: goal, threshold, value, met (None when not measured)."""
    values = target_values(result)
    out = {}
    for t in TARGETS:
        value, basis = values[t.key]
        met = None if value is None else (value >= t.threshold if t.higher_is_better else value <= t.threshold)
        out[t.key] = {"goal": t.goal, "threshold": t.threshold, "unit": t.unit, "value": value, "met": met,
                      "basis": basis}
    return out


#: Every field a result has, as a dotted path: ``name[]`` means "a non-empty list, each item".
#: A section whose ``skipped`` holds a reason needs none of its other fields. Kinds: ``pos`` a
#: finite number > 0, ``num`` a finite number >= 0, ``frac`` a number in [0, 1], ``str``,
#: ``bool``, ``list`` (non-empty), ``list0`` (may be empty); a trailing ``?`` also allows null.
REQUIRED_FIELDS: dict[str, str] = {
    "schema": "str",
    "quick": "bool",
    "date_utc": "str",
    "wall_s": "pos",
    "machine.cpu_model": "str",
    "machine.logical_cores": "pos",
    "machine.physical_cores": "pos",
    "machine.usable_cores": "pos",
    "machine.cpu_flags": "list0",
    "machine.platform": "str",
    "machine.load_avg_1m_start": "num",
    "machine.load_avg_1m_end": "num",
    "versions.python": "str",
    "versions.numpy": "str",
    "versions.blas": "str",
    "versions.opencv": "str",
    "versions.onnxruntime": "str",
    "versions.matplotlib": "str?",
    "versions.tensorflow": "str?",
    "versions.keras": "str?",
    "providers": "list",
    "gemm.n": "pos",
    "gemm.repeats": "pos",
    "gemm.best_s": "pos",
    "gemm.gflops": "pos",
    "model.path": "str",
    "model.faces": "str",
    "model.flops_per_face": "pos",
    "model.threads": "num",
    "model.variants[].name": "str",
    "model.variants[].path": "str",
    "model.variants[].skipped": "str?",
    "model.variants[].bytes": "pos",
    **{f"model.runs[].{k}": "str" for k in ("variant", "provider")},
    **{f"model.runs[].{k}": "pos" for k in ("batch", "iterations", "p50_ms", "p99_ms", "mean_ms", "faces_per_s",
                                            "faces_per_s_p50", "gflops")},
    "model.runs[].gemm_fraction": "num?",
    "model.peak[].variant": "str",
    "model.peak[].batch": "pos",
    "model.peak[].faces_per_s": "pos",
    "keras.skipped": "str?",
    "keras.weights": "str",
    "keras.device": "str",
    **{f"keras.{call}.{k}": "pos" for call in ("predict_one", "call_one")
       for k in ("iterations", "p50_ms", "p99_ms", "mean_ms", "faces_per_s")},
    "pipeline.clips[].path": "str",
    "pipeline.clips[].default": "bool",
    "pipeline.clips[].width": "pos",
    "pipeline.clips[].height": "pos",
    "pipeline.clips[].frames_decoded": "pos",
    **{f"pipeline.clips[].decode.{k}": "pos" for k in ("p50_ms", "p99_ms", "mean_ms", "fps")},
    **{f"pipeline.clips[].project.{k}": "pos" for k in ("frames", "fps", "fps_with_decode", "p50_ms", "p99_ms",
                                                        "mean_ms")},
    "pipeline.clips[].project.frames_with_face": "frac",
    "pipeline.clips[].project.provider": "str",
    **{f"pipeline.clips[].project.stage_ms.{k}": "num" for k in STAGE_KEYS},
    **{f"pipeline.clips[].project.stage_share.{k}": "frac" for k in STAGE_KEYS},
    "pipeline.clips[].original.skipped": "str?",
    **{f"pipeline.clips[].original.{k}": "pos" for k in ("frames", "fps", "p50_ms", "p99_ms", "mean_ms")},
    "pipeline.clips[].original.frames_with_face": "frac",
    "pipeline.clips[].ratio": "num?",
    "pipeline.clips[].ratio_frames": "num",
    **{f"targets.{t.key}.{k}": kind for t in TARGETS
       for k, kind in (("goal", "str"), ("threshold", "pos"), ("value", "num?"), ("met", "bool?"), ("basis", "str"))},
    "files.json": "str",
    "files.png": "str?",
}


def _kind_ok(value: Any, kind: str) -> bool:
    """Whether ``value`` is of a :data:`REQUIRED_FIELDS` kind."""
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    checks = {
        "pos": lambda: number and value > 0,
        "num": lambda: number and value >= 0,
        "frac": lambda: number and 0 <= value <= 1,
        "str": lambda: isinstance(value, str) and bool(value),
        "bool": lambda: isinstance(value, bool),
        "list": lambda: isinstance(value, list) and bool(value),
        "list0": lambda: isinstance(value, list),
    }
    return checks[kind]()


def _check(node: Any, parts: list[str], kind: str, where: str) -> list[str]:
    """Problems with the field at ``parts`` below ``node`` (see :data:`REQUIRED_FIELDS`)."""
    if isinstance(node, dict) and node.get("skipped") and parts != ["skipped"]:
        return []
    if not parts:
        return [] if _kind_ok(node, kind) else [f"{where}: {node!r} is not {kind}"]
    head, rest = parts[0], parts[1:]
    key = head.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return [f"{where}: missing {key}"]
    if head.endswith("[]"):
        items = node[key]
        if not isinstance(items, list) or not items:
            return [f"{where}: {key} is not a non-empty list"]
        return [p for item in items for p in _check(item, rest, kind, where)]
    return _check(node[key], rest, kind, where)


def validate(result: dict[str, Any]) -> list[str]:
    """Every way ``result`` breaks :data:`REQUIRED_FIELDS` (empty: it is complete)."""
    problems = []
    for path, kind in REQUIRED_FIELDS.items():
        problems += _check(result, path.split("."), kind, path)
    return problems


# --------------------------------------------------------------------------------------------
# Report: table, chart, files


def _fmt(value: float | None, spec: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """A compact human-readable summary with every target marked met or missed."""
    m, v = result["machine"], result["versions"]
    lines = [
        f"benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}, {result['wall_s']:.0f} s",
        f"machine  {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, "
        f"load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}, {' '.join(m['cpu_flags'])}",
        f"versions python {v['python']}, numpy {v['numpy']} ({v['blas']}), opencv {v['opencv']}, "
        f"onnxruntime {v['onnxruntime']}, tensorflow {v['tensorflow'] or '-'}, keras {v['keras'] or '-'}",
        f"GEMM     fp32 {result['gemm']['n']}^3 matmul: {result['gemm']['gflops']:.1f} GFLOP/s (best of "
        f"{result['gemm']['repeats']}) = {result['gemm']['gflops'] * 1e9 / result['model']['flops_per_face']:.0f} "
        f"faces/s limit",
    ]
    model = result["model"]
    batches = sorted({r["batch"] for r in model["runs"]})
    lines.append(f"model    faces/s by batch ({model['faces']})")
    lines.append("  " + f"{'variant':<12}" + "".join(f"{'b=' + str(b):>9}" for b in batches)
                 + f"{'p50 ms@peak':>13}{'%GEMM':>8}")
    for p in model["peak"]:
        rs = {r["batch"]: r for r in model["runs"] if r["variant"] == p["variant"] and r["provider"] == p["provider"]}
        cells = "".join(f"{_fmt(rs[b]['faces_per_s'], '.0f') if b in rs else '-':>9}" for b in batches)
        frac = p["gemm_fraction"]
        lines.append(f"  {p['variant'] + ' ' + p['provider']:<12}{cells}{rs[p['batch']]['p50_ms']:>13.2f}"
                     f"{_fmt(None if frac is None else 100 * frac, '.0f') + '%':>8}")
    lines += [f"  {x['name']}: {x['skipped']}" for x in model["variants"] if x["skipped"]]
    lines += [f"  {f['variant']} {f['provider']}: {f['reason']}" for f in model["failures"]]
    keras = result["keras"]
    if keras["skipped"]:
        lines.append(f"keras    skipped: {keras['skipped']}")
    else:
        for key, what in (("predict_one", "model.predict"), ("call_one", "model(x)")):
            k = keras[key]
            lines.append(f"keras    {what:<13} 1 face: {k['p50_ms']:.2f} ms p50, {k['p99_ms']:.2f} ms p99, "
                         f"{k['faces_per_s']:.0f} faces/s ({keras['device']}, {keras['weights']})")
    for c in result["pipeline"]["clips"]:
        p, o = c["project"], c["original"]
        lines.append(f"video    {Path(c['path']).name} {c['width']}x{c['height']}, decode {c['decode']['mean_ms']:.2f} "
                     f"ms/frame")
        lines.append(f"  project  {p['fps']:7.1f} frames/s  p50 {p['p50_ms']:6.2f} ms  p99 {p['p99_ms']:6.2f} ms  "
                     f"face in {100 * p['frames_with_face']:.0f}% of {p['frames']} frames ({p['provider']})")
        if o["skipped"]:
            lines.append(f"  original skipped: {o['skipped']}")
        else:
            lines.append(f"  original {o['fps']:7.1f} frames/s  p50 {o['p50_ms']:6.2f} ms  p99 {o['p99_ms']:6.2f} ms  "
                         f"face in {100 * o['frames_with_face']:.0f}% of {o['frames']} frames")
            lines.append(f"  ratio    {c['ratio']:.1f}x (project / original, first {c['ratio_frames']} frames)")
        lines.append("  stages   " + "  ".join(f"{k} {100 * p['stage_share'][k]:.0f}% ({p['stage_ms'][k]:.2f} ms)"
                                               for k in STAGE_KEYS))
    lines.append("targets  (goals, not asserted)")
    for t in TARGETS:
        e = result["targets"][t.key]
        value = e["value"]
        shown = "n/a" if value is None else (f"{100 * value:.0f}%" if t.unit == "fraction" else f"{value:.2f} {t.unit}")
        mark = "n/a" if e["met"] is None else ("met" if e["met"] else "MISSED")
        lines.append(f"  {t.goal:<62} {shown:>10}  {mark:<6} ({e['basis']})")
    return "\n".join(lines)


def draw_chart(result: dict[str, Any], path: Path) -> None:
    """Faces/s vs batch per variant (left), frames/s project vs original (middle), stage shares (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    _plot_model(axes[0], result)
    _plot_fps(axes[1], result)
    _plot_stages(axes[2], result)
    m = result["machine"]
    fig.suptitle(f"emocam benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}: {m['cpu_model']}, "
                 f"{m['logical_cores']} cores, load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_model(ax: Any, result: dict[str, Any]) -> None:
    """Faces/s against batch size, one line per (variant, provider), Keras points, the GEMM limit."""
    series: dict[str, list[tuple[int, float]]] = {}
    for run in result["model"]["runs"]:
        series.setdefault(f"ONNX {run['variant']} {run['provider']}", []).append((run["batch"], run["faces_per_s"]))
    for label, pts in series.items():
        xs, ys = zip(*sorted(pts), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    keras = result["keras"]
    if not keras["skipped"]:
        ax.scatter([1], [keras["predict_one"]["faces_per_s"]], marker="x", s=70, color="k", label="Keras predict")
        ax.scatter([1], [keras["call_one"]["faces_per_s"]], marker="+", s=90, color="k", label="Keras model(x)")
    limit = result["gemm"]["gflops"] * 1e9 / result["model"]["flops_per_face"]
    ax.axhline(limit, ls="--", color="grey", label=f"GEMM-derived limit ({limit:.0f})")
    batches = sorted({r["batch"] for r in result["model"]["runs"]})
    ax.set(xscale="log", yscale="log", xlabel="batch size (faces per call)", ylabel="faces/s",
           title="model throughput")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _plot_fps(ax: Any, result: dict[str, Any]) -> None:
    """Frames/s of the project pipeline and the original loop per clip, with their ratio."""
    clips = result["pipeline"]["clips"]
    idx = np.arange(len(clips))
    proj = [c["project"]["fps"] for c in clips]
    orig = [0.0 if c["original"]["skipped"] else c["original"]["fps"] for c in clips]
    for offset, fps, label in ((-0.2, proj, "project Pipeline"), (0.2, orig, "original loop")):
        ax.bar_label(ax.bar(idx + offset, fps, 0.4, label=label), fmt="%.1f", fontsize=8)
    names = [Path(c["path"]).stem[:24] + "\n" + (f"project {c['ratio']:.1f}x original" if c["ratio"] is not None
                                                  else "original skipped") for c in clips]
    ax.set(xticks=idx, xticklabels=names, ylabel="frames/s", ylim=(0, max(proj + orig) * 1.15),
           title="frames/s: project pipeline vs original notebook loop")
    ax.legend(fontsize=8, loc="upper right")


def _plot_stages(ax: Any, result: dict[str, Any]) -> None:
    """The project's stage shares per clip, as stacked horizontal bars labelled where wide enough."""
    clips = result["pipeline"]["clips"]
    idx = np.arange(len(clips))
    left = np.zeros(len(clips))
    for k in STAGE_KEYS:
        share = np.asarray([c["project"]["stage_share"][k] for c in clips])
        bars = ax.barh(idx, share, 0.5, left=left, label=k)
        ax.bar_label(bars, labels=[f"{100 * v:.0f}%" if v >= 0.05 else "" for v in share], label_type="center",
                     fontsize=8)
        left += share
    ax.set(yticks=idx, yticklabels=[Path(c["path"]).stem[:14] for c in clips], xlim=(0, 1),
           xlabel="share of a frame's time (decode + pipeline)", title="project stage shares")
    ax.invert_yaxis()  # first clip on top
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))


def write_outputs(result: dict[str, Any], out_dir: Path, base: str) -> tuple[Path, Path | None]:
    """Write ``<base>.png`` and ``<base>.json`` and their ``latest.*`` copies, each atomically.

    Returns:
        The JSON path and the PNG path (None when matplotlib is missing).
    """
    png: Path | None = out_dir / f"{base}.png"
    try:
        draw_chart(result, png)
    except ImportError:
        log("no chart: matplotlib is not installed (pip install matplotlib)")
        png = None
    result["files"]["png"] = png.name if png else None
    json_path = out_dir / f"{base}.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    for src in (json_path, png):
        if src is not None:
            with atomic_path(out_dir / f"latest{src.suffix}") as tmp:
                shutil.copyfile(src, tmp)
    return json_path, png


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="benchmark", description="Model throughput and pipeline frames/s, "
                       "against the original notebook loop; writes JSON and a PNG chart.")
    p.add_argument("--quick", action="store_true", help="short run (well under 2 minutes): fewer batch sizes "
                   f"and iterations, the pipeline on {QUICK.frames} frames, the original loop on "
                   f"{QUICK.original_frames}")
    p.add_argument("--model", type=path_arg, default=None, help="ONNX model (default: the shipped model); "
                   "<stem>.fp16.onnx and <stem>.int8.onnx beside it are timed too")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto",
                   help="onnxruntime provider(s): auto is CPU, plus CUDA when onnxruntime has it")
    p.add_argument("--threads", type=THREADS, default=0, help="onnxruntime intra-op threads (0: one per core)")
    p.add_argument("--faces", type=path_arg, default=None,
                   help=f"FER2013-layout folder of real faces for the model runs (default: {DEFAULT_FACES}; "
                        "random images if missing)")
    p.add_argument("--video", type=path_arg, action="append", default=[],
                   help=f"another clip to time (repeatable); {DEFAULT_CLIP} is always timed when present")
    p.add_argument("--frames", type=FRAMES, default=None,
                   help="frames of each clip for the project pipeline (default: all; --quick: "
                        f"{QUICK.frames})")
    p.add_argument("--original-frames", type=FRAMES, default=None,
                   help=f"frames of each clip for the original loop (default: all; --quick: {QUICK.original_frames})")
    p.add_argument("--keras", type=path_arg, default=None,
                   help="trained Keras weights (.keras or .weights.h5) for the Keras parts (default: random "
                        "weights, timing only)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras parts and the original loop")
    p.add_argument("--out-dir", type=path_arg, default=DEFAULT_OUT_DIR, help="folder for the JSON and PNG")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the face sample and random matrices")
    return p


def _mode(args: Any) -> Mode:
    """The run mode with ``--frames`` / ``--original-frames`` applied."""
    base = QUICK if args.quick else FULL
    return replace(base, frames=args.frames or base.frames,
                   original_frames=args.original_frames or base.original_frames)


def _clip_paths(videos: Sequence[Path]) -> list[tuple[Path, bool]]:
    """The default clip (when present) and every ``--video``, each with whether it is the default.

    Raises:
        UserError: A ``--video`` is missing, or there is no clip at all.
    """
    for v in videos:
        if not v.is_file():
            raise UserError(f"--video {v} does not exist: give a video file")
        try:
            str(v).encode("utf-8")
        except UnicodeEncodeError:  # OpenCV's VideoCapture crashes (a segfault) on such a name
            raise UserError(f"--video {v}: its file name is not valid UTF-8, which OpenCV cannot open: "
                            "rename the file") from None
    default = _default_path(DEFAULT_CLIP)
    clips = [(default, True)] if default.is_file() else []
    if not clips:
        if not videos:
            raise UserError(f"no video to time: {DEFAULT_CLIP} is missing (keep ../shared beside the project) "
                            "and no --video was given")
        log(f"warning: {DEFAULT_CLIP} is missing; timing the --video clips only")
    return clips + [(v, False) for v in videos if not (clips and v.resolve() == default.resolve())]


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and check that it can be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out-dir {out_dir} cannot be created ({exc.strerror}): choose another folder") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise UserError(f"--out-dir {out_dir} is not a writable folder: choose another folder")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """benchmark: model throughput and pipeline frames/s against the original notebook loop."""
    args = _parser().parse_args(argv)
    mode = _mode(args)
    if args.keras is not None and not args.keras.is_file():
        raise UserError(f"--keras {args.keras} does not exist: give a .keras file from trainer-fit")
    clip_paths = _clip_paths(args.video)
    out_dir = _prepare_out_dir(args.out_dir)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    terminate_as_interrupt()

    from runtime.classifier import EmotionClassifier, default_model_path
    from runtime.pipeline import Pipeline

    t_start = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    model_path = args.model if args.model is not None else default_model_path()
    fp32 = EmotionClassifier(model_path, provider="cpu", threads=args.threads)  # checks the file and contract
    result: dict[str, Any] = {"schema": SCHEMA, "quick": mode.quick, "date_utc": now.isoformat(timespec="seconds"),
                              "wall_s": 0.0, "machine": machine_info(), "versions": versions()}
    providers = bench_providers(args.provider)
    result["providers"] = providers

    log(f"GEMM {mode.gemm_n}^3 float32, best of {mode.gemm_repeats}")
    result["gemm"] = gemm_rate(mode.gemm_n, mode.gemm_repeats, args.seed)
    faces_dir = args.faces if args.faces is not None else _default_path(DEFAULT_FACES)
    x, faces_source = load_faces(faces_dir, FACE_COUNT, fp32.spec.input_shape, args.seed)
    result["model"] = {"faces": faces_source, **bench_models(model_path, providers, x, mode, args.threads,
                                                             result["gemm"]["gflops"])}

    limit = 0 if not (mode.frames and mode.original_frames) else max(mode.frames, mode.original_frames)
    clips = [decode_clip(path, limit, default) for path, default in clip_paths]

    def make_pipeline() -> Pipeline:
        provider = "cuda" if "cuda" in providers and args.provider != "cpu" else "cpu"
        return Pipeline(classifier=EmotionClassifier(model_path, provider=provider, threads=args.threads))

    env = import_keras(args.no_keras)
    result["versions"].update(env.versions)
    keras_model = None
    weights = RANDOM_WEIGHTS if args.keras is None else shown_path(args.keras)
    result["keras"] = {"skipped": env.skipped, "weights": weights, "device": env.device}
    if env.keras is not None:
        keras_model, weights = load_keras_model(args.keras)
        with inference_errors(f"timing the Keras model {weights}", "give a .keras model from trainer-fit"):
            result["keras"] = bench_keras(keras_model, x[0], mode.keras, weights, env.device)
    else:
        log(f"keras parts skipped: {env.skipped}")
    with inference_errors("timing the pipeline on video", MODEL_FIX):
        result["pipeline"] = {"clips": [bench_clip(c, mode, make_pipeline, keras_model, env.skipped) for c in clips]}

    result["machine"]["load_avg_1m_end"] = _load_avg()
    result["targets"] = evaluate_targets(result)
    result["wall_s"] = _r(time.perf_counter() - t_start, 4)
    base = f"benchmark-{now.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if mode.quick else ''}"
    result["files"] = {"json": f"{base}.json", "png": f"{base}.png"}
    with write_errors(out_dir):
        json_path, png_path = write_outputs(result, out_dir, base)

    print(format_table(result), file=sys.stderr)
    main_clip = _main_clip(result)
    print(json.dumps({
        "json": str(json_path), "png": str(png_path) if png_path else None, "quick": mode.quick,
        "fp32_faces_per_s": (_peak(result, "fp32") or {}).get("faces_per_s"),
        "pipeline_fps": main_clip["project"]["fps"], "pipeline_p99_ms": main_clip["project"]["p99_ms"],
        "original_fps": main_clip["original"].get("fps"), "ratio": main_clip["ratio"],
        "targets_met": sum(bool(t["met"]) for t in result["targets"].values()), "targets": len(TARGETS),
    }), flush=True)
    problems = validate(result)
    if problems:
        log("error: the result breaks its own schema (a bug in benchmarks/run.py): " + "; ".join(problems[:5]))
        return EXIT_FAILED
    return 0


cli = run_main(main, "benchmark")
