"""Inference engines behind :class:`runtime.classifier.EmotionClassifier`: onnxruntime (CPU or
CUDA) and OpenVINO (the CPU's int8/bf16 units), one small interface.

Both read the same ONNX file. :func:`open_backend` turns a ``provider`` name into an engine:

- ``cpu``: onnxruntime's CPU provider (always installed);
- ``cuda``: onnxruntime's CUDA provider (``pip install "emocam[gpu]"``, which replaces onnxruntime);
- ``openvino``: the ``openvino`` runtime (``pip install "emocam[openvino]"``, beside onnxruntime).
  On the shipped INT8 file it runs 2-3x onnxruntime's INT8 here (AMX/VNNI); the file's float
  ops run in float32 (no bf16 down-cast: the answers match onnxruntime's);
- ``auto``: CUDA when onnxruntime has it; else OpenVINO when installed and the file is quantized
  (INT8); else onnxruntime's CPU provider. On a float file OpenVINO (float32 kept) was no faster
  than onnxruntime here (249 against 287 faces/s at batch 1 for the shipped fp32 file), so auto
  leaves float files on onnxruntime.

Why the ``openvino`` package and not onnxruntime's OpenVINO execution provider: on the shipped
INT8 file both ran at the same faces/s here (within noise), but the execution provider is a
separate onnxruntime build (``onnxruntime-openvino``, 256 MB) that replaces onnxruntime and
lags its releases, while ``openvino`` (180 MB) installs beside it, so ``[gpu]`` and
``[openvino]`` never fight over one module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.errors import ModelError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda", "openvino")  # the --provider choices
GPU_INSTALL = 'pip uninstall -y onnxruntime && pip install "emocam[gpu]"'
OPENVINO_INSTALL = 'pip install "emocam[openvino]"'
#: OpenVINO element type names, as onnxruntime spells the same ONNX types.
_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)", "u8": "tensor(uint8)",
             "i8": "tensor(int8)", "i64": "tensor(int64)", "i32": "tensor(int32)"}


@dataclass(frozen=True)
class ModelIO:
    """What an ONNX file declares: its metadata and its first input and output.

    Attributes:
        metadata: The file's ``metadata_props`` (the model contract lives here).
        inputs: Number of inputs.
        outputs: Number of outputs.
        input_shape: The first input's shape; a dimension that is not fixed is None.
        input_type: The first input's element type, as onnxruntime spells it (``tensor(float)``).
        output_shape: The first output's shape; a dimension that is not fixed is None.
    """

    metadata: dict[str, str] = field(default_factory=dict)
    inputs: int = 1
    outputs: int = 1
    input_shape: tuple[int | None, ...] = ()
    input_type: str = "tensor(float)"
    output_shape: tuple[int | None, ...] = ()


class Backend(Protocol):
    """An engine that runs one ONNX model: :attr:`name`, :attr:`io` and :meth:`run`."""

    name: str  # "cpu", "cuda" or "openvino": what actually runs
    io: ModelIO

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for ``batch`` (already in the input's dtype)."""


def openvino_installed() -> bool:
    """Whether the ``openvino`` runtime can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def open_session(model: str | bytes, providers: list[str], threads: int = 0) -> Any:
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


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OrtBackend:
    """onnxruntime on the CPU or CUDA provider.

    Args:
        model: An ONNX file path, or a serialised model.
        provider: ``cpu`` or ``cuda`` (CUDA falls back to the CPU inside onnxruntime; see :attr:`name`).
        threads: Intra-op threads (0: one per core).
    """

    def __init__(self, model: str | bytes, provider: str = "cpu", threads: int = 0) -> None:
        self.session = open_session(model, [CUDA, CPU] if provider == "cuda" else [CPU], threads)
        self.name = "cuda" if CUDA in self.session.get_providers() else "cpu"
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        self.io = ModelIO(dict(self.session.get_modelmeta().custom_metadata_map), len(ins), len(outs),
                          _dims(ins[0].shape) if ins else (), ins[0].type if ins else "",
                          _dims(outs[0].shape) if outs else ())
        self._feed = ins[0].name if ins else ""
        self._fetch = [outs[0].name] if outs else []

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for ``batch``."""
        return self.session.run(self._fetch, {self._feed: batch})[0]


