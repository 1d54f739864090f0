"""The smaller variants of an fp32 export: float16 weights, and static INT8 calibrated on real faces.

Each is made into a file by :func:`make_fp16` / :func:`make_int8`, then verified against fp32
by :func:`export.verify.make_verified` before it is renamed into place. onnx,
onnxconverter-common and onnxruntime's quantization tools are imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.config import INPUT_NAME
from export.convert import set_metadata


def to_fp16(proto):
    """float16 weights and compute of an ``onnx.ModelProto``; the graph's input and output stay float32."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns once per tiny weight it rounds to zero
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(proto, keep_io_types=True)


#: Smallest float32 initializer (in elements) that :func:`to_half_weights` stores as float16:
#: biases and the views' small constants stay float32 (they weigh nothing).
HALF_MIN_ELEMENTS = 1024


def to_half_weights(proto):
    """A copy of an fp32 ``onnx.ModelProto`` whose large weights are stored as float16.

    Each float32 initializer of at least :data:`HALF_MIN_ELEMENTS` elements becomes a float16
    initializer and a ``Cast`` back to float32, which onnxruntime and OpenVINO fold when the model
    loads: the file is about half the size and the arithmetic stays float32. Only the weights are
    rounded (about 3 significant digits), unlike :func:`to_fp16`, whose arithmetic is float16 too.
    A tensor that float16 cannot hold keeps float32: one with a value over 65504, or with more than
    1 % of its nonzero values rounded to zero.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    half = onnx.ModelProto()
    half.CopyFrom(proto)
    graph = half.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < HALF_MIN_ELEMENTS:
            keep.append(init)
            continue
        values = numpy_helper.to_array(init)
        stored = values.astype(np.float16)
        if not np.isfinite(stored).all() or ((stored == 0) & (values != 0)).mean() > 0.01:
            keep.append(init)
            continue
        keep.append(numpy_helper.from_array(stored, f"{init.name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{init.name}__fp16"], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)  # the casts read initializers only: first keeps the order topological
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(half)
    return half


#: The op types quantized: the network's. The test-time views' preprocessing (Slice, Concat,
#: Resize, Transpose, ReverseSequence, the rescaling Mul) and the Softmax/ReduceMean at the end stay float.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "Relu")


def to_int8(
    fp32_path: Path,
    out_path: Path,
    calib: np.ndarray,
    *,
    quant_format: str = "QDQ",
    activations: str = "u8",
    weights: str = "s8",
    per_channel: bool = True,
    op_types: Sequence[str] | None = QUANTIZED_OPS,
    exclude: Callable[[Any], list[str]] | None = None,
    calibration: str = "MinMax",
) -> None:
    """Static INT8 quantization (QDQ, per-channel int8 weights, uint8 activations) calibrated on real faces.

    Only :data:`QUANTIZED_OPS` are quantized. Quantizing every op (the choice before issue 19) adds
    37 QuantizeLinear nodes around the cheap preprocessing of the six views. Keeping those ops float
    was faster in three runs of ``benchmarks.quant_study`` (all 3,589 PublicTest faces; same-run
    ratios): on OpenVINO 1.27-1.32x at batch 1 and 1.03-1.07x at batch 8, on onnxruntime 1.05-1.13x
    and 1.13-1.28x. Agreement with fp32 rose from 99.41 % to 99.55 % on OpenVINO and fell from
    99.55 % to 99.50 % on onnxruntime (2 faces of 3,589); accuracy 64.34-64.36 % (fp32: 64.42 %).
    The other choices did worse: with int8 activations OpenVINO ran at fp32 speed, uint8 weights
    were slower than fp32 on both engines, QOperator files do not load in OpenVINO, and per-tensor
    weights, Entropy or Percentile calibration, or a float first conv or head were no faster than
    this choice, and none agreed better with fp32 on OpenVINO.
    See models/MODEL_CARD.md, "INT8 variants".

    The keyword arguments are the other choices that study tried (``benchmarks.quant_study``);
    their defaults are the shipped ones.

    Args:
        fp32_path: The fp32 file.
        out_path: The INT8 file to write.
        calib: Real faces, raw 0-255 pixels, float32 ``(N, 48, 48, 1)``, fed 32 at a time.
        quant_format: ``QDQ`` or ``QOperator``.
        activations: ``u8`` or ``s8``.
        weights: ``s8`` or ``u8``.
        per_channel: Per-output-channel weight scales (else one per tensor).
        op_types: The op types quantized; None quantizes every op.
        exclude: The names of nodes kept in float, given the pre-processed ``onnx.ModelProto``.
        calibration: ``MinMax``, ``Entropy`` or ``Percentile``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [calib[i : i + 32] for i in range(0, len(calib), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter(batches[start_index:end_index])

        def get_next(self) -> dict | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    # The histogram methods keep every tensor of every call until they bin them (14 GB for 700
    # faces): a stride of one call bins each as it comes (MinMax needs no stride).
    extra = {} if calibration == "MinMax" else {"CalibStridedMinMax": 1}
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    pre = out_path.with_name(out_path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
            per_channel=per_channel,
            activation_type=types[activations],
            weight_type=types[weights],
            op_types_to_quantize=None if op_types is None else list(op_types),
            nodes_to_exclude=[] if exclude is None else exclude(onnx.load(pre)),
            calibrate_method=getattr(CalibrationMethod, calibration),
            extra_options=extra,
        )
    finally:
        pre.unlink(missing_ok=True)


def make_fp16(proto, path: Path, meta: dict[str, str]) -> None:
    """Write the float16 variant of ``proto`` (the fp32 ``onnx.ModelProto``) to ``path``, with its metadata."""
    import onnx

    half = to_fp16(proto)
    set_metadata(half, meta)
    onnx.save(half, path)


def make_half_weights(proto, path: Path) -> None:
    """Write ``proto`` (the verified fp32 ``onnx.ModelProto``) with float16-stored weights to ``path``."""
    import onnx

    half = to_half_weights(proto)
    set_metadata(half, {"weight_storage": "float16"})  # the arithmetic stays float32 (variant fp32)
    onnx.save(half, path)


def make_int8(fp32_path: Path, path: Path, calib: np.ndarray, meta: dict[str, str]) -> None:
    """Write the static INT8 variant of the fp32 file to ``path``, with its metadata."""
    import onnx

    to_int8(fp32_path, path, calib)
    q = onnx.load(path)
    set_metadata(q, meta)
    onnx.save(q, path)
