"""Emotion classification: every face of a frame in ONE onnxruntime call.

The model's labels and input contract come from the ONNX file's metadata
(:class:`runtime.contract.ModelSpec`); rescaling is inside the graph, so faces go in as raw
0-255 pixels.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from runtime.cli_support import first_line
from runtime.contract import ContractError, ModelSpec
from runtime.errors import ModelError
from runtime.faces import Faces, clip_xyxy
from runtime.image import to_gray

if TYPE_CHECKING:  # imported where a session is made: `--help` and the lean import stay fast
    import onnxruntime as ort

#: Input element types the runtime can feed (raw 0-255 pixels fit each of them exactly).
INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(uint8)": np.uint8}
PROB_SLACK = 0.01  # how far outside [0, 1] a probability may stray (quantised models round)
SUM_SLACK = 0.05  # how far from 1 a face's probabilities may sum (the shipped INT8 file: within 0.008)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_INSTALL = 'pip uninstall -y onnxruntime && pip install "emocam[gpu]"'


def default_model_path() -> Path:
    """The shipped default model (``models/emotion_cnn.onnx``)."""
    from models import DEFAULT_MODEL

    return DEFAULT_MODEL


def resolve_model_path(model: str | Path | None) -> Path:
    """The ONNX file for ``model``: a path, a shipped model's name (``fp32``, ``int8``), or None (the default).

    A shipped name wins only when no file of that name exists, so a real file is never shadowed.
    """
    from models import SHIPPED_MODELS

    if model is None:
        return default_model_path()
    if str(model) in SHIPPED_MODELS and not Path(model).exists():
        return SHIPPED_MODELS[str(model)]
    return Path(model)


class InferenceError(ModelError):
    """The model failed while classifying (or gave unusable output); the message names it."""


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while onnxruntime builds a session (a fraction of a second).

    A signal handled inside that native call makes it fail as "initialization failed", which would
    read as a broken model. Here a signal is only noted meanwhile, and raised again once the call
    returns, to stop the program as it would have.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def _session_source(path: Path) -> str | bytes:
    """What onnxruntime opens: the path, or for a name that is not UTF-8 the file's bytes."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model {path} cannot be read ({exc.strerror}): check its permissions") from None


