"""Verify before write: the faces an export is checked on, the comparison with the reference, and
:func:`make_verified`, which makes a variant and measures it before anything is renamed into place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.convert import forward
from export.inference import faces_per_second, in_batches, ort_session, session_predict
from runtime.cli_support import EXIT_FAILED
from runtime.contract import ModelSpec
from trainer.cli_common import inference_errors, write_errors
from trainer.data import Split, sample_faces

RERUN_FIX = "try another opset, or leave the variant out"  # the fix when an exported graph fails to run


UNKNOWN = -1  # the class of a random image


def export_faces(folder: Path | None, count: int, spec: ModelSpec, seed: int, what: str) -> Split:
    """About ``count`` real faces to verify or calibrate on, or random pixels if ``folder`` is missing.

    Real faces are :func:`trainer.data.sample_faces`; random images (with a warning) have class
    :data:`UNKNOWN`, so that accuracy is not measured on them (see :func:`known_classes`).
    """
    if folder is not None and Path(folder).is_dir():
        return sample_faces(Path(folder), count, spec.labels, spec.input_hw, seed)
    print(
        f"warning: no {what} folder ({folder}); using {count} random images: accuracy cannot be measured",
        file=sys.stderr,
    )
    x = np.random.default_rng(seed).integers(0, 256, (count, *spec.input_shape)).astype(np.uint8)
    return Split(x, np.full(count, UNKNOWN, np.int64), spec.labels, "random")


def known_classes(faces: Split) -> np.ndarray | None:
    """The true classes of ``faces``, or None when they are random images."""
    return None if (faces.y == UNKNOWN).any() else faces.y


def compare(reference: np.ndarray, probs: np.ndarray, y: np.ndarray | None) -> dict:
    """Max |diff|, argmax agreement and (with labels) accuracy of ``probs`` against ``reference``."""
    out = {
        "max_abs_diff": float(np.abs(reference - probs).max()),
        "argmax_agreement": float((reference.argmax(1) == probs.argmax(1)).mean()),
    }
    if y is not None:
        out["accuracy"] = float((probs.argmax(1) == y).mean())
    return out


def keras_reference(model, x: np.ndarray, tta: str) -> np.ndarray:
    """The Keras model's probabilities of the float32 verification faces ``x`` (fp32 must match them)."""
    with inference_errors(f"running the Keras model on {len(x)} faces"):
        return in_batches(lambda batch: forward(model, batch, tta), x)


def measure_variant(
    path: Path, x: np.ndarray, y: np.ndarray | None, fp32_probs: np.ndarray, fp32: dict, fp32_fps: float, bound: float
) -> dict:
    """Agreement with fp32, accuracy (``y``: true classes, or None) and speed of the variant in ``path``."""
    with inference_errors(f"running the new {path.name} on {len(x)} faces", RERUN_FIX, EXIT_FAILED):
        predict = session_predict(ort_session(str(path)))
        got = compare(fp32_probs, in_batches(predict, x), y)
        fps = faces_per_second(predict, x)
    entry = {
        "bytes": path.stat().st_size,
        **got,
        "min_agreement": bound,
        "faces_per_s": round(fps, 1),
        "speedup_vs_fp32": round(fps / fp32_fps, 2),
    }
    if y is not None:
        entry["accuracy_delta_points"] = round(100 * (got["accuracy"] - fp32["accuracy"]), 2)
    return entry


def make_verified(path: Path, tmp: Path, make: Callable[[Path], None], measure: Callable[[Path], dict],
                  bound: float) -> dict:
    """Make a variant into ``tmp`` (a temporary file beside ``path``) and verify it against fp32.

    Nothing is renamed here: the caller renames every file of the export into place together, once
    all of them have passed (:func:`export.onnx_export.export`).

    Args:
        path: The variant's final file.
        tmp: Where to make it.
        make: Writes the variant into the path it is given.
        measure: Measures the file it is given against fp32 (see :func:`measure_variant`).
        bound: The argmax agreement the variant must reach.

    Returns:
        The measurement, with ``path`` set to the final file, or to None when the variant missed
        its bound.
    """
    with write_errors(path), inference_errors(f"making {path.name}", RERUN_FIX, EXIT_FAILED):
        make(tmp)
    entry = measure(tmp)
    return {"path": str(path) if entry["argmax_agreement"] >= bound else None, **entry}
