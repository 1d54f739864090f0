"""The same network in Keras: ``model.predict`` and a direct call on one face (needs the [train] extra)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import log, rounded, shown_path, summarize_ms
from export.inference import Budget, time_calls
from runtime.cli_support import first_line
from runtime.errors import ModelError
from trainer.model import build_model, load_model

KERAS_INSTALL = 'pip install "emocam[train]"'  # how to get the Keras parts
RANDOM_WEIGHTS = "random weights: timing only"  # Keras weight note without --keras


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
        return KerasEnv(None, f"TensorFlow/Keras not importable ({first_line(exc, 160)}): {KERAS_INSTALL}", none)
    device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return KerasEnv(keras, None, {"tensorflow": tf.__version__, "keras": keras.__version__}, device)


def load_keras_model(path: Path | None) -> tuple[Any, str]:
    """The documented CNN in Keras: random weights, a ``.keras`` model, or weights loaded into it.

    Returns:
        The model and what its weights are.

    Raises:
        ModelError: ``path`` does not load.
    """
    if path is None:
        return build_model(), RANDOM_WEIGHTS
    if path.name.endswith(".keras"):
        return load_model(path), shown_path(path)
    model = build_model()
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and keras raise many types for a bad file
        raise ModelError(f"Keras weights {path} could not be loaded ({first_line(exc, 160)}): give a .keras file "
                         "from trainer-fit or a .weights.h5 of the same network") from None
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
        out[key] = {**stats, "faces_per_s": rounded(1e3 / stats["mean_ms"])}
        log(f"keras {key}: {stats['p50_ms']:.2f} ms p50")
    return out