def _providers(provider: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "cpu":
        return [CPU]
    if provider == "cuda":
        if CUDA not in available:
            raise ModelError(
                f"CUDA was asked for, but this onnxruntime has no CUDA provider (it has {', '.join(available)}): "
                f"{GPU_INSTALL}"
            )
        return [CUDA, CPU]
    if provider == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ValueError(f"unknown provider {provider!r}: use auto, cpu or cuda")


def open_session(model: str | bytes, providers: list[str], threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session with the project's options, shared by runtime, export and benchmark.

    Full graph optimisation (1.8x faster than BASIC here), ``threads`` intra-op threads (0: one
    per core), one inter-op thread, quiet logs.

    Args:
        model: An ONNX file path, or a serialised model.
        providers: Execution providers in order of preference.
        threads: Intra-op threads.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


def _read_spec(session: ort.InferenceSession, path: Path) -> ModelSpec:
    meta = session.get_modelmeta().custom_metadata_map
    try:
        spec = ModelSpec.from_metadata(meta)
    except ContractError as exc:
        raise ModelError(f"model {path}: {exc}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs: expected exactly one image input")
    if spec.channels != 1:
        raise ModelError(f"model {path} takes {spec.channels}-channel faces, but the runtime feeds grayscale "
                        "(1 channel), as FER2013 is: export a grayscale model")
    shape = list(inputs[0].shape)
    want = [*spec.input_hw, spec.channels]
    if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != want:
        raise ModelError(f"model {path} takes input {shape}: expected [N, {', '.join(map(str, want))}] (NHWC)")
    if inputs[0].type not in INPUT_DTYPES:
        raise ModelError(f"model {path} takes {inputs[0].type} input: expected float, float16, double or uint8 "
                        "pixels; re-export it with export-onnx")
    out_shape = list(outputs[0].shape)
    if len(out_shape) != 2 or out_shape[1] != spec.num_classes:
        raise ModelError(
            f"model {path} gives output {out_shape} but its labels name {spec.num_classes} classes: re-export it"
        )
    return spec


class EmotionClassifier:
    """Classifies faces with an ONNX model on the CPU or CUDA provider.

    Args:
        model_path: ONNX file written by ``export-onnx``, or a shipped model by name: ``fp32``
            (the default) or ``int8`` (about twice as fast on a CPU, 0.1 points less accurate).
        provider: ``auto`` (CUDA when onnxruntime-gpu and a GPU are present), ``cpu`` or ``cuda``.
        threads: onnxruntime intra-op threads (0: one per physical core).
        margin: Fraction of the box size added on each side before cropping. 0 by default: on
            512 FER2013 training faces (upscaled 4x, padded), the Haar box matched the FER2013
            crop (median image side / box side 1.00, IQR 0.94-1.08), so the box itself is the
            framing the model was trained on.

    Raises:
        ModelError: The model is missing, not ONNX, or breaks the contract; or CUDA was asked
            for and is not active.
    """

    def __init__(
        self, model_path: str | Path | None = None, provider: str = "auto", threads: int = 0, margin: float = 0.0
    ) -> None:

        path = resolve_model_path(model_path)
        if path.exists() and not path.is_file():
            raise ModelError(f"model {path} is not a regular file (a folder, a pipe or a device): give an .onnx file")
        if not path.is_file():
            from models import SHIPPED_MODELS

            raise ModelError(
                f"model {path} does not exist: give an .onnx file from export-onnx, a shipped model "
                f"({', '.join(SHIPPED_MODELS)}), or none for the default"
            )
        if margin < 0 or margin > 1:
            raise ValueError(f"margin must be in [0, 1], got {margin}")
        try:
            with _signals_held():
                self.session = open_session(_session_source(path), _providers(provider), threads)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(
                f"model {path} is not a loadable ONNX model ({first_line(exc)}): give an .onnx file from export-onnx"
            ) from None
        active = self.session.get_providers()
        if provider == "cuda" and CUDA not in active:
            raise ModelError(
                "CUDA was asked for, but onnxruntime fell back to the CPU (no CUDA device, or CUDA/cuDNN libraries "
                f"missing): check nvidia-smi and {GPU_INSTALL}"
            )
        self.path = path
        self.provider = "cuda" if CUDA in active else "cpu"
        self.spec = _read_spec(self.session, path)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_dtype = INPUT_DTYPES[model_input.type]
        fixed = model_input.shape[0]
        self.max_batch = fixed if isinstance(fixed, int) and fixed > 0 else None  # a fixed batch size, if any
        self.margin = margin
        self._batch = np.zeros((0, *self.spec.input_shape), np.float32)
        self._check_outputs()

    def _check_outputs(self) -> None:
        """Run two faces (black, mid-grey) once at load: a model that cannot run, or gives
        probabilities that are not finite, is refused now, with one line, not mid-run."""
        probe = np.zeros((2, *self.spec.input_shape), np.float32)
        probe[1] = 128.0
        probs = self.predict(probe)
        if probs.shape != (2, self.spec.num_classes):
            raise InferenceError(f"model {self.path} gave output shape {list(probs.shape)} for 2 faces: "
                                 f"expected [2, {self.spec.num_classes}]; re-export it")
        if not np.isfinite(probs).all():
            raise InferenceError(f"model {self.path} gives NaN or infinite probabilities: re-export or retrain it")
        sums = probs.sum(axis=1)
        if probs.min() < -PROB_SLACK or probs.max() > 1 + PROB_SLACK or np.abs(sums - 1).max() > SUM_SLACK:
            raise InferenceError(f"model {self.path} gives outputs that are not probabilities (a face's sum to "
                                 f"{sums[np.argmax(np.abs(sums - 1))]:.3g}): export a model that ends in softmax")

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in output order, from the model's metadata."""
        return self.spec.labels

    def crop(self, gray: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """Crop faces with a margin, clipped to the frame, resized to the model's input.

        Returns:
            A float32 ``(n, H, W, 1)`` batch of raw 0-255 pixels (a reused buffer).
        """
        n = len(xyxy)
        if len(self._batch) < n:
            self._batch = np.zeros((max(n, 2 * len(self._batch)), *self.spec.input_shape), np.float32)
        batch = self._batch[:n]
        if n == 0:
            return batch
        h, w = gray.shape[:2]
        box = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        pad = (box[:, 2:] - box[:, :2]) * self.margin
        grown = clip_xyxy(np.round(np.concatenate([box[:, :2] - pad, box[:, 2:] + pad], axis=1)), (w, h))
        out_h, out_w = self.spec.input_hw
        for i, (x1, y1, x2, y2) in enumerate(grown):
            if x2 <= x1 or y2 <= y1:  # wholly outside the frame: nothing to see
                batch[i] = 0.0
                continue
            patch = gray[y1:y2, x1:x2]
            interp = cv2.INTER_AREA if (x2 - x1) > out_w else cv2.INTER_LINEAR
            batch[i, ..., 0] = cv2.resize(patch, (out_w, out_h), interpolation=interp)
        return batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` for a raw-pixel batch ``(n, H, W, C)``.

        One session call (a model exported with a fixed batch size gets one call per chunk of
        that size, padded).

        Raises:
            InferenceError: onnxruntime failed; the message names the model and its reason.
        """
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.spec.num_classes), np.float32)
        batch = batch.astype(self.input_dtype, copy=False)
        if self.max_batch is None:
            return self._run(batch)
        step = self.max_batch
        padded = np.zeros((-(-n // step) * step, *batch.shape[1:]), batch.dtype)
        padded[:n] = batch
        return np.concatenate([self._run(padded[i: i + step]) for i in range(0, len(padded), step)])[:n]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as exc:  # onnxruntime's own exception types: any failure inside the model
            raise InferenceError(f"model {self.path} failed on {len(batch)} faces ({first_line(exc)}): "
                                 "check it with trainer-eval, or re-export it with export-onnx") from None
        return np.asarray(out, dtype=np.float32)

    def classify(self, frame: np.ndarray, faces: Faces) -> Faces:
        """Classify all faces of a frame (grayscale, BGR or BGRA) in one call."""
        return self.classify_gray(to_gray(frame), faces)

    def classify_gray(self, gray: np.ndarray, faces: Faces) -> Faces:
        """Classify all faces of a 2-D grayscale frame in one call."""
        return faces.with_probs(self.predict(self.crop(gray, faces.xyxy)), self.labels)
