"""The smaller variants of an fp32 export: float16 weights, and static INT8 calibrated on real faces.

Each is made into a file by :func:`make_fp16` / :func:`make_int8`, then verified against fp32
by :func:`export.verify.make_verified` before it is renamed into place. onnx,
onnxconverter-common and onnxruntime's quantization tools are imported inside the functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from export.config import INPUT_NAME
from export.convert import set_metadata


def to_fp16(proto):
    """float16 weights and compute of an ``onnx.ModelProto``; the graph's input and output stay float32."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns once per tiny weight it rounds to zero
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(proto, keep_io_types=True)


#: The op types quantized: the network's. The test-time views' preprocessing (Slice, Concat,
#: Resize, Transpose, ReverseSequence, the rescaling Mul) and the Softmax/ReduceMean at the end stay float.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "Relu")


def to_int8(fp32_path: Path, out_path: Path, calib: np.ndarray) -> None:
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
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i : i + 32] for i in range(0, len(calib), 32))

        def get_next(self) -> dict | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    pre = out_path.with_name(out_path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
        )
    finally:
        pre.unlink(missing_ok=True)


def make_fp16(proto, path: Path, meta: dict[str, str]) -> None:
    """Write the float16 variant of ``proto`` (the fp32 ``onnx.ModelProto``) to ``path``, with its metadata."""
    import onnx

    half = to_fp16(proto)
    set_metadata(half, meta)
    onnx.save(half, path)


def make_int8(fp32_path: Path, path: Path, calib: np.ndarray, meta: dict[str, str]) -> None:
    """Write the static INT8 variant of the fp32 file to ``path``, with its metadata."""
    import onnx

    to_int8(fp32_path, path, calib)
    q = onnx.load(path)
    set_metadata(q, meta)
    onnx.save(q, path)
