"""ONNX model throughput: the model and its fp16/int8 variants on every engine and batch size, each with its
argmax agreement with fp32 on onnxruntime's CPU provider on real faces (no fast path without its accuracy)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.limits import OPENVINO_BF16, attach_fractions, openvino_version
from benchmarks.timing import Mode, log, rounded, shown_path, summarize_ms
from export.config import ENSEMBLE
from export.inference import Budget, Predict, in_batches, ort_session, time_calls
from runtime.backends import CUDA, OpenVinoBackend, OrtBackend, resolve_provider
from runtime.classifier import EmotionClassifier
from runtime.cli_support import first_line
from runtime.contract import FER2013_LABELS
from runtime.errors import EmocamError, ModelError
from trainer.cli_common import inference_errors
from trainer.data import sample_faces
from trainer.model import MULTIPLY_ADDS, MULTIPLY_ADDS_BY_ARCH

FACE_COUNT = 512  # faces fed to the model runs: the largest batch, tiled when fewer are found
MODEL_FIX = "give an .onnx model from export-onnx that runs in onnxruntime"  # the fix when a model fails to run
AGREEMENT_BATCH = 128  # faces per call when measuring agreement


def _flops_per_face(model: Path | None = None) -> int:
    """FLOPs per face: 2 x the architecture's multiply-adds x the network passes per face.

    The ``architecture`` metadata (export-onnx) picks the multiply-adds (the documented CNN's
    77.3 M where it is missing). A model exported with test-time augmentation runs the network
    several times per face (``--tta flip``: 2, ``--tta flip-zoom``: 6), an ensemble once per
    member and view; its ``forward_passes`` metadata says how many.

    Raises:
        ModelError: The ``forward_passes`` metadata is not a positive integer.
    """
    passes, multiply_adds = 1, MULTIPLY_ADDS
    if model is not None:
        meta = ort_session(str(model)).get_modelmeta().custom_metadata_map
        text = meta.get("forward_passes", "1")
        if not text.isdigit() or int(text) < 1:
            raise ModelError(f"model {model} has forward_passes metadata {text[:40]!r}: re-export it with export-onnx")
        passes = int(text)
        archs = [meta.get("architecture", "documented")]
        if archs[0] == ENSEMBLE:  # forward_passes counts every member's passes: their mean cost each
            try:
                archs = [str(m["architecture"]) for m in json.loads(meta["ensemble_members"])]
            except (KeyError, TypeError, ValueError):
                archs = []
            if not archs:
                raise ModelError(f"model {model} is an ensemble without readable ensemble_members metadata: "
                                 "re-export it with export-onnx")
        multiply_adds = round(sum(MULTIPLY_ADDS_BY_ARCH.get(a, MULTIPLY_ADDS) for a in archs) / len(archs))
    return 2 * multiply_adds * passes


@dataclass(frozen=True)
class BenchFaces:
    """The faces of the model runs.

    Attributes:
        x: ``FACE_COUNT`` faces, a float32 raw-pixel batch (batch ``b`` is ``x[:b]``).
        distinct: How many of the first faces are distinct (the rest repeat them): the set
            argmax agreement is measured on.
        real: Whether they are real FER2013 faces (else random images).
        source: Where they came from, in words.
    """

    x: np.ndarray
    distinct: int
    real: bool
    source: str

    @property
    def agreement_set(self) -> np.ndarray:
        """The distinct faces."""
        return self.x[: self.distinct]


def model_faces(folder: Path | None, count: int, input_shape: tuple[int, int, int], seed: int) -> BenchFaces:
    """``count`` faces as a float32 raw-pixel batch: real FER2013 faces if found, else random.

    Args:
        folder: A FER2013-layout split folder (one sub-folder per class), or None.
        count: Faces wanted; the real ones (:func:`trainer.data.sample_faces`) are shuffled and tiled.
        input_shape: The model's ``(H, W, C)``.
        seed: Seed of the stratified sample and the shuffle.
    """
    rng = np.random.default_rng(seed)
    if folder is not None and folder.is_dir() and input_shape[2] == 1:
        split = sample_faces(folder, count, FER2013_LABELS, input_shape[:2], seed)
        x = split.x[rng.permutation(len(split.x))]
        distinct, real = min(len(x), count), True
        source = f"{len(x)} real faces from {shown_path(folder)}, tiled to {count}"
    else:
        x = rng.integers(0, 256, (count, *input_shape), dtype=np.uint8)
        distinct, real = count, False
        source = f"{count} random images (no FER2013 test folder at {shown_path(folder) if folder else None})"
    batch = np.ascontiguousarray(np.resize(x, (count, *input_shape)), dtype=np.float32)
    return BenchFaces(batch, distinct, real, source)


def model_variants(model: Path) -> list[tuple[str, Path]]:
    """``fp32`` (the model itself) and the ``<stem>.fp16.onnx`` / ``<stem>.int8.onnx`` beside it."""
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return [("fp32", model)] + [(v, model.with_name(f"{stem}.{v}.onnx")) for v in ("fp16", "int8")]


def bench_providers(provider: str) -> list[str]:
    """The engines to time, CPU first: ``auto`` is every one installed (onnxruntime CPU, OpenVINO, CUDA).

    OpenVINO comes with a second row, ``openvino-bf16`` (its bf16 hint, run on the fp32 file only).

    Raises:
        ModelError: ``cuda`` or ``openvino`` was asked for and is not installed (with the pip command).
    """
    import onnxruntime as ort  # lazily, as in the runtime: heavy, and only the measured runs need it

    if provider == "auto":
        engines = ["cpu"] + (["openvino"] if openvino_version() else [])
        engines += ["cuda"] if CUDA in ort.get_available_providers() else []
    else:
        engines = [resolve_provider(provider)]
    return [e for engine in engines for e in ([engine, OPENVINO_BF16] if engine == "openvino" else [engine])]


def _plain_predict(path: Path, provider: str, threads: int, precision: str = "f32") -> Predict:
    """A ``batch -> probabilities`` function with the runtime's engine options, for any ONNX file.

    For a variant whose metadata lacks the model contract, and for OpenVINO's bf16 hint.

    Raises:
        ModelError: The file does not load, or CUDA was asked for and is not active.
    """
    try:
        if provider.startswith("openvino"):
            backend: OrtBackend | OpenVinoBackend = OpenVinoBackend(str(path), threads, precision)
        else:
            backend = OrtBackend(str(path), provider, threads)
    except Exception as exc:  # the engines' own exception types for a bad file
        raise ModelError(f"{path} does not load in {provider}: {first_line(exc, 160)}") from None
    if provider == "cuda" and backend.name != "cuda":
        raise ModelError("onnxruntime fell back to the CPU for CUDA")
    return backend.run


def open_predictor(path: Path, provider: str, threads: int) -> tuple[Predict, str]:
    """A ``batch -> probabilities`` function for an ONNX file, as the runtime would open it.

    Args:
        path: The ONNX file.
        provider: ``cpu``, ``cuda``, ``openvino`` or ``openvino-bf16`` (OpenVINO with the bf16 hint).
        threads: Inference threads (0: the engine's choice).

    Returns:
        The function and a note ("" unless the file lacks the model contract, in which case it
        is timed with a plain engine with the same options).

    Raises:
        ModelError: The file does not load, or CUDA was asked for and is not active.
    """
    if provider == OPENVINO_BF16:
        return _plain_predict(path, provider, threads, "bf16"), ""
    try:
        clf = EmotionClassifier(path, provider=provider, threads=threads)
        return clf.predict, ""
    except ModelError as exc:
        if provider == "cuda":
            raise
        return _plain_predict(path, provider, threads), f"timed with a plain session: {exc}"


def reference_classes(model: Path, faces: BenchFaces, threads: int) -> np.ndarray:
    """The class fp32 on onnxruntime's CPU provider gives each distinct face: what agreement is measured against.

    Raises:
        ModelError: The model does not load or run on onnxruntime's CPU provider.
    """
    predict, _ = open_predictor(model, "cpu", threads)
    with inference_errors(f"running {model.name} on cpu", MODEL_FIX):
        return np.argmax(in_batches(predict, faces.agreement_set, AGREEMENT_BATCH), axis=1)


def agreement(predict: Predict, faces: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Argmax agreement of ``predict`` on ``faces`` with the ``reference`` classes (fp32 on onnxruntime CPU)."""
    got = np.argmax(in_batches(predict, faces, AGREEMENT_BATCH), axis=1)
    return {"agreement": rounded(float((got == reference).mean()), 4), "disagreements": int((got != reference).sum())}


def bench_batches(
    predict: Predict, x: np.ndarray, batches: Sequence[int], budget: Budget, flops_per_face: int,
) -> list[dict[str, Any]]:
    """Time ``predict`` at every batch size.

    Args:
        predict: One model call on a batch.
        x: Faces; batch ``b`` is ``x[:b]``.
        batches: Batch sizes.
        budget: Timing budget of each batch size.
        flops_per_face: FLOPs of one face.
    """
    runs = []
    for b in batches:
        xb = np.ascontiguousarray(x[:b])
        stats = summarize_ms(time_calls(lambda xb=xb: predict(xb), budget))
        faces_per_s = b * 1e3 / stats["mean_ms"]  # sustained: total faces / total time
        gflops = faces_per_s * flops_per_face / 1e9
        runs.append({"batch": b, **stats, "faces_per_s": rounded(faces_per_s),
                     "faces_per_s_p50": rounded(b * 1e3 / stats["p50_ms"]), "gflops": rounded(gflops)})
    return runs


def bench_models(
    model: Path, providers: Sequence[str], faces: BenchFaces, mode: Mode, threads: int, limits: dict[str, Any],
    reference: np.ndarray,
) -> dict[str, Any]:
    """Throughput and fp32 agreement of the model and its fp16/int8 variants on every engine and batch size.

    Args:
        model: The fp32 ONNX file; its ``.fp16`` / ``.int8`` siblings are timed too.
        providers: Engines (:func:`bench_providers`); ``openvino-bf16`` runs the fp32 file only.
        faces: The faces (agreement is measured on the distinct ones).
        mode: Batch sizes and the timing budget.
        threads: Inference threads (0: the engine's choice).
        limits: The machine's limits (:func:`benchmarks.limits.measure_limits`): each run's fraction.
        reference: fp32 on onnxruntime CPU's class of each distinct face (:func:`reference_classes`).

    Raises:
        ModelError: The fp32 model does not load or run on onnxruntime's CPU provider (every other
            failure is recorded under ``failures``).
    """
    flops = _flops_per_face(model)
    variants, runs, failures, agreements = [], [], [], {}
    for name, path in model_variants(model):
        entry: dict[str, Any] = {"name": name, "path": shown_path(path), "skipped": None}
        variants.append(entry)
        if not path.is_file():
            entry["skipped"] = f"no {path.name} beside the model (export-onnx --{name} writes it)"
            continue
        entry["bytes"] = path.stat().st_size
        for provider in providers:
            if provider == OPENVINO_BF16 and name != "fp32":
                continue
            try:
                predict, note = open_predictor(path, provider, threads)
                with inference_errors(f"timing {path.name} on {provider}", MODEL_FIX):
                    agreements[(name, provider)] = agreement(predict, faces.agreement_set, reference)
                    variant_runs = bench_batches(predict, faces.x, mode.batches, mode.model, flops)
            except EmocamError as exc:
                if (name, provider) == ("fp32", "cpu"):
                    raise
                failures.append({"variant": name, "provider": provider, "reason": str(exc)})
                continue
            if note:
                entry["note"] = note
            for run in variant_runs:
                runs.append({"variant": name, "provider": provider, **run})
                log(f"{name} {provider} batch {run['batch']}: {run['p50_ms']:.2f} ms p50, "
                    f"{run['faces_per_s']:.0f} faces/s")
            log(f"{name} {provider}: argmax agreement with fp32 on cpu {agreements[(name, provider)]['agreement']:.4f}")
    attach_fractions(runs, limits["best"])
    peak = [{**p, **agreements[(p["variant"], p["provider"])]} for p in peaks(runs)]
    return {"path": shown_path(model), "flops_per_face": flops, "threads": threads, "agreement_faces": faces.distinct,
            "agreement_real": faces.real, "variants": variants, "runs": runs, "peak": peak, "failures": failures}


def peaks(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run with the most faces/s of every (variant, provider)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        key = (run["variant"], run["provider"])
        if key not in best or run["faces_per_s"] > best[key]["faces_per_s"]:
            best[key] = run
    keep = ("variant", "provider", "batch", "faces_per_s", "gflops", "limit", "limit_fraction")
    return [{k: run[k] for k in keep} for run in best.values()]


def peak_of(result: dict[str, Any], variant: str, provider: str = "cpu") -> dict[str, Any] | None:
    """The peak run of ``variant`` on ``provider`` in a result, or None when it did not run."""
    return next((p for p in result["model"]["peak"] if p["variant"] == variant and p["provider"] == provider), None)

