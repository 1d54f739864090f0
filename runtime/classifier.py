"""Emotion classification: every face of a frame in ONE model call (onnxruntime or OpenVINO).

The model's labels and input contract come from the ONNX file's metadata
(:class:`runtime.contract.ModelSpec`); rescaling is inside the graph, so faces go in as raw
0-255 pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.backends import CPU, CUDA, GPU_INSTALL, PROVIDERS, Backend, ModelIO, open_backend, open_session
from runtime.cli_support import first_line, signals_held
from runtime.contract import ContractError, ModelSpec
from runtime.errors import ModelError
from runtime.faces import Faces, clip_xyxy, square_at_edges
from runtime.image import to_gray

#: Input element types the runtime can feed (raw 0-255 pixels fit each of them exactly).
INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(uint8)": np.uint8}
PROB_SLACK = 0.01  # how far outside [0, 1] a probability may stray (quantised models round)
SUM_SLACK = 0.05  # how far from 1 a face's probabilities may sum (the shipped INT8 file: within 0.008)
__all__ = ["CPU", "CUDA", "GPU_INSTALL", "PROVIDERS", "EmotionClassifier", "InferenceError", "open_session"]


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


def _read_spec(io: ModelIO, path: Path) -> ModelSpec:
    try:
        spec = ModelSpec.from_metadata(io.metadata)
    except ContractError as exc:
        raise ModelError(f"model {path}: {exc}") from None
    if io.inputs != 1 or io.outputs < 1:
        raise ModelError(f"model {path} has {io.inputs} inputs: expected exactly one image input")
    if spec.channels != 1:
        raise ModelError(f"model {path} takes {spec.channels}-channel faces, but the runtime feeds grayscale "
                        "(1 channel), as FER2013 is: export a grayscale model")
    shape = list(io.input_shape)
    want = [*spec.input_hw, spec.channels]
    if len(shape) != 4 or shape[1:] != want:
        shown = ["N" if d is None else d for d in shape]
        raise ModelError(f"model {path} takes input {shown}: expected [N, {', '.join(map(str, want))}] (NHWC)")
    if io.input_type not in INPUT_DTYPES:
        raise ModelError(f"model {path} takes {io.input_type} input: expected float, float16, double or uint8 "
                        "pixels; re-export it with export-onnx")
    out_shape = list(io.output_shape)
    if len(out_shape) != 2 or out_shape[1] != spec.num_classes:
        raise ModelError(
            f"model {path} gives output {out_shape} but its labels name {spec.num_classes} classes: re-export it"
        )
    return spec


class EmotionClassifier:
    """Classifies faces with an ONNX model on onnxruntime (CPU, CUDA) or OpenVINO.

    Args:
        model_path: ONNX file written by ``export-onnx``, or a shipped model by name: ``fp32``
            (the default) or ``int8`` (about twice as fast on a CPU, 0.1 points less accurate).
        provider: ``auto`` (CUDA when onnxruntime-gpu and a GPU are present, else OpenVINO when
            installed, else onnxruntime's CPU provider), ``cpu``, ``cuda`` or ``openvino``
            (:mod:`runtime.backends`). :attr:`provider` says which one runs.
        threads: Inference threads (0: one per physical core).
        margin: Fraction of the box size added on each side before cropping. 0 by default: on
            512 FER2013 training faces (upscaled 4x, padded), the Haar box matched the FER2013
            crop (median image side / box side 1.00, IQR 0.94-1.08), so the box itself is the
            framing the model was trained on.

    Raises:
        ModelError: The model is missing, not ONNX, or breaks the contract; or CUDA or OpenVINO
            was asked for and is not active.
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
            with signals_held():
                self.backend: Backend = open_backend(_session_source(path), provider, threads)
        except ModelError:
            raise
        except Exception as exc:  # the engines raise their own exception types for a bad file
            raise ModelError(
                f"model {path} is not a loadable ONNX model ({first_line(exc)}): give an .onnx file from export-onnx"
            ) from None
        if provider == "cuda" and self.backend.name != "cuda":
            raise ModelError(
                "CUDA was asked for, but onnxruntime fell back to the CPU (no CUDA device, or CUDA/cuDNN libraries "
                f"missing): check nvidia-smi and {GPU_INSTALL}"
            )
        self.path = path
        self.provider = self.backend.name  # what runs: cpu, cuda or openvino
        io: ModelIO = self.backend.io
        self.spec = _read_spec(io, path)
        self.metadata = io.metadata
        self.input_dtype = INPUT_DTYPES[io.input_type]
        fixed = io.input_shape[0]
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
        """Crop faces with a margin, resized to the model's input.

        A face cut by the frame's edge has a box clipped to the frame, narrower (or shorter) than
        the square the detector found. Its box is made square again on the side of that edge, and
        the part outside the frame is filled by repeating the edge's pixels, so the face keeps its
        shape instead of being stretched. On 171 faces cut by 15 or 30 % of their side at each
        edge (media and wheel photos), the class matched the uncut face's for 147 this way and 129
        stretched (a first version that filled with grey or a mirror image did worse than
        repeating the edge: 136 and 132 against its 141).

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
        box = square_at_edges(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4), (w, h))
        pad = (box[:, 2:] - box[:, :2]) * self.margin
        grown = np.round(np.concatenate([box[:, :2] - pad, box[:, 2:] + pad], axis=1)).astype(np.int64)
        inside = clip_xyxy(grown, (w, h))
        out_h, out_w = self.spec.input_hw
        for i, ((x1, y1, x2, y2), (cx1, cy1, cx2, cy2)) in enumerate(zip(grown, inside, strict=True)):
            if cx2 <= cx1 or cy2 <= cy1:  # wholly outside the frame: nothing to see
                batch[i] = 0.0
                continue
            patch = gray[cy1:cy2, cx1:cx2]
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):  # over the edge: repeat the edge's pixels
                patch = cv2.copyMakeBorder(patch, cy1 - y1, y2 - cy2, cx1 - x1, x2 - cx2, cv2.BORDER_REPLICATE)
            interp = cv2.INTER_AREA if (x2 - x1) > out_w else cv2.INTER_LINEAR
            batch[i, ..., 0] = cv2.resize(patch, (out_w, out_h), interpolation=interp)
        return batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` for a raw-pixel batch ``(n, H, W, C)``.

        One model call (a model exported with a fixed batch size gets one call per chunk of
        that size, padded).

        Raises:
            InferenceError: The engine failed; the message names the model and its reason.
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
            out = self.backend.run(batch)
        except Exception as exc:  # the engine's own exception types: any failure inside the model
            raise InferenceError(f"model {self.path} failed on {len(batch)} faces ({first_line(exc)}): "
                                 "check it with trainer-eval, or re-export it with export-onnx") from None
        return np.asarray(out, dtype=np.float32)

    def classify(self, frame: np.ndarray, faces: Faces) -> Faces:
        """Classify all faces of a frame (grayscale, BGR or BGRA) in one call."""
        return self.classify_gray(to_gray(frame), faces)

    def classify_gray(self, gray: np.ndarray, faces: Faces) -> Faces:
        """Classify all faces of a 2-D grayscale frame in one call."""
        return faces.with_probs(self.predict(self.crop(gray, faces.xyxy)), self.labels)
