"""ONNX model throughput: the model and its fp16/int8 variants on every provider and batch size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import Mode, log, rounded, shown_path, summarize_ms
from export.inference import Budget, Predict, ort_session, session_predict, time_calls
from runtime.classifier import CPU, CUDA, EmotionClassifier
from runtime.cli_support import first_line
from runtime.contract import FER2013_LABELS
from runtime.errors import EmocamError, ModelError
from trainer.cli_common import inference_errors
from trainer.data import sample_faces
from trainer.model import MULTIPLY_ADDS

FACE_COUNT = 512  # faces fed to the model runs: the largest batch, tiled when fewer are found
MODEL_FIX = "give an .onnx model from export-onnx that runs in onnxruntime"  # the fix when a model fails to run


def _flops_per_face(model: Path | None = None) -> int:
    """FLOPs per face: 2 x the documented multiply-adds (77.3 M) x the network passes per face.

    A model exported with test-time augmentation runs the network several times per face
    (``--tta flip``: 2, ``--tta flip-zoom``: 6); its ``forward_passes`` metadata says how many.

    Raises:
        ModelError: The ``forward_passes`` metadata is not a positive integer.
    """
    passes = 1
    if model is not None:
        meta = ort_session(str(model)).get_modelmeta()
        text = meta.custom_metadata_map.get("forward_passes", "1")
        if not text.isdigit() or int(text) < 1:
            raise ModelError(f"model {model} has forward_passes metadata {text[:40]!r}: re-export it with export-onnx")
        passes = int(text)
    return 2 * MULTIPLY_ADDS * passes


def model_faces(
    folder: Path | None, count: int, input_shape: tuple[int, int, int], seed: int
) -> tuple[np.ndarray, str]:
    """``count`` faces as a float32 raw-pixel batch: real FER2013 faces if found, else random.

    Args:
        folder: A FER2013-layout split folder (one sub-folder per class), or None.
        count: Faces wanted; the real ones (:func:`trainer.data.sample_faces`) are shuffled and tiled.
        input_shape: The model's ``(H, W, C)``.
        seed: Seed of the stratified sample and the shuffle.

    Returns:
        The batch and a description of where it came from.
    """
    rng = np.random.default_rng(seed)
    if folder is not None and folder.is_dir() and input_shape[2] == 1:
        split = sample_faces(folder, count, FER2013_LABELS, input_shape[:2], seed)
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
    import onnxruntime as ort  # lazily, as in the runtime: heavy, and only the measured runs need it

    if provider == "auto":
        return ["cpu", "cuda"] if CUDA in ort.get_available_providers() else ["cpu"]
    return [provider]


def _plain_session(path: Path, provider: str, threads: int) -> Predict:
    """A session with the runtime's options, for a variant whose metadata lacks the model contract."""
    providers = [CUDA, CPU] if provider == "cuda" else [CPU]
    try:
        session = ort_session(str(path), threads, providers)
    except Exception as exc:  # onnxruntime's own exception types for a bad file
        raise ModelError(f"{path} does not load in onnxruntime: {first_line(exc, 160)}") from None
    if provider == "cuda" and CUDA not in session.get_providers():
        raise ModelError("onnxruntime fell back to the CPU for CUDA")
    return session_predict(session)


def open_predictor(path: Path, provider: str, threads: int) -> tuple[Predict, str]:
    """A ``batch -> probabilities`` function for an ONNX file, as the runtime would open it.

    Returns:
        The function and a note ("" unless the file lacks the model contract, in which case it
        is timed with a plain session with the same options).

    Raises:
        ModelError: The file does not load, or CUDA was asked for and is not active.
    """
    try:
        clf = EmotionClassifier(path, provider=provider, threads=threads)
        return clf.predict, ""
    except ModelError as exc:
        if provider == "cuda":
            raise
        return _plain_session(path, provider, threads), f"timed with a plain session: {exc}"


def bench_batches(
    predict: Predict, x: np.ndarray, batches: Sequence[int], budget: Budget,
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
        runs.append({"batch": b, **stats, "faces_per_s": rounded(faces_per_s),
                     "faces_per_s_p50": rounded(b * 1e3 / stats["p50_ms"]), "gflops": rounded(gflops),
                     "gemm_fraction": rounded(gflops / gemm_gflops, 4) if gemm_applies else None})
    return runs


def bench_models(
    model: Path, providers: Sequence[str], x: np.ndarray, mode: Mode, threads: int, gemm_gflops: float,
) -> dict[str, Any]:
    """Throughput of the model and its fp16/int8 variants on every provider and batch size.

    Raises:
        ModelError: The fp32 model itself does not load or run (every other failure is recorded).
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
            except EmocamError as exc:
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


def peak_of(result: dict[str, Any], variant: str, provider: str = "cpu") -> dict[str, Any] | None:
    """The peak run of ``variant`` on ``provider`` in a result, or None when it did not run."""
    return next((p for p in result["model"]["peak"] if p["variant"] == variant and p["provider"] == provider), None)