class OpenVinoBackend:
    """The OpenVINO runtime on the CPU, compiled for latency, float ops kept in float32.

    Args:
        model: An ONNX file path, or a serialised model.
        threads: Inference threads (0: OpenVINO's choice, one per core).
        precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` for float ops: ``f32`` (the default:
            answers match onnxruntime's) or ``bf16`` (faster on AMX; check its agreement first).
    """

    name = "openvino"

    def __init__(self, model: str | bytes, threads: int = 0, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        net = core.read_model(model)
        meta = {}
        if "framework" in net.get_rt_info():  # where OpenVINO keeps an ONNX file's metadata_props
            keys = net.get_rt_info()["framework"]
            for key in keys.astype(dict) if hasattr(keys, "astype") else keys:
                meta[str(key)] = net.get_rt_info(["framework", key]).astype(str)
        ins, outs = net.inputs, net.outputs

        def port_dims(port: Any) -> tuple[int | None, ...]:
            return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())

        kind = ins[0].get_element_type().get_type_name() if ins else ""
        self.io = ModelIO(meta, len(ins), len(outs), port_dims(ins[0]) if ins else (), _OV_TYPES.get(kind, kind),
                          port_dims(outs[0]) if outs else ())
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(net, "CPU", config)
        self._request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for ``batch`` (a copy: the request reuses its buffer)."""
        self._request.infer({0: batch})
        return self._request.get_output_tensor(0).data.copy()


def resolve_provider(provider: str) -> str:
    """The engine ``provider`` names: ``auto`` becomes cuda, openvino or cpu, in that order
    (:func:`open_backend` then keeps float files off OpenVINO).

    Raises:
        ModelError: CUDA or OpenVINO was asked for and is not installed (the message gives the
            pip command).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}: use {', '.join(PROVIDERS)}")
    if provider == "cpu":
        return provider
    import onnxruntime as ort

    has_cuda = CUDA in ort.get_available_providers()
    if provider == "auto":
        return "cuda" if has_cuda else "openvino" if openvino_installed() else "cpu"
    if provider == "cuda" and not has_cuda:
        raise ModelError(
            f"CUDA was asked for, but this onnxruntime has no CUDA provider (it has "
            f"{', '.join(ort.get_available_providers())}): {GPU_INSTALL}"
        )
    if provider == "openvino" and not openvino_installed():
        raise ModelError(f"OpenVINO was asked for, but it is not installed: {OPENVINO_INSTALL}")
    return provider


#: Operators only a quantized (INT8) ONNX file holds: their names appear in its bytes.
QUANTIZED_OPS = (b"QuantizeLinear", b"QLinearConv", b"QLinearMatMul", b"ConvInteger", b"MatMulInteger")


def is_quantized(model: str | bytes) -> bool:
    """Whether an ONNX file (a path or its bytes) holds quantized operators (a few ms for the shipped files)."""
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return any(op in data for op in QUANTIZED_OPS)


def open_backend(model: str | bytes, provider: str = "auto", threads: int = 0) -> Backend:
    """The engine for ``provider`` (see :func:`resolve_provider`) with ``model`` loaded.

    ``auto`` runs a float file on onnxruntime even where OpenVINO is installed (see the module's
    notes); ``openvino`` runs any file there.

    Raises:
        ModelError: The provider is not installed.
        Exception: The engine's own error for a file it cannot load (the caller words it).
    """
    engine = resolve_provider(provider)
    if provider == "auto" and engine == "openvino" and not is_quantized(model):
        engine = "cpu"
    if engine == "openvino":
        return OpenVinoBackend(model, threads)
    return OrtBackend(model, engine, threads)
